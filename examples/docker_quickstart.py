"""The spec's Docker examples, runnable: a hardened container per sandbox.

Needs a Docker engine and an image with python3 3.8+ under the tag used below (python:3.11-slim:
`docker pull` it where a registry answers; CI tags a plain Debian stand-in; see docs/images.md)
Run: python examples/docker_quickstart.py
"""

import asyncio

from alphora.sandbox import DockerBackend, ResourceLimits, Sandbox, SandboxConfig, is_docker_available


async def main() -> None:
    # 执行后端 / Docker 后端
    if not is_docker_available():
        print("no Docker engine answers; start dockerd (or run .ci/docker-setup.sh)")
        return
    sandbox = Sandbox.create_docker(
        docker_image="python:3.11-slim"
    )
    async with sandbox:
        result = await sandbox.run("import sys; print(sys.version)")
        print("python in the container:", result.stdout.strip())
        backend = sandbox.backend
        assert isinstance(backend, DockerBackend)
        print("container:", backend.container_name, "network:", backend.network_enabled)

        # 代码执行 / 文件操作 inside the container
        await sandbox.write_file("script.py", 'import sys\nprint(f"Args: {sys.argv[1:]}")\nprint("Hello from file!")\n')
        result = await sandbox.execute_file("script.py", args=["arg1", "arg2"], timeout=30)
        print(result.stdout, end="")
        result = await sandbox.execute_shell("echo 'Hello' | tr '[:lower:]' '[:upper:]'")
        print(result.stdout, end="")  # HELLO
        result = await sandbox.run("open('made_in_container.txt', 'w').write('hi from uid ' + str(__import__('os').getuid()))")
        print(await sandbox.read_file("made_in_container.txt"))
        files = await sandbox.list_files()
        for f in files:
            print(f"  {f.name}: {f.size_human}")
        usage = await sandbox.get_resource_usage()
        print(f"memory {usage.memory_mb:.1f} MB ({usage.memory_percent:.1f}% of the limit), {usage.process_count} processes")
    await sandbox.destroy()  # container and volumes gone

    # 资源限制: limits map to the container's cgroups
    limits = ResourceLimits(timeout_seconds=60, memory_mb=512, cpu_cores=1.0, max_processes=10, network_enabled=False)
    sandbox = Sandbox.create_docker(resource_limits=limits)
    async with sandbox:
        result = await sandbox.run("print(open('/sys/fs/cgroup/pids/pids.max').read().strip())")
        print("pids limit in the container:", result.stdout.strip() or result.stderr.strip())
    await sandbox.destroy()

    # 配置管理: SandboxConfig.docker(...) -> from_config
    config = SandboxConfig.docker(image="python:3.11-slim", network_enabled=True)
    sandbox = Sandbox.from_config(config)
    async with sandbox:
        result = await sandbox.run("import os; print(sorted(os.listdir('/sys/class/net')))")
        print("network interfaces with the network enabled:", result.stdout.strip())
    await sandbox.destroy()


if __name__ == "__main__":
    asyncio.run(main())
