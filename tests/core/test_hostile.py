"""Hostile user code: the runner (and the host) must stay healthy whatever the code does."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from alphora.sandbox import ExecutionStatus, LocalBackend, ResourceLimits


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    b = LocalBackend(
        sandbox_id="hostile",
        workspace_path=tmp_path / "ws",
        resource_limits=ResourceLimits(max_output_size=1024 * 1024),
    )
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def _runner_pid(b: LocalBackend) -> int:
    r = await b.execute_code("import os; print(os.getppid())")
    assert r.success, r
    return int(r.stdout)


async def _assert_healthy(b: LocalBackend, runner_pid: int) -> None:
    assert await b.health_check()
    r = await b.execute_code("print('still here')")
    assert r.stdout == "still here\n"
    assert await _runner_pid(b) == runner_pid, "the runner was replaced"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _wait_gone(pids: list[int], within: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        await asyncio.sleep(0.05)
    return [p for p in pids if not _gone(p)]


async def test_timed_out_calls_grandchild_daemon_is_gone(backend: LocalBackend) -> None:
    """Double fork + setsid: the daemon leaves the call's process group and session."""
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        open('daemon.pid', 'w').write(str(os.getpid()))\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "time.sleep(300)\n"
    )
    t0 = time.monotonic()
    r = await backend.execute_code(code, timeout=1.0)
    assert r.status is ExecutionStatus.TIMEOUT
    assert time.monotonic() - t0 < 2.0
    daemon = int((backend.workspace_path / "daemon.pid").read_text())
    assert await _wait_gone([daemon]) == [], f"daemon {daemon} survived the timeout"


async def test_shell_background_and_nohup_children_die_on_timeout(backend: LocalBackend) -> None:
    r = await backend.execute_shell(
        "(setsid sleep 300 & echo $! > a.pid); nohup sleep 301 > /dev/null 2>&1 & echo $! > b.pid; sleep 300",
        timeout=1.0,
    )
    assert r.status is ExecutionStatus.TIMEOUT
    pids = [int((backend.workspace_path / n).read_text()) for n in ("a.pid", "b.pid")]
    assert await _wait_gone(pids) == []


async def test_user_code_killing_its_own_process_group(backend: LocalBackend) -> None:
    runner = await _runner_pid(backend)
    r = await backend.execute_code(
        "import os, signal; print('bye', flush=True); os.killpg(os.getpgrp(), signal.SIGKILL)"
    )
    assert r.return_code == -9
    assert r.stdout == "bye\n"
    assert r.error == "killed by signal SIGKILL"
    r = await backend.execute_shell("kill -9 0")
    assert r.return_code == -9
    await _assert_healthy(backend, runner)


async def test_user_code_closing_stdout_and_stderr(backend: LocalBackend) -> None:
    runner = await _runner_pid(backend)
    r = await backend.execute_code(
        "import os, time\nprint('before', flush=True)\nos.close(1); os.close(2)\n"
        "time.sleep(0.2)\nopen('after', 'w').write('ok')"
    )
    assert r.success
    assert r.stdout == "before\n"
    assert (backend.workspace_path / "after").read_text() == "ok"
    await _assert_healthy(backend, runner)


async def test_100mb_without_newline(backend: LocalBackend) -> None:
    runner = await _runner_pid(backend)
    t0 = time.monotonic()
    r = await backend.execute_code(
        "import sys\nchunk = 'z' * (1 << 20)\nfor _ in range(100): sys.stdout.write(chunk)\n"
        "sys.stdout.flush()\nprint('end', file=sys.stderr)",
        timeout=60,
    )
    assert r.success, r.error
    assert r.stdout_truncated
    assert len(r.stdout) == 1024 * 1024
    assert set(r.stdout) == {"z"}
    assert r.stderr == "end\n"
    assert time.monotonic() - t0 < 30
    await _assert_healthy(backend, runner)


async def test_exit_segfault_and_abort(backend: LocalBackend) -> None:
    runner = await _runner_pid(backend)
    r = await backend.execute_code("import os; print('x', flush=True); os._exit(7)")
    assert (r.return_code, r.stdout) == (7, "x\n")
    r = await backend.execute_code("import ctypes; ctypes.string_at(0)")
    assert r.return_code == -11
    assert r.error == "killed by signal SIGSEGV"
    r = await backend.execute_code("import os; os.abort()")
    assert r.return_code == -6
    await _assert_healthy(backend, runner)


