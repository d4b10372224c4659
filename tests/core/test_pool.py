"""SandboxPool with real local and isolated sandboxes: hand-out, clean reset, retirement, shutdown.

The reset tests play a holder that leaves everything it can behind (files anywhere in the
workspace, hidden ones and scratch included, a background process that keeps writing, a session
with state, an env var) and check that the next holder of the *same* sandbox sees none of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from alphora.sandbox import (
    ConfigurationError,
    PoolTimeoutError,
    SandboxError,
    SandboxManager,
    SandboxNotRunningError,
    SandboxPool,
    SandboxStatus,
)
from alphora.sandbox.builtin.isolated_backend import bwrap_available

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param(
        "isolated",
        id="isolated",
        marks=pytest.mark.skipif(not bwrap_available(), reason="bubblewrap (bwrap) is not installed"),
    ),
]

#: a holder that leaves everything behind it can
MESS = """
import os, subprocess, sys
os.makedirs("deep/er", exist_ok=True)
open("deep/er/file.txt", "w").write("left")
open(".hidden", "w").write("left")
open(os.path.join(os.environ["TMPDIR"], "scratch.txt"), "w").write("left")
daemon = "import os, time\\nwhile True:\\n    open('daemon.txt', 'a').write('x')\\n    time.sleep(0.02)\\n"
p = subprocess.Popen([sys.executable, "-c", daemon], start_new_session=True)
print(p.pid)
"""

#: what a new interpreter of the sandbox sees of a planted .pth
FRESH_INTERPRETER = (
    "import subprocess, sys; "
    "subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"PLANTED\"))'], check=True)"
)


def _runner_processes(base: Path) -> list[psutil.Process]:
    """Processes whose working directory is under ``base`` (the runners and what they started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd == str(base) or cwd.startswith(str(base) + os.sep):
            found.append(proc)
    return found


@pytest.fixture
async def pool(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxPool]:
    backend = getattr(request, "param", "local")
    async with SandboxPool(backend, size=1, base_path=tmp_path, env_vars={"CONFIGURED": "yes"}) as p:
        yield p


@pytest.mark.parametrize("pool", BACKENDS, indirect=True)
async def test_reset_hands_out_a_clean_sandbox(pool: SandboxPool) -> None:
    async with pool.acquire(timeout=30) as first:
        first_id = first.sandbox_id
        r = await first.run(MESS)
        assert r.success, r
        await first.set_env("LEAKED", "secret")
        kept = first.session("kept")  # referenced until the end: never closed, never collected
        py = await kept.__aenter__()
        assert (await py.run("state = 'left'")).success
        await asyncio.sleep(0.1)
        assert await first.file_exists("daemon.txt")
    with pytest.raises(SandboxNotRunningError):
        await first.run("print('the old holder is locked out')")
    assert first.status is SandboxStatus.DESTROYED
    await pool.settle()
    async with pool.acquire(timeout=30) as second:
        assert second.sandbox_id == first_id  # the same sandbox, reset (size=1)
        assert second is not first
        await asyncio.sleep(0.3)  # a surviving daemon would have written daemon.txt again by now
        assert [f.path for f in await second.list_files("", recursive=True)] == []
        r = await second.run(
            "import os; print(sorted(os.listdir('.'))); print(os.listdir(os.environ['TMPDIR'])); "
            "print(os.environ.get('LEAKED'), os.environ.get('CONFIGURED'))"
        )
        assert r.success, r
        lines = r.stdout.splitlines()
        assert set(eval(lines[0])) <= set(second.backend.internal_paths)
        assert lines[1:] == ["[]", "None yes"]
        async with second.session("kept") as py2:
            r = await py2.run("print(state)")
            assert not r.success
            assert "NameError" in r.stderr
        assert second.execution_count == 1
    await pool.settle()
    stats = pool.stats()
    assert (stats.resets, stats.reset_failures, stats.created) == (2, 0, 1)


async def test_changed_package_environment_is_destroyed_not_reset(pool: SandboxPool) -> None:
    """A .pth planted in the sandbox's venv (what a pip install does) cannot be reset away: the
    sandbox is destroyed and the next holder gets a new one without it."""
    plant = (
        "import sysconfig, os; d = sysconfig.get_paths()['purelib']; os.makedirs(d, exist_ok=True); "
        "open(os.path.join(d, 'planted.pth'), 'w').write('import os; os.environ[\"PLANTED\"] = \"1\"\\n')"
    )
    async with pool.acquire(timeout=30) as first:
        first_id = first.sandbox_id
        assert (await first.run(plant)).success
        r = await first.run(FRESH_INTERPRETER)
        assert r.stdout == "1\n", r  # the plant works: it runs in every later interpreter
    await pool.settle()
    stats = pool.stats()
    assert (stats.reset_failures, stats.destroyed) == (1, 1)
    async with pool.acquire(timeout=30) as second:
        assert second.sandbox_id != first_id
        r = await second.run(FRESH_INTERPRETER)
        assert r.stdout == "None\n", r


async def test_never_two_holders_and_waiting_for_a_free_one(tmp_path: Path) -> None:
    # min_idle=0: nothing is made ahead; every hand-out waits for one made on demand
    async with SandboxPool("local", size=2, min_idle=0, base_path=tmp_path, on_release="destroy") as pool:
        held: set[str] = set()
        most = 0

        async def worker() -> None:
            nonlocal most
            async with pool.acquire(timeout=60) as sandbox:
                assert sandbox.sandbox_id not in held
                held.add(sandbox.sandbox_id)
                most = max(most, len(held))
                assert (await sandbox.run("print(1)")).stdout == "1\n"
                held.discard(sandbox.sandbox_id)

        await asyncio.gather(*(worker() for _ in range(6)))
        assert most <= 2
        async with pool.acquire() as a, pool.acquire() as b:
            assert a.sandbox_id != b.sandbox_id
            with pytest.raises(PoolTimeoutError, match="2 of size=2 handed out"):
                await pool.get(timeout=0.2)
            waiter = asyncio.create_task(pool.get())
            await asyncio.sleep(0.05)
            waiter.cancel()  # a cancelled wait takes nothing with it
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert (pool.stats().waiting, pool.stats().in_use) == (0, 2)
        assert pool.stats().acquired == 8


async def test_max_uses_and_max_age_retire_sandboxes(tmp_path: Path) -> None:
    async with SandboxPool("local", size=1, base_path=tmp_path, max_uses=2) as pool:
        ids = []
        for _ in range(3):
            async with pool.acquire(timeout=30) as sandbox:
                ids.append(sandbox.sandbox_id)
            await pool.settle()
        assert ids[0] == ids[1] != ids[2]
    async with SandboxPool("local", size=1, base_path=tmp_path, max_age=0.5, maintenance_interval=0.1) as pool:
        async with pool.acquire(timeout=30) as sandbox:
            old = sandbox.sandbox_id
        await asyncio.sleep(0.8)  # the idle sandbox ages out and the maintenance replaces it
        await pool.settle()
        async with pool.acquire(timeout=30) as sandbox:
            assert sandbox.sandbox_id != old
        assert pool.stats().destroyed >= 1


async def test_a_dead_sandbox_fails_its_health_check_and_is_not_handed_out(tmp_path: Path) -> None:
    async with SandboxPool("local", size=1, base_path=tmp_path) as pool:
        runners = _runner_processes(tmp_path)
        assert runners
        for proc in runners:  # the runner crashed behind the pool's back
            proc.kill()
        psutil.wait_procs(runners, timeout=10)
        async with pool.acquire(timeout=30) as sandbox:
            assert (await sandbox.run("print(1)")).stdout == "1\n"
        assert pool.stats().health_check_failures == 1


async def test_shutdown_leaves_no_process_and_no_workspace(tmp_path: Path) -> None:
    pool = await SandboxPool("local", size=2, base_path=tmp_path).start()
    held = await pool.get()
    assert (await held.run(MESS)).success
    assert _runner_processes(tmp_path)
    await pool.shutdown()
    assert held.status is SandboxStatus.DESTROYED
    await pool.put(held)  # returning after shutdown is harmless
    await asyncio.sleep(0.1)
    assert _runner_processes(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SandboxError, match="shut down"):
        await pool.get()


async def test_bad_input_is_refused_with_its_cause(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="size must be a positive integer"):
        SandboxPool("local", size=0)
    with pytest.raises(ConfigurationError, match="min_idle"):
        SandboxPool("local", size=1, min_idle=2)
    with pytest.raises(ConfigurationError, match="on_release must be 'reset' or 'destroy'"):
        SandboxPool("local", on_release="keep")
    with pytest.raises(ConfigurationError, match="sandbox_id= cannot be given"):
        SandboxPool("local", sandbox_id="x")
    # a misspelt option is named when the pool is made, not at start() as Sandbox()'s TypeError
    with pytest.raises(ConfigurationError, match=r"unknown option resource_limit=: .*resource_limits"):
        SandboxPool("local", resource_limit=None)
    with pytest.raises(ConfigurationError, match=r"unknown option max_agee=: the pool's own options are .*max_age"):
        SandboxPool("local", max_agee=5)
    with pytest.raises(ConfigurationError, match="unknown option docker_image="):
        SandboxPool("local", docker_image="python:3.11-slim")  # the Docker alias, on a local pool
    with pytest.raises(SandboxError, match=r"could not start a local sandbox: .*system_site_packages"):
        async with SandboxPool("local", size=1, base_path=tmp_path, backend_options={"system_site_packages": "maybe"}):
            pass
    broken = SandboxPool("local", size=1, base_path=tmp_path, backend_options={"system_site_packages": "maybe"})
    # not started: get() starts it, and the failure comes back at once (not as a timeout)
    with pytest.raises(SandboxError, match=r"could not start a local sandbox: .*system_site_packages"):
        await broken.get(timeout=5)
    await broken.shutdown()
    async with SandboxPool("local", size=1, base_path=tmp_path) as pool:
        from alphora.sandbox import Sandbox

        with pytest.raises(SandboxError, match="not handed out by this pool"):
            await pool.put(Sandbox("local", base_path=tmp_path))
        sandbox = await pool.get()
        await pool.put(sandbox)
        with pytest.raises(SandboxError, match="returned twice"):
            await pool.put(sandbox)


def test_pool_options_are_the_pools_keyword_options() -> None:
    """POOL_OPTIONS (what the manager's pool_options may hold) is SandboxPool's own keyword options."""
    import inspect

    from alphora.sandbox.pool import POOL_OPTIONS

    params = inspect.signature(SandboxPool.__init__).parameters.values()
    assert {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY} == POOL_OPTIONS


def test_manager_pool_options_take_only_pool_options(tmp_path: Path) -> None:
    """A sandbox setting in pool_options was a TypeError ('got multiple values') at start(): refused when made,
    naming where it goes instead."""
    with pytest.raises(ConfigurationError, match=r"pool_options may hold only .* not 'env_vars': .*manager's settings"):
        SandboxManager(base_path=tmp_path, pool_size=1, pool_options={"env_vars": {"A": "1"}})
    with pytest.raises(ConfigurationError, match="not 'max_agee'"):
        SandboxManager(base_path=tmp_path, pool_size=1, pool_options={"max_agee": 5})
    SandboxManager(base_path=tmp_path, pool_size=1, pool_options={"max_age": 5, "max_uses": 3})


async def test_manager_pool_size_serves_anonymous_sandboxes_warm(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path, pool_size=2, env_vars={"A": "1"}) as manager:
        assert manager.pool is not None
        assert manager.pool.stats().idle == 2
        anonymous = await manager.create_sandbox()
        assert manager.pool.stats().acquired == 1
        assert (await anonymous.run("import os; print(os.environ['A'])")).stdout == "1\n"
        named = await manager.create_sandbox("worker")
        assert manager.pool.stats().acquired == 1  # named: made cold, as before
        assert {s.sandbox_id for s in manager.list_sandboxes()} == {anonymous.sandbox_id, named.sandbox_id}
        assert await manager.destroy_sandbox(anonymous.sandbox_id)
        await manager.pool.settle()
        assert manager.pool.stats().idle == 2  # refilled
        status = await manager.get_status()
        assert status["pool"]["size"] == 2
    assert _runner_processes(tmp_path) == []


async def test_a_crashed_pool_leaves_no_process(tmp_path: Path) -> None:
    """The host process dies with a pool full of sandboxes, one of them running a background daemon:
    the runners and everything they started go with it (only the workspaces stay on disk)."""
    script = (
        "import asyncio, os\n"
        "from alphora.sandbox import SandboxPool\n"
        "async def main():\n"
        f"    pool = await SandboxPool('local', size=2, base_path={str(tmp_path)!r}).start()\n"
        "    sandbox = await pool.get()\n"
        '    await sandbox.run(\'import subprocess, sys; subprocess.Popen([sys.executable, "-c", '
        '"import time; time.sleep(60)"], start_new_session=True)\')\n'
        "    print(len(os.listdir(" + repr(str(tmp_path)) + ")), flush=True)\n"
        "    os._exit(1)  # a crash: no shutdown, no finalizers\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert out.strip() == b"2"
    for _ in range(50):  # the runners notice their closed stdin and kill their trees
        if not _runner_processes(tmp_path):
            break
        await asyncio.sleep(0.1)
    assert _runner_processes(tmp_path) == []


async def test_refills_are_bounded_by_refill_concurrency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alphora.sandbox import Sandbox

    running = most = 0
    real_start = Sandbox.start

    async def counted_start(self: Sandbox) -> Sandbox:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return await real_start(self)
        finally:
            running -= 1

    monkeypatch.setattr(Sandbox, "start", counted_start)
    async with SandboxPool("local", size=4, refill_concurrency=2, base_path=tmp_path) as pool:
        assert pool.stats().idle == 4
    assert most == 2
