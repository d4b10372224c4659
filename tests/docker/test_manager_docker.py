"""The spec's 沙箱池管理 example as written: a Docker-backed pool (needs a Docker engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import BackendType, ResourceUsage, SandboxManager, SandboxStatus

pytestmark = pytest.mark.docker  # also set by tests/docker/conftest.py, whose gate skips (fails under CI)


async def test_spec_pool_example_on_docker(spec_images: tuple[str, str], tmp_path: Path) -> None:
    # spec_images: the engine has the tags the spec names (python:3.11-slim is also the default image)
    manager = SandboxManager(
        base_path=str(tmp_path), default_backend=BackendType.DOCKER, max_sandboxes=100, auto_cleanup=True
    )

    await manager.start()

    # 获取或创建
    sandbox = await manager.get_or_create("task-123")

    assert sandbox.backend_type == "docker"
    assert (await sandbox.run("print('in a container')")).stdout == "in a container\n"
    other = await manager.create_docker_sandbox("second", docker_image="python:3.11-slim")
    usage_running = await manager.get_total_resource_usage()
    assert isinstance(usage_running, ResourceUsage)
    assert await manager.health_check_all() == {"task-123": True, other.sandbox_id: True}

    # 批量操作
    await manager.stop_all()
    assert sandbox.status is SandboxStatus.STOPPED
    await manager.destroy_all()
    health = await manager.health_check_all()
    assert health == {}

    # 清理空闲沙箱
    cleaned = await manager.cleanup_idle(max_idle_seconds=3600)
    assert cleaned == []

    # 获取资源使用总量
    usage = await manager.get_total_resource_usage()
    assert usage.process_count == 0

    await manager.shutdown()
    assert sandbox.status is SandboxStatus.DESTROYED
    assert other.status is SandboxStatus.DESTROYED
