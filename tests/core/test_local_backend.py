"""LocalBackend on the runner: the spec's direct use, process hygiene, limits, streaming, files."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from alphora.sandbox import (
    ExecutionResult,
    ExecutionStatus,
    ExecutionTimeoutError,
    FileSystemError,
    LocalBackend,
    OutputChunk,
    PathTraversalError,
    ProcessRequest,
    ResourceLimits,
)
from alphora.sandbox import FileNotFoundError as SandboxFileNotFoundError


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    b = LocalBackend(sandbox_id="t", workspace_path=tmp_path / "ws")
    await b.initialize()
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _wait_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        await asyncio.sleep(0.05)
    return _gone(pid)


async def test_spec_example_direct_use(tmp_path: Path) -> None:
    backend = LocalBackend(sandbox_id="test", workspace_path=str(tmp_path / "sandbox" / "test"))
    await backend.initialize()
    await backend.start()
    result = await backend.execute_code("print('Hello')")
    await backend.stop()
    assert result.success
    assert result.stdout == "Hello\n"
    assert (tmp_path / "sandbox" / "test").is_dir()


async def test_fresh_process_per_call_no_state_leaks(backend: LocalBackend) -> None:
    r1 = await backend.execute_code(
        "import sys, os; x = 1; sys.modules['leak'] = 1; os.environ['LEAK'] = '1'; print(os.getpid())"
    )
    r2 = await backend.execute_code(
        "import sys, os; print('x' in globals(), 'leak' in sys.modules, 'LEAK' in os.environ, os.getpid())"
    )
    assert r1.success, r1
    assert r2.success, r2
    flags = r2.stdout.split()
    assert flags[:3] == ["False", "False", "False"]
    assert flags[3] != r1.stdout.strip()


async def test_python_semantics_match_python_c(backend: LocalBackend) -> None:
    code = "import sys; print(__name__, sys.argv, repr(sys.path[0]), sys.stdin.read() == '')"
    r = await backend.execute_code(code)
    assert r.stdout == "__main__ ['-c'] '' True\n"
    r = await backend.execute_code("import sys; sys.exit(3)")
    assert (r.status, r.return_code) == (ExecutionStatus.FAILED, 3)
    r = await backend.execute_code("1/0")
    assert r.return_code == 1
    assert r.error == "ZeroDivisionError: division by zero"
    assert 'File "<string>", line 1' in r.stderr
    assert "alphora" not in r.stderr
    r = await backend.execute_code("import sys; sys.exit('bye')")
    assert r.return_code == 1
    assert r.stderr == "bye\n"
    r = await backend.execute_code("import atexit; atexit.register(print, 'at exit')\nprint('body')")
    assert r.stdout == "body\nat exit\n"
    r = await backend.execute_code(
        "import threading, time\n"
        "def late(): time.sleep(0.2); print('thread done', flush=True)\n"
        "threading.Thread(target=late).start()\n"
    )
    assert r.stdout == "thread done\n"


async def test_file_shell_argv(backend: LocalBackend) -> None:
    await backend.write_bytes("script.py", b"import sys\nprint(f'Args: {sys.argv[1:]}')\nprint('Hello from file!')\n")
    r = await backend.execute_file("script.py", ["arg1", "arg2"])
    assert r.stdout == "Args: ['arg1', 'arg2']\nHello from file!\n"
    r = await backend.execute_file("missing.py")
    assert r.return_code == 2
    assert "can't open file" in r.stderr
    r = await backend.execute_shell("echo 'Hello' | tr '[:lower:]' '[:upper:]'")
    assert r.stdout == "HELLO\n"
    r = await backend.execute_shell("exit 4")
    assert r.return_code == 4
    assert r.error == "exit code 4"
    r = await backend.execute_argv(["printf", "%s|", "a b", "c"])
    assert r.stdout == "a b|c|"
    r = await backend.execute_argv(["no-such-program-xyz"])
    assert r.return_code == 127
    r = await backend.run(ProcessRequest(kind="python", code="print(input()[::-1])", stdin=b"olleh\n"))
    assert r.stdout == "hello\n"
    r = await backend.run(ProcessRequest(kind="shell", code="pwd", cwd="sub/dir"))
    assert r.return_code != 0  # cwd must exist
    await backend.mkdir("sub/dir")
    r = await backend.run(ProcessRequest(kind="shell", code="pwd", cwd="sub/dir"))
    assert r.stdout.strip() == str(backend.workspace_path / "sub" / "dir")


async def test_host_environment_is_not_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H1_HOST_SECRET", "do-not-leak")
    b = LocalBackend(sandbox_id="env", workspace_path=tmp_path / "ws")
    await b.start()
    try:
        r = await b.execute_code("import os, json; print(json.dumps(dict(os.environ)))", env={"GIVEN": "yes"})
        import json

        env = json.loads(r.stdout)
        assert "H1_HOST_SECRET" not in env
        assert env["GIVEN"] == "yes"
        assert env["HOME"] == str(b.workspace_path)
        assert env["TMPDIR"].startswith(str(b.workspace_path))
        assert env["LANG"] == "C.UTF-8"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert set(env) <= {
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "TMPDIR",
            "PYTHONUNBUFFERED",
            "GIVEN",
            "VIRTUAL_ENV",
            "MPLBACKEND",
        }
        r = await b.execute_shell("cat /proc/$PPID/environ | tr '\\0' '\\n'; env")
        assert "do-not-leak" not in r.stdout
        r = await b.execute_code("import tempfile; print(tempfile.mkdtemp())")
        assert r.stdout.startswith(str(b.workspace_path))
    finally:
        await b.stop()


async def test_timeout_is_a_result_keeps_output_and_kills_children(backend: LocalBackend) -> None:
    code = (
        "import subprocess, time\np = subprocess.Popen(['sleep', '300'])\nprint(p.pid, flush=True)\ntime.sleep(300)\n"
    )
    t0 = time.monotonic()
    r = await backend.execute_code(code, timeout=1)
    elapsed = time.monotonic() - t0
    assert r.status is ExecutionStatus.TIMEOUT
    assert r.timed_out
    assert elapsed < 1 + 1.0, elapsed
    sleep_pid = int(r.stdout.split()[0])
    assert await _wait_gone(sleep_pid), "the sleep 300 child survived the timeout"
    with pytest.raises(ExecutionTimeoutError):
        r.raise_for_status()
    assert (await backend.execute_code("print('alive')")).stdout == "alive\n"


async def test_output_cap_while_streaming(tmp_path: Path) -> None:
    b = LocalBackend(
        sandbox_id="cap", workspace_path=tmp_path / "ws", resource_limits=ResourceLimits(max_output_size=1000)
    )
    await b.start()
    try:
        chunks: list[OutputChunk] = []
        r = await b.execute_code(
            "import sys\nfor i in range(10000): print(i)\nprint('e' * 5000, file=sys.stderr)", on_output=chunks.append
        )
        assert r.success
        assert r.stdout_truncated
        assert r.stderr_truncated
        assert len(r.stdout.encode()) == 1000
        assert len(r.stderr.encode()) == 1000
        assert r.stdout.startswith("0\n1\n2\n")
        assert sum(len(c.text) for c in chunks) == 2000
    finally:
        await b.stop()


async def test_50mb_stdout_keeps_host_memory_flat(tmp_path: Path) -> None:
    b = LocalBackend(
        sandbox_id="big", workspace_path=tmp_path / "ws", resource_limits=ResourceLimits(max_output_size=1024 * 1024)
    )
    await b.start()
    try:
        await b.execute_code("print(1)")
        gc.collect()
        me = psutil.Process()
        before = me.memory_info().rss
        r = await b.execute_code(
            "import sys\nline = 'y' * 1023 + '\\n'\nfor _ in range(50 * 1024): sys.stdout.write(line)"
        )
        gc.collect()
        delta = me.memory_info().rss - before
        assert r.success
        assert r.stdout_truncated
        assert len(r.stdout) == 1024 * 1024
        print(f"host RSS delta after 50 MB of stdout: {delta / 2**20:.1f} MiB")
        assert delta < 30 * 2**20, f"host RSS grew by {delta / 2**20:.1f} MiB"
    finally:
        await b.stop()


async def test_non_utf8_and_split_multibyte_output(backend: LocalBackend) -> None:
    r = await backend.execute_shell("printf 'a\\377\\376b\\n'")
    assert r.stdout == "a\ufffd\ufffdb\n"
    chunks: list[OutputChunk] = []
    code = (
        "import os, time\n"
        "data = 'é€😀'.encode() * 3\n"
        "for i in range(len(data)):\n"
        "    os.write(1, data[i:i+1]); time.sleep(0.002)\n"
    )
    r = await backend.execute_code(code, on_output=chunks.append)
    assert r.stdout == "é€😀" * 3
    assert len(chunks) > 1
    assert all("\ufffd" not in c.text for c in chunks)


async def test_rlimits_memory_file_size_open_files(tmp_path: Path) -> None:
    limits = ResourceLimits(memory_mb=256, disk_mb=1, max_open_files=64)
    b = LocalBackend(sandbox_id="lim", workspace_path=tmp_path / "ws", resource_limits=limits)
    await b.start()
    try:
        r = await b.execute_code("x = bytearray(1024 * 1024 * 1024)")
        assert r.status is ExecutionStatus.FAILED
        assert r.oom_killed
        assert "MemoryError" in r.error
        r = await b.execute_code("open('big.bin', 'wb').write(b'x' * 2 * 1024 * 1024)")
        assert r.status is ExecutionStatus.FAILED
        assert "File too large" in r.stderr
        r = await b.execute_code("fs = [open('f%d' % i, 'w') for i in range(100)]")
        assert r.status is ExecutionStatus.FAILED
        assert "Too many open files" in r.stderr
        r = await b.execute_code("import resource; print(resource.getrlimit(resource.RLIMIT_NPROC))")
        assert r.stdout.strip() == f"({limits.max_processes}, {limits.max_processes})"
    finally:
        await b.stop()


async def test_concurrent_calls_are_multiplexed(backend: LocalBackend) -> None:
    code = "import time, sys\nfor j in range(3):\n    print(f'{n}-{j}', flush=True); time.sleep(0.05)"
    t0 = time.monotonic()
    results = await asyncio.gather(*(backend.execute_code(code.replace("{n}", str(i))) for i in range(8)))
    assert time.monotonic() - t0 < 8 * 0.15
    for i, r in enumerate(results):
        assert r.stdout == "".join(f"{i}-{j}\n" for j in range(3))


async def test_streaming_callback_sync_async_and_iterator(backend: LocalBackend) -> None:
    arrivals: list[tuple[float, OutputChunk]] = []
    code = "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second', flush=True)"

    async def on_output(chunk: OutputChunk) -> None:
        arrivals.append((time.monotonic(), chunk))

    r = await backend.execute_code(code, on_output=on_output)
    done = time.monotonic()
    assert "".join(c.text for _, c in arrivals) == "first\nsecond\n"
    first_seen = next(t for t, c in arrivals if "first" in c.text)
    assert done - first_seen > 0.8  # the first chunk came while the code still ran
    assert r.stdout == "first\nsecond\n"

    items = [item async for item in backend.stream(ProcessRequest(kind="shell", code="echo a; echo b >&2"))]
    assert isinstance(items[-1], ExecutionResult)
    assert items[-1].success
    chunks = [i for i in items[:-1] if isinstance(i, OutputChunk)]
    assert {(c.stream, c.text) for c in chunks} == {("stdout", "a\n"), ("stderr", "b\n")}


async def test_cancelling_a_call_kills_it(backend: LocalBackend) -> None:
    task = asyncio.ensure_future(
        backend.execute_code("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(300)")
    )
    for _ in range(100):
        await asyncio.sleep(0.05)
        if (backend.workspace_path / "pid").exists() and (backend.workspace_path / "pid").read_text():
            break
    pid = int((backend.workspace_path / "pid").read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_gone(pid)


async def test_files_round_trip_and_guards(backend: LocalBackend, tmp_path: Path) -> None:
    await backend.write_bytes("d/a.txt", b"hello")
    assert await backend.read_bytes("d/a.txt") == b"hello"
    info = await backend.stat("d/a.txt")
    assert info is not None
    assert info.size == 5
    assert not info.is_directory
    assert info.permissions.startswith("-rw")
    assert await backend.stat("nope") is None
    await backend.copy("d/a.txt", "e/b.txt")
    await backend.move("e/b.txt", "e/c.txt")
    await backend.mkdir("m/n")
    names = sorted(
        f.path for f in await backend.list_dir("", recursive=True) if f.path.split("/")[0] not in backend.internal_paths
    )
    assert names == ["d", "d/a.txt", "e", "e/c.txt", "m", "m/n"]
    big = os.urandom(3 * 1024 * 1024)
    await backend.write_bytes("big.bin", big)
    assert await backend.read_bytes("big.bin") == big
    assert await backend.remove("d") is True
    assert await backend.remove("d") is False

    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, backend.workspace_path / "link")
    os.symlink(tmp_path, backend.workspace_path / "dirlink")
    os.link(outside, backend.workspace_path / "hard")
    for path in ("link", "dirlink/outside.txt", "hard"):
        with pytest.raises(PathTraversalError) as ei:
            await backend.read_bytes(path)
        assert ei.value.path == path
    with pytest.raises(PathTraversalError):
        await backend.write_bytes("dirlink/new.txt", b"x")
    assert not (tmp_path / "new.txt").exists()
    with pytest.raises(SandboxFileNotFoundError) as nf:
        await backend.read_bytes("missing.txt")
    assert isinstance(nf.value, FileNotFoundError)
    with pytest.raises(FileSystemError):
        await backend.read_bytes("m")
    assert await backend.remove("dirlink") is True
    assert os.path.isdir(tmp_path)
    assert outside.read_text() == "secret"


async def test_resource_usage_and_health(backend: LocalBackend) -> None:
    await backend.write_bytes("blob", b"x" * 2 * 1024 * 1024)
    task = asyncio.ensure_future(backend.execute_code("import time; time.sleep(2)"))
    await asyncio.sleep(0.3)
    usage = await backend.get_resource_usage()
    assert usage.process_count >= 2
    assert usage.memory_mb > 1
    assert usage.disk_mb >= 2
    await task
    assert await backend.health_check()
    await backend.stop()
    assert not await backend.health_check()


async def test_runner_killed_by_user_code_is_restarted(backend: LocalBackend) -> None:
    r = await backend.execute_code("import os; print(os.getppid())")
    runner_pid = int(r.stdout)
    r = await backend.execute_code("import os, signal; os.kill(os.getppid(), signal.SIGKILL)")
    assert r.status is ExecutionStatus.FAILED
    assert "runner died" in r.error
    r = await backend.execute_code("import os; print(os.getppid())")
    assert r.success
    assert int(r.stdout) != runner_pid


async def test_stop_kills_background_processes(backend: LocalBackend) -> None:
    r = await backend.execute_shell("sleep 300 > /dev/null 2>&1 & echo $!")
    pid = int(r.stdout)
    assert psutil.pid_exists(pid)
    assert not _gone(pid)
    await backend.stop()
    assert await _wait_gone(pid)


async def test_the_sandbox_runs_on_its_own_venv_made_from_the_base_interpreter(backend: LocalBackend) -> None:
    import sys

    from alphora.sandbox.builtin._python_env import base_interpreter

    host_prefix = sys.prefix
    venv = backend.workspace_path / ".venv"
    # created when the sandbox started, from the base interpreter (not the test runner's venv)
    assert (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = false") == 1
    assert os.path.realpath(venv / "bin" / "python") == os.path.realpath(base_interpreter())
    probe = "import sys; print(sys.prefix, sys.executable)"
    r = await backend.execute_code(probe)
    assert r.stdout.split() == [str(venv), str(venv / "bin" / "python")], r.stderr
    # python3 in a shell command and sys.executable in a subprocess are the same environment
    r = await backend.execute_shell(f"python3 -c '{probe}'")
    assert r.stdout.split() == [str(venv), str(venv / "bin" / "python3")], r.stderr
    prefix, env = await backend.pip_command()
    assert prefix[0] == str(venv / "bin" / "python")
    r = await backend.execute_argv([*prefix, "--version"], env=env)
    assert r.success, r.stderr
    assert r.stdout.startswith("pip ")
    r = await backend.execute_argv([*prefix, "list", "--format=freeze"], env=env)
    assert r.success, r.stderr
    assert r.stdout == "", "pip sees packages that are not in the sandbox's venv"
    assert sys.prefix == host_prefix
    # a second backend on the same workspace starts on the same venv
    inode = (venv / "pyvenv.cfg").stat().st_ino
    b2 = LocalBackend(sandbox_id="t2", workspace_path=backend.workspace_path)
    await b2.start()
    try:
        assert (await b2.execute_code("import sys; print(sys.prefix)")).stdout.strip() == str(venv)
        assert (venv / "pyvenv.cfg").stat().st_ino == inode
    finally:
        await b2.stop()


async def test_restart_after_stop(backend: LocalBackend) -> None:
    await backend.stop()
    await backend.start()
    assert (await backend.execute_code("print(2)")).stdout == "2\n"


async def test_user_site_created_after_start_is_importable(tmp_path: Path) -> None:
    """A forked call sees a ``pip install --user`` site created after the runner started exactly
    when a fresh interpreter would. The local backend runs on the sandbox's venv, where user sites
    are off, so neither sees it here; on Docker (user sites on) tests/docker/test_docker_packages.py's
    install test imports a package pip put into a user site created after the runner started."""
    import subprocess
    import sys as _sys

    from alphora.sandbox.builtin.local_backend import LocalBackend

    # another interpreter than the test runner's, as a user may configure one
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else _sys.executable
    backend = LocalBackend(sandbox_id="usersite", workspace_path=tmp_path / "ws", python=python)
    await backend.initialize()
    await backend.start()
    try:
        ver = subprocess.run(
            [python, "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        await backend.write_bytes(f"ub/lib/{ver}/site-packages/late_pkg.py", b"X = 'late'\n")
        ub = str(backend.workspace_path / "ub")
        probe = "import importlib.util; print(importlib.util.find_spec('late_pkg') is not None)"
        fresh = subprocess.run(
            [backend.python, "-c", probe],
            env={"PYTHONUSERBASE": ub, "HOME": ub},
            capture_output=True,
            text=True,
            timeout=60,
        )
        r = await backend.execute_code(probe, env={"PYTHONUSERBASE": ub})
        assert r.stdout == fresh.stdout == "False\n", (r.stdout, fresh.stdout, r.stderr)
    finally:
        await backend.destroy()