async def test_protocol_stream_is_unreachable_from_user_code(backend: LocalBackend) -> None:
    runner = await _runner_pid(backend)
    code = (
        "import os\n"
        "open_fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
        "print(open_fds)\n"
        "for fd in range(3, 64):\n"
        "    try: os.write(fd, b'\\x00\\x00\\x00\\x05garbage')\n"
        "    except OSError: pass\n"
    )
    r = await backend.execute_code(code)
    # 0-2 plus the one fd listdir itself opens
    assert len(eval(r.stdout)) <= 4, r.stdout
    await _assert_healthy(backend, runner)


async def test_process_storm_is_killed_on_timeout(backend: LocalBackend) -> None:
    code = (
        "import os, time\n"
        "pids = []\n"
        "for i in range(60):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        if i % 2: os.setsid()\n"
        "        time.sleep(300); os._exit(0)\n"
        "    pids.append(pid)\n"
        "open('pids', 'w').write(' '.join(map(str, pids)))\n"
        "time.sleep(300)\n"
    )
    r = await backend.execute_code(code, timeout=2)
    assert r.timed_out
    pids = [int(p) for p in (backend.workspace_path / "pids").read_text().split()]
    assert len(pids) == 60
    assert await _wait_gone(pids) == []


BOMB = """
import asyncio, json, os, site, sys
for d in sys.argv[2:]:
    site.addsitedir(d)
import psutil
from alphora.sandbox import LocalBackend, ResourceLimits

async def main(ws):
    mine = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == os.getuid())
    b = LocalBackend(sandbox_id="bomb", workspace_path=ws, resource_limits=ResourceLimits(max_processes=mine + 40))
    await b.start()
    r = await b.execute_code("import os\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        pass",
                             timeout=3)
    after = await b.execute_code("print('alive')")
    await b.stop()
    left = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == os.getuid())
    print(json.dumps({"status": r.status.value, "after": after.stdout, "left": left, "limit": mine + 40}))

asyncio.run(main(sys.argv[1]))
"""


def test_fork_bomb_is_bounded_by_nproc() -> None:
    """RLIMIT_NPROC does not bind root, so the bomb runs as an unprivileged user (nobody)."""
    import json
    import site
    import subprocess
    import sys
    import tempfile

    kwargs: dict[str, object] = {}
    python = sys.executable
    ws = tempfile.mkdtemp(prefix="alphora-bomb-")
    try:
        if os.geteuid() == 0:
            os.chown(ws, 65534, 65534)
            kwargs = {"user": 65534, "group": 65534, "extra_groups": []}
            usable = []
            for cand in (sys.executable, "/usr/bin/python3"):
                try:
                    ok = subprocess.run(
                        [
                            cand,
                            "-c",
                            "import site, sys\nfor d in sys.argv[1:]: site.addsitedir(d)\n"
                            "import psutil, alphora.sandbox",
                            *site.getsitepackages(),
                        ],
                        capture_output=True,
                        timeout=30,
                        cwd=ws,
                        **kwargs,
                    )  # type: ignore[call-overload]
                except (OSError, subprocess.SubprocessError):
                    continue
                if ok.returncode == 0:
                    usable.append(cand)
            if not usable:
                why = "no Python interpreter that the unprivileged user 'nobody' can run imports alphora"
                if os.environ.get("CI"):
                    pytest.fail(f"{why}: CI must run the fork-bomb test")
                pytest.skip(why)
            python = usable[0]
        proc = subprocess.run(
            [python, "-c", BOMB, ws, *site.getsitepackages()],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ws,
            **kwargs,
        )  # type: ignore[call-overload]
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["status"] == "timeout"
        assert out["after"] == "alive\n"
        assert out["left"] < out["limit"] - 30, out  # the bomb's processes are gone
    finally:
        import shutil

        shutil.rmtree(ws, ignore_errors=True)


async def test_signals_to_the_runner_from_user_code(backend: LocalBackend) -> None:
    runner = await _runner_pid(backend)
    r = await backend.execute_code(
        "import os, signal\nfor s in (signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, "
        "signal.SIGPIPE): os.kill(os.getppid(), s)\nprint('sent')"
    )
    assert r.stdout == "sent\n"
    await _assert_healthy(backend, runner)


