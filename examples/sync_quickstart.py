"""The sync API: the spec's examples without async/await, for scripts and sync agent frameworks.

Run: python examples/sync_quickstart.py
"""

from concurrent.futures import ThreadPoolExecutor

from alphora.sandbox.sync import Sandbox, SandboxManager, SandboxTools

# 创建并使用沙箱 (the spec's quick start, sync)
with Sandbox.create_local() as sandbox:
    result = sandbox.run("print('Hello, World!')")
    print(result.stdout)  # Hello, World!

    # files, shell, streaming and a stateful session work the same way
    sandbox.write_file("data.txt", "Hello, file!")
    print(sandbox.read_file("data.txt"))
    print(sandbox.execute_shell("echo 'Hello' | tr '[:lower:]' '[:upper:]'").stdout, end="")
    for item in sandbox.stream("for i in range(3): print(i)"):
        print("streamed:", item)
    with sandbox.session() as py:
        py.run("x = 41")
        print("session value:", py.run("x + 1").value)  # 42

    # the agent tools, as a sync framework's tool functions would call them
    tools = SandboxTools(sandbox)
    print(tools.run_python_code("print(1 + 1)"))  # {'success': True, 'output': '2\n', ...}

# 多沙箱管理: several sandboxes, used from plain threads at once
with SandboxManager() as manager:
    workers = [manager.create_sandbox(f"worker-{i}") for i in range(3)]
    with ThreadPoolExecutor(len(workers)) as pool:
        outputs = list(pool.map(lambda s: s.run(f"print('hi from {s.name}')").stdout.strip(), workers))
    print(outputs)
    print([s.name for s in manager.list_sandboxes()])
# leaving the with blocks destroyed every sandbox; the sync API's loop thread has ended too
