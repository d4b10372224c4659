"""session.fork() in a container (our image and a foreign one): the same runner code as the local
backends (tests/core/test_fork.py), here with the runner as the container's PID 1."""

from __future__ import annotations

import pytest

from alphora.sandbox import ExecutionStatus, Sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_fork_diverges_and_lives_on_its_own(shared_sandbox: Sandbox) -> None:
    async with shared_sandbox.session("fork-parent") as py:
        r = await py.run("import os\nstate = {'who': 'parent', 'seen': []}\nos.getpid()")
        parent_pid = int(r.value or 0)
        fork = await py.fork()
        r = await fork.run(f"state['who'] = 'fork'; state['seen'].append(1); state, os.getpid() != {parent_pid}")
        assert r.value == repr(({"who": "fork", "seen": [1]}, True)), r.error
        r = await py.run("state")
        assert r.value == repr({"who": "parent", "seen": []})
    try:  # the parent session is closed; the fork keeps its state and times out on its own
        r = await fork.run("import time\nwhile True: time.sleep(0.05)", timeout=1)
        assert r.status is ExecutionStatus.TIMEOUT
        assert not r.state_lost
        assert (await fork.run("state['who']")).value == "'fork'"
    finally:
        await fork.close()


async def test_fork_with_its_own_copy_of_the_workspace(shared_sandbox: Sandbox) -> None:
    await shared_sandbox.write_file("fork-data/in.txt", "base")
    async with shared_sandbox.session("fork-ws") as py:
        await py.run("import os\nos.chdir('fork-data')")
        async with await py.fork("fork-ws-copy", copy_workspace=True) as own:
            r = await own.run("open('in.txt', 'w').write('changed'); os.getcwd()")
            assert r.value == repr("/workspace/.forks/fork-ws-copy/fork-data"), r.error
        assert (await py.run("open('in.txt').read()")).value == "'base'"
    assert await shared_sandbox.read_file(".forks/fork-ws-copy/fork-data/in.txt") == "changed"
