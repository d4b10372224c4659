"""The spec's (README.zh) examples, copied verbatim, for the local backend.

Each block between "# --- verbatim" and "# --- end" is the spec's code exactly; the lines around
it only provide what the spec leaves implicit (a running sandbox, files that must exist).
Run: python examples/spec_examples.py
"""

import asyncio
import shutil
import tempfile

from alphora.sandbox import ResourceLimits, Sandbox

BASE = tempfile.mkdtemp(prefix="alphora-spec-")


async def quick_start():
    print("## 快速开始")
    # --- verbatim
    from alphora.sandbox import Sandbox

    # 创建并使用沙箱
    async with Sandbox.create_local() as sandbox:
        result = await sandbox.run("print('Hello, World!')")
        print(result.stdout)  # Hello, World!
    # --- end
    await sandbox.destroy()


async def create_sandbox():
    print("## 创建沙箱")
    # --- verbatim
    from alphora.sandbox import Sandbox

    # 方式 1：上下文管理器（推荐）
    async with Sandbox.create_local() as sandbox:
        result = await sandbox.run("print(1 + 1)")
        print(result.stdout)  # 2

    # 方式 2：手动管理生命周期
    sandbox = Sandbox.create_local()
    await sandbox.start()

    result = await sandbox.run("print('Hello')")
    print(result.stdout)

    await sandbox.stop()
    # --- end
    await sandbox.destroy()
    # 工厂方法 (local)
    # --- verbatim
    sandbox = Sandbox.create_local(
        base_path="/data/sandboxes" if False else BASE,
        resource_limits=ResourceLimits(timeout_seconds=60)
    )
    # --- end
    print("create_local with base_path:", sandbox.workspace_path.parent == __import__("pathlib").Path(BASE))


async def execution(sandbox):
    print("## 执行结果 / 代码执行")
    # --- verbatim
    result = await sandbox.run("print('Hello')")

    # 检查结果
    if result.success:
        print(result.stdout)       # 标准输出
        print(result.execution_time)  # 执行时间（秒）
    else:
        print(result.stderr)       # 标准错误
        print(result.error)        # 错误信息
        print(result.return_code)  # 返回码
    # --- end
    # --- verbatim
    # 简单执行
    result = await sandbox.run("print(1 + 1)")

    # 带超时
    result = await sandbox.execute_code(
        code="import time; time.sleep(5); print('done')",
        timeout=10
    )

    # 多行代码
    code = """
import json
data = {"name": "Alice", "age": 30}
print(json.dumps(data, indent=2))
"""
    result = await sandbox.execute_code(code)
    # --- end
    print(result.stdout)
    # --- verbatim
    # 保存文件
    await sandbox.write_file("script.py", """
import sys
print(f"Args: {sys.argv[1:]}")
print("Hello from file!")
""")

    # 执行文件
    result = await sandbox.execute_file(
        "script.py",
        args=["arg1", "arg2"],
        timeout=30
    )
    print(result.stdout)
    # Args: ['arg1', 'arg2']
    # Hello from file!
    # --- end
    # --- verbatim
    # 执行 Shell 命令
    result = await sandbox.execute_shell("ls -la")
    print(result.stdout)

    # 管道命令
    result = await sandbox.execute_shell("echo 'Hello' | tr '[:lower:]' '[:upper:]'")
    print(result.stdout)  # HELLO
    # --- end


async def files(sandbox):
    print("## 文件操作")
    image_bytes = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 32  # what the spec leaves implicit
    # --- verbatim
    # 写入文本文件
    await sandbox.write_file("data.txt", "Hello, World!")

    # 读取文件
    content = await sandbox.read_file("data.txt")
    print(content)  # Hello, World!

    # 写入二进制文件
    await sandbox.write_file_bytes("image.png", image_bytes)

    # 读取二进制文件
    data = await sandbox.read_file_bytes("image.png")

    # 保存文件并获取信息
    file_info = await sandbox.save_file("config.json", '{"key": "value"}')
    print(file_info.size)  # 文件大小
    print(file_info.file_type)  # FileType.JSON
    # --- end
    print("image round trip:", data == image_bytes, repr(file_info.file_type))
    await sandbox.write_file("source.txt", "src")
    await sandbox.write_file("old.txt", "old")
    await sandbox.write_file_bytes("report.pdf", b"%PDF-1.4 fake")
    await sandbox.write_file("src/main.py", "print('main')")
    # --- verbatim
    # 检查文件存在
    exists = await sandbox.file_exists("data.txt")

    # 删除文件
    deleted = await sandbox.delete_file("data.txt")

    # 复制文件
    await sandbox.copy_file("source.txt", "dest.txt")

    # 移动文件
    await sandbox.move_file("old.txt", "new.txt")

    # 下载文件（获取字节）
    data = await sandbox.download_file("report.pdf")
    # --- end
    print("exists:", exists, "deleted:", deleted, "now exists:", await sandbox.file_exists("data.txt"),
          "dest:", await sandbox.read_file("dest.txt"), "new:", await sandbox.read_file("new.txt"),
          "old gone:", not await sandbox.file_exists("old.txt"), "pdf:", data[:8])
    # --- verbatim
    # 列出当前目录
    files = await sandbox.list_files()
    for f in files:
        print(f"{f.name}: {f.size_human}")

    # 列出指定目录
    files = await sandbox.list_files("src/")

    # 递归列出
    files = await sandbox.list_files("", recursive=True)

    # 按模式过滤
    files = await sandbox.list_files("", pattern="*.py")
    # --- end
    print("*.py:", [f.path for f in files])


async def main():
    try:
        await quick_start()
        await create_sandbox()
        async with Sandbox.create_local(base_path=BASE) as sandbox:
            await execution(sandbox)
            await files(sandbox)
            await sandbox.destroy()
    finally:
        shutil.rmtree(BASE, ignore_errors=True)  # the temporary base_path above: leave nothing in /tmp


if __name__ == "__main__":
    asyncio.run(main())
