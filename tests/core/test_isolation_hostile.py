"""Hostile code against the local and isolated tiers, as the host sees it (issue 9, holes 1–3).

* the host uid of isolated sandbox code is not root (found from the host side with psutil);
* /proc/sys is not writable from sandbox code (a write-back of the *current* core_pattern);
* a secret next to the agent's script and one in the agent's cwd are unreadable;
* a real fork bomb whose first process exits is held by the sandbox's pids cgroup (never more
  tasks than pids.max), and destroy() leaves no process behind.

Every fork bomb runs inside a capped pids cgroup this file makes around the whole test (the
``guard`` fixture), so even if the product's cgroup failed the host would stay safe; the guard's
own ``pids.events`` then proves it was the product's cgroup, not the guard, that held the bomb.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from alphora.sandbox import ResourceLimits, Sandbox
from alphora.sandbox.builtin._cgroup import pids_cgroup_parent
from alphora.sandbox.builtin._host_uid import UidLease
from alphora.sandbox.builtin.isolated_backend import IsolatedLocalBackend, bwrap_available
from tests._support.pids_guard import guard_processes, pids_guard_fixture

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the host-root holes exist only when the host process is root")
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap (bwrap) is not installed")
guard = pids_guard_fixture  # the fixture, under the name tests ask for
BOMB = "import os\nwhile True:\n    os.fork()\n"  # the first process dies on EAGAIN; its forks keep forking


# -- hole 2: sandbox code as host root -----------------------------------------------------------


@needs_bwrap
@needs_root
async def test_isolated_code_runs_as_an_unprivileged_host_uid_per_sandbox(tmp_path: Path) -> None:
    """From the host side: the processes of sandbox code have a non-root host uid, a different one
    for each live sandbox (inside, bwrap's namespace shows uid 1000 either way)."""
    a = Sandbox.create("isolated", base_path=tmp_path / "a")
    b = Sandbox.create("isolated", base_path=tmp_path / "b")
    async with a, b:
        uids = []
        for sandbox in (a, b):
            marker = f"{secrets.randbelow(10**6) + 10**6}.25"
            call = asyncio.ensure_future(sandbox.execute_shell(f"sleep {marker}", timeout=30))
            try:
                found: set[int] = set()
                for _ in range(200):
                    found = {
                        p.info["uids"].real
                        for p in psutil.process_iter(["cmdline", "uids"])
                        if (p.info["cmdline"] or [])[-1:] == [marker]
                    }
                    if found:
                        break
                    await asyncio.sleep(0.02)
            finally:
                call.cancel()
            assert found, "the sandbox's sleep process was not found from the host"
            assert 0 not in found, f"sandbox code runs as host root: {found}"
            backend = sandbox.backend
            assert isinstance(backend, IsolatedLocalBackend)
            assert found == {backend.host_uid}
            uids.append(backend.host_uid)
        assert uids[0] != uids[1], "two live sandboxes share a host uid"
        # the workspace is the sandbox's: files written through the API are writable by its code
        await a.write_file("notes.txt", "from the host\n")
        r = await a.run("open('notes.txt', 'a').write('from the sandbox\\n'); print(open('notes.txt').read(), end='')")
        assert r.stdout == "from the host\nfrom the sandbox\n", r
        assert (tmp_path / "a").stat().st_uid == 0  # the base path stays the host's


@needs_bwrap
async def test_proc_sys_write_back_is_refused(tmp_path: Path) -> None:
    """Writing the *current* value back (harmless if it succeeded) must fail: /proc/sys is read-only."""
    async with Sandbox.create("isolated", base_path=tmp_path) as sandbox:
        r = await sandbox.run(
            "path = '/proc/sys/kernel/core_pattern'\nvalue = open(path).read()\n"
            "try:\n    open(path, 'w').write(value)\n    print('WRITTEN')\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
        )
        assert r.stdout.startswith("refused"), r
    assert Path("/proc/sys/kernel/core_pattern").read_text()  # unchanged and readable on the host


# -- hole 1: the agent's own files ---------------------------------------------------------------

AGENT = """
import asyncio, sys
from alphora.sandbox import Sandbox

async def main():
    async with Sandbox.create("isolated", base_path=sys.argv[1]) as sandbox:
        r = await sandbox.run(
            "for p in " + repr(sys.argv[2:]) + ":\\n"
            "    try:\\n        print(p, 'READ', open(p).read().strip())\\n"
            "    except OSError as e:\\n        print(p, 'refused', type(e).__name__)\\n")
        print(r.stdout, r.stderr, end="")

asyncio.run(main())
"""


@needs_bwrap
def test_secret_next_to_agent_script_and_in_cwd_is_unreadable(tmp_path: Path) -> None:
    """An agent at <dir>/agent.py with <dir>/.env, started from a cwd holding another .env: neither
    file is readable by the isolated sandbox's code (sys.path[0] and the cwd are not mounted)."""
    agent_dir, cwd = tmp_path / "srv-agent", tmp_path / "agent-cwd"
    agent_dir.mkdir()
    cwd.mkdir()
    (agent_dir / "agent.py").write_text(AGENT)
    secrets_ = [agent_dir / ".env", cwd / ".env"]
    for path in secrets_:
        path.write_text("OPENAI_API_KEY=sk-host-secret\n")
    proc = subprocess.run(
        [sys.executable, str(agent_dir / "agent.py"), str(tmp_path / "ws"), *map(str, secrets_)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "sk-host-secret" not in proc.stdout
    lines = proc.stdout.strip().splitlines()
    # not mounted at all (ENOENT), not merely unreadable for the sandbox's uid
    assert [line.split()[1:] for line in lines] == [["refused", "FileNotFoundError"]] * 2, proc.stdout


# -- hole 3: fork bombs --------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("tier", ["local", pytest.param("isolated", marks=needs_bwrap)])
async def test_fork_bomb_is_held_by_the_pids_cgroup_and_destroy_leaves_nothing(
    tier: str, tmp_path: Path, guard: Path
) -> None:
    """A bomb whose first process exits, as root (RLIMIT_NPROC ignored): its leftovers never exceed
    the sandbox's pids.max (max_processes + the runner's own tasks), and destroy() kills them all."""
    sandbox = Sandbox.create(tier, base_path=tmp_path, resource_limits=ResourceLimits(max_processes=32))
    await sandbox.start()
    try:
        limit = 32 + getattr(sandbox.backend, "runner_tasks", 4)
        r = await sandbox.run(BOMB, timeout=20)
        assert r.status.value in ("failed", "timeout"), r
        seen = 0
        for _ in range(40):  # the leftovers keep forking after the call
            seen = max(seen, guard_processes(guard))
            await asyncio.sleep(0.025)
        # the runner kills a leftover tree that hits the limit (test_fork_bombs.py), so 0 is fine too
        assert seen <= limit, f"{seen} tasks after the bomb, the sandbox allows {limit}"
        assert (guard / "pids.events").read_text().split() == ["max", "0"], "the guard, not the sandbox, held it"
        cgroup = sandbox.backend.pids_cgroup  # type: ignore[attr-defined]
        assert cgroup.path.is_relative_to(guard)
        assert cgroup.max == limit
        assert os.getpid() not in cgroup.pids()
    finally:
        await sandbox.destroy()
    assert not cgroup.path.exists()
    for _ in range(100):
        if guard_processes(guard) == 0:
            break
        await asyncio.sleep(0.02)
    assert guard_processes(guard) == 0, "destroy() left processes behind"


@pytest.mark.timeout(120)
async def test_stop_kills_a_daemon_even_when_the_runner_died(tmp_path: Path, guard: Path) -> None:
    """A daemon that left the call's session and process group; the runner then dies (SIGKILL, so it
    cannot clean up): stop() still kills the daemon, found through the sandbox's cgroup."""
    async with Sandbox.create("local", base_path=tmp_path) as sandbox:
        r = await sandbox.run(
            textwrap.dedent("""
            import os, time
            runner = os.getppid()
            r, w = os.pipe()
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.write(w, str(os.getpid()).encode())
                    time.sleep(600)
                os._exit(0)
            print(runner, os.read(r, 32).decode())
        """)
        )
        runner, daemon = map(int, r.stdout.split())
        os.kill(runner, 9)
        for _ in range(100):
            if not psutil.pid_exists(runner) or psutil.Process(runner).status() == psutil.STATUS_ZOMBIE:
                break
            await asyncio.sleep(0.02)
    for _ in range(100):
        if not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.02)
    else:
        os.kill(daemon, 9)
        pytest.fail("the daemon outlived stop()")


def test_cgroup_v2_pids() -> None:
    """The v2 path (a child of the process's own cgroup, where delegation allows) is exercised by the
    fork-bomb test whenever the host's pids controller is on cgroup v2."""
    found = pids_cgroup_parent()
    if isinstance(found, str) or found[1] != 2:
        pytest.skip(
            f"no cgroup v2 pids controller for this process here ({found if isinstance(found, str) else 'v1'})"
            "; the fork-bomb test above covers v1"
        )
    assert found[0].is_dir()


# -- the uid lease -------------------------------------------------------------------------------

LEASE_HOLDER = """
import sys, time
from alphora.sandbox.builtin._host_uid import UidLease
lease = UidLease.acquire(sys.argv[1], (int(sys.argv[2]), 2))
print(lease.uid, flush=True)
time.sleep(60)
"""


@needs_root
def test_uid_lease_is_exclusive_across_processes() -> None:
    """A uid held by another process is never handed out; released, it is free again."""
    start = 160000 + secrets.randbelow(5000)
    holder = subprocess.Popen(
        [sys.executable, "-c", LEASE_HOLDER, "same-id", str(start)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        taken = int(holder.stdout.readline())
        mine = UidLease.acquire("same-id", (start, 2))
        assert mine.uid != taken
        assert mine.uid in (start, start + 1)
        with pytest.raises(Exception, match="uid_range"):
            UidLease.acquire("same-id", (start, 2))
        mine.release()
        again = UidLease.acquire("same-id", (start, 2))
        assert again.uid == mine.uid
        again.release()
    finally:
        holder.kill()
        holder.wait()
