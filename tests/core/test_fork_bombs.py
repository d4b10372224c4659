"""Fork bombs are reaped, servers are kept (issue 9, build item 2; docs/limits-and-policy.md).

A call that ends while the processes it leaves keep forking or hit the process limit has that
leftover tree killed by the runner before its result goes out; a quiet background process (a
server started for the next call) is kept; ``keep_background=False`` kills everything a call
leaves. Real bombs, as root (RLIMIT_NPROC ignored), each inside a capped pids cgroup this test
makes around itself (``guard``) so the host is never at risk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from tests._support.pids_guard import guard_processes, pids_guard_fixture

guard = pids_guard_fixture  # the fixture, under the name tests ask for
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap (bwrap) is not installed")
TIERS = ["local", pytest.param("isolated", marks=needs_bwrap)]

#: the first process exits at once; its forks survive EAGAIN and keep trying
BOMB_SURVIVOR = (
    "import os\nif os.fork() == 0:\n    while True:\n        try:\n            os.fork()\n"
    "        except OSError:\n            pass\n"
)
#: issue 9's reproducer: every process dies at its first EAGAIN, the first one among them
BOMB_NAIVE = "import os\nwhile True:\n    os.fork()\n"
#: a quiet server: a detached process that just waits; prints its pid
SERVER = "import subprocess\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\nprint(p.pid)"


async def _alive(sb: Sandbox, pid: str) -> bool:
    r = await sb.run(
        f"import os\ntry:\n    os.kill({pid}, 0)\n    print('alive')\nexcept OSError:\n    print('gone')", timeout=15
    )
    assert r.success, r
    return r.stdout == "alive\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bomb", [BOMB_SURVIVOR, BOMB_NAIVE], ids=["survives-eagain", "naive"])
@pytest.mark.parametrize("tier", TIERS)
async def test_leftover_fork_bomb_is_killed_and_a_quiet_server_is_kept(
    tier: str, bomb: str, tmp_path: Path, guard: Path
) -> None:
    sb = Sandbox.create(tier, base_path=tmp_path, resource_limits=ResourceLimits(max_processes=32))
    await sb.start()
    try:
        server = await sb.run(SERVER)
        assert server.success, server
        assert server.background_killed == 0, server
        pid = server.stdout.strip()
        await sb.run("print('warm')")
        quiet = guard_processes(guard)  # the runner, its spare, the server (and bwrap's own)
        r = await sb.run(bomb, timeout=20)
        assert not r.success, r
        # killed and reaped before the result went out (the naive bomb, left alone, would collapse by
        # itself only a second or so later, the other one never)
        left = guard_processes(guard)
        assert left <= quiet, f"{left - quiet} processes of the bomb still running after the call ({r.error!r})"
        if bomb == BOMB_SURVIVOR or r.background_killed:  # the naive one may die out by itself first
            assert r.background_killed > 0, r
            assert "leftover processes that" in r.error, r
            assert "a fork bomb is not a server" in r.error, r
        nxt = await sb.run("print('ok')", timeout=15)
        assert nxt.stdout == "ok\n", nxt
        assert await _alive(sb, pid), "the quiet server started by an earlier call was killed"
    finally:
        await sb.destroy()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tier", TIERS)
async def test_the_bomb_is_killed_before_the_result_and_the_next_call_is_prompt(
    tier: str, tmp_path: Path, guard: Path
) -> None:
    """The result says what happened, and the next call is served at once (the full pids cgroup was emptied)."""
    sb = Sandbox.create(tier, base_path=tmp_path, resource_limits=ResourceLimits(max_processes=32))
    await sb.start()
    try:
        await sb.run("print('warm')")
        r = await sb.run(BOMB_SURVIVOR, timeout=20)
        assert r.background_killed > 0, r
        assert "leftover processes that" in r.error, r
        nxt = await asyncio.wait_for(sb.run("print('ok')", timeout=15), 10)
        assert nxt.stdout == "ok\n", nxt
    finally:
        await sb.destroy()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tier", TIERS)
async def test_keep_background_false_kills_what_the_call_leaves(tier: str, tmp_path: Path) -> None:
    sb = Sandbox.create(tier, base_path=tmp_path)
    await sb.start()
    try:
        kept = await sb.run(SERVER)
        gone = await sb.run(SERVER, keep_background=False)
        assert kept.success, kept
        assert gone.success, gone
        assert gone.background_killed == 1, gone
        assert gone.error == "", gone
        assert await _alive(sb, kept.stdout.strip())
        assert not await _alive(sb, gone.stdout.strip())
        shell = await sb.execute_shell("sleep 300 & echo started", keep_background=False)
        assert shell.success, shell
        assert shell.background_killed == 1, shell
    finally:
        await sb.destroy()
