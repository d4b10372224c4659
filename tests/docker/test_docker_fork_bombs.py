"""Fork bombs are reaped, servers are kept, on real containers (issue 9, build item 2;
docs/limits-and-policy.md). The container's pids limit contains the bomb; the runner kills a
call's leftover tree that hits it, before the call's result goes out. Each test that takes
``image`` runs on a foreign image and on ours (see conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox

#: the first process exits at once; its forks survive EAGAIN and keep trying
BOMB_SURVIVOR = (
    "import os\nif os.fork() == 0:\n    while True:\n        try:\n            os.fork()\n"
    "        except OSError:\n            pass\n"
)
#: issue 9's reproducer: every process dies at its first EAGAIN, the first one among them
BOMB_NAIVE = "import os\nwhile True:\n    os.fork()\n"
SERVER = "import subprocess\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\nprint(p.pid)"
#: processes in the container other than the runner (PID 1), its spare and this call
OTHERS = """
import os
me, spare = os.getpid(), None
rows = []
for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):
    try:
        stat = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')[:2]
    except OSError:
        continue
    if pid in (1, me) or stat[0] == 'Z' or (stat[1] == '1' and b'-u' in cmd):  # the runner's spare
        continue
    rows.append(f"{pid} {b' '.join(cmd).decode(errors='replace')}")
print(len(rows))
print('\\n'.join(rows))
"""


async def _alive(sb: Sandbox, pid: str) -> bool:
    r = await sb.run(
        f"import os\ntry:\n    os.kill({pid}, 0)\n    print('alive')\nexcept OSError:\n    print('gone')", timeout=15
    )
    assert r.success, r
    return r.stdout == "alive\n"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("bomb", [BOMB_SURVIVOR, BOMB_NAIVE], ids=["survives-eagain", "naive"])
async def test_leftover_fork_bomb_is_killed_and_a_quiet_server_is_kept(tmp_path: Path, image: str, bomb: str) -> None:
    sb = Sandbox.create_docker(base_path=tmp_path, docker_image=image, resource_limits=ResourceLimits(max_processes=32))
    await sb.start()
    try:
        server = await sb.run(SERVER)
        assert server.success, server
        pid = server.stdout.strip()
        r = await sb.run(bomb, timeout=20)
        assert not r.success, r
        if bomb == BOMB_SURVIVOR or r.background_killed:  # the naive one may die out by itself first
            assert r.background_killed > 0, r
            assert "leftover processes that" in r.error, r
        others = await sb.run(OTHERS, timeout=15)  # the next call is served at once
        assert others.success, others
        assert others.stdout.split("\n", 1)[0] == "1", f"only the server should be left: {others.stdout}"
        assert await _alive(sb, pid), "the quiet server started by an earlier call was killed"
    finally:
        await sb.destroy()


@pytest.mark.timeout(120)
async def test_keep_background_false_kills_what_the_call_leaves(tmp_path: Path, image: str) -> None:
    async with Sandbox.create_docker(base_path=tmp_path, docker_image=image) as sb:
        kept = await sb.run(SERVER)
        gone = await sb.run(SERVER, keep_background=False)
        assert gone.success, gone
        assert gone.background_killed == 1, gone
        assert await _alive(sb, kept.stdout.strip())
        assert not await _alive(sb, gone.stdout.strip())


@pytest.mark.timeout(180)
async def test_leftover_fork_bomb_is_killed_under_gvisor(tmp_path: Path, runsc_image: str) -> None:
    """The same rule under gVisor: no children file in its /proc (the runner scans /proc instead),
    max_processes is RLIMIT_NPROC inside gVisor's kernel."""
    sb = Sandbox.create_docker(
        base_path=tmp_path, docker_image=runsc_image, runtime="runsc", resource_limits=ResourceLimits(max_processes=32)
    )
    await sb.start()
    try:
        server = await sb.run(SERVER)
        assert server.success, server
        r = await sb.run(BOMB_SURVIVOR, timeout=30)
        assert r.background_killed > 0, r
        assert "leftover processes that" in r.error, r
        others = await sb.run(OTHERS, timeout=15)
        assert others.success, others
        assert others.stdout.split("\n", 1)[0] == "1", f"only the server should be left: {others.stdout}"
        assert await _alive(sb, server.stdout.strip())
    finally:
        await sb.destroy()