async def test_stdin_is_not_the_protocol_and_blocking_read_ends(backend: LocalBackend) -> None:
    r = await backend.execute_code("import sys; data = sys.stdin.buffer.read(); print(len(data))", timeout=5)
    assert r.success
    assert r.stdout == "0\n"
    r = await backend.execute_code("input()", timeout=5)
    assert r.status is ExecutionStatus.FAILED
    assert "EOFError" in r.error


async def test_garbage_written_into_the_runners_pipes_only_costs_a_restart(backend: LocalBackend) -> None:
    """Same-user code can open the runner's pipes through /proc; the damage stays in its sandbox."""
    code = (
        "import os\n"
        "ppid = os.getppid()\n"
        "for fd in os.listdir(f'/proc/{ppid}/fd'):\n"
        "    target = os.readlink(f'/proc/{ppid}/fd/{fd}')\n"
        "    if target.startswith('pipe:'):\n"
        "        try:\n"
        "            w = os.open(f'/proc/{ppid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)\n"
        "            os.write(w, b'\\xff\\xff\\xff\\xffgarbage')\n"
        "        except OSError:\n"
        "            pass\n"
        "import time; time.sleep(0.5)\n"
    )
    await backend.execute_code(code, timeout=10)
    r = await backend.execute_code("print('recovered')")
    assert r.stdout == "recovered\n"


async def test_a_killed_spare_does_not_fail_the_next_call(backend: LocalBackend) -> None:
    """The runner keeps one pre-forked child; user code can find and kill it."""
    for _ in range(3):
        code = (
            "import os, signal\n"
            "me, parent = os.getpid(), os.getppid()\n"
            "for pid in os.listdir('/proc'):\n"
            "    if pid.isdigit() and int(pid) != me:\n"
            "        try:\n"
            "            fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
            "        except OSError:\n"
            "            continue\n"
            "        if int(fields[1]) == parent:\n"
            "            os.kill(int(pid), signal.SIGKILL)\n"
        )
        await backend.execute_code(code)
        r = await backend.execute_code("print('ok')")
        assert r.stdout == "ok\n"


async def test_a_spare_killed_after_its_job_was_written_does_not_fail_that_call(backend: LocalBackend) -> None:
    """The race behind a flaky run of the test above, made certain: a process left behind by one
    call stops the runner's next spare (so it cannot read), the next call's job is written into
    its pipe, and then the spare is killed, before it ever read the job. The runner sees the job's
    bytes still in the pipe and runs the job in a fresh child; nothing of it had run, so running it
    is safe (and it runs once)."""
    stop_next_spare_then_kill_it = (
        "import os, signal, time\n"
        "runner, me = os.getppid(), os.getpid()\n"
        "if os.fork() == 0:\n"  # stays behind (background processes are kept by default)
        "    os.setsid()\n"
        "    spare, deadline = None, time.time() + 20\n"
        "    while spare is None and time.time() < deadline:\n"
        "        for pid in os.listdir('/proc'):\n"
        "            if not pid.isdigit() or int(pid) in (me, os.getpid()):\n"  # the runner reaps us: its child too
        "                continue\n"
        "            try:\n"
        "                fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
        "            except OSError:\n"
        "                continue\n"
        "            if int(fields[1]) == runner:\n"
        "                spare = int(pid)\n"
        "        time.sleep(0.01)\n"
        "    if spare is not None:\n"
        "        os.kill(spare, signal.SIGSTOP)\n"
        "        open('spare-stopped', 'w').close()\n"
        "        time.sleep(1.0)\n"
        "        os.kill(spare, signal.SIGKILL)\n"
        "    os._exit(0)\n"
    )
    for _ in range(3):  # let the runner finish its preload, which replaces the spare once at the end
        assert (await backend.execute_code("pass")).success
        await asyncio.sleep(0.3)
    assert (await backend.execute_code(stop_next_spare_then_kill_it)).success
    marker = backend.workspace_path / "spare-stopped"
    for _ in range(200):
        if marker.exists():
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the runner made no spare to stop within 10 s")
    r = await backend.execute_code("print('ok')", timeout=20)
    assert r.stdout == "ok\n", r
    assert r.success, r
