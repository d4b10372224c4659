"""SandboxManager: the spec's two examples (local backend; set BACKEND=docker for the pool on Docker).

Run: python examples/manager_example.py
"""

import asyncio
import os
import shutil
import tempfile

from alphora.sandbox import BackendType, SandboxManager

BASE = tempfile.mkdtemp(prefix="alphora-manager-")


async def basic() -> None:
    async with SandboxManager(base_path=BASE) as manager:
        # 创建沙箱
        sandbox1 = await manager.create_sandbox("worker-1")
        sandbox2 = await manager.create_sandbox("worker-2")

        # 并行执行
        results = await asyncio.gather(
            sandbox1.run("print('worker 1')"),
            sandbox2.run("print('worker 2')")
        )

        # 列出沙箱
        sandboxes = manager.list_sandboxes()

        # 获取指定沙箱
        sandbox = manager.get_sandbox("worker-1")

        # 销毁沙箱
        await manager.destroy_sandbox("worker-1")

        print([r.stdout.strip() for r in results], [s.name for s in sandboxes], sandbox.status)


async def pool() -> None:
    backend = BackendType.DOCKER if os.environ.get("BACKEND") == "docker" else BackendType.LOCAL
    manager = SandboxManager(
        base_path=BASE,
        default_backend=backend,
        max_sandboxes=100,
        auto_cleanup=True
    )

    await manager.start()

    # 获取或创建
    sandbox = await manager.get_or_create("task-123")
    print((await sandbox.run("print('task 123')")).stdout.strip())

    health = await manager.health_check_all()
    usage = await manager.get_total_resource_usage()
    print("health:", health, "usage:", usage.to_dict())
    print("status:", {k: v for k, v in (await manager.get_status()).items() if k != "sandboxes"})

    # 批量操作
    await manager.stop_all()
    await manager.destroy_all()

    # 清理空闲沙箱
    cleaned = await manager.cleanup_idle(max_idle_seconds=3600)
    print("cleaned:", cleaned)

    await manager.shutdown()


async def main() -> None:
    try:
        await basic()
        await pool()
    finally:
        shutil.rmtree(BASE, ignore_errors=True)  # the temporary base_path: leave nothing in /tmp


if __name__ == "__main__":
    asyncio.run(main())
