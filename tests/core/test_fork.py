"""session.fork(): a copy-on-write copy of a live interpreter, on the local and isolated backends.

The Docker backend runs the same runner code; tests/docker/test_fork.py proves it there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import ExecutionStatus, Sandbox
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from alphora.sandbox.errors import BackendError


@pytest.fixture(params=["local", "isolated"])
async def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    if request.param == "isolated" and not bwrap_available():
        pytest.skip("bubblewrap (bwrap) is not installed: apt install bubblewrap")
    sb = Sandbox.create(request.param, base_path=tmp_path / "sandboxes")
    await sb.start()
    try:
        yield sb
    finally:
        await sb.destroy()


async def test_fork_copies_the_state_and_the_two_diverge(sandbox: Sandbox) -> None:
    async with sandbox.session() as py:
        r = await py.run("import os, json\ndata = {'n': 1, 'items': [1]}\nblob = bytes(range(256)) * 4096\nos.getpid()")
        parent_pid = r.value
        async with await py.fork("child") as child:
            assert child.name == "child"
            r = await child.run("data['n'] = 2; data['items'].append('child'); json.dumps(data), len(blob)")
            assert r.success, r.error
            assert r.value == repr(('{"n": 2, "items": [1, "child"]}', 1048576))
            r = await py.run("data['items'].append('parent'); json.dumps(data)")
            assert r.value == repr('{"n": 1, "items": [1, "parent"]}')
            r = await child.run("json.dumps(data), os.getpid()")
            assert eval(r.value)[0] == '{"n": 2, "items": [1, "child"]}'
            assert eval(r.value)[1] != int(parent_pid)
            r = await child.run("class Bold:\n    def _repr_html_(self): return '<b>x</b>'\ndisplay(Bold())")
            assert [a.mime_type for a in r.attachments][:1] == ["text/html"]  # rich outputs on its own pipes
            async with await child.fork() as grandchild:  # a fork forks too
                r = await grandchild.run("data['items']")
                assert r.value == "[1, 'child']"


async def test_the_fork_survives_its_parent_and_fails_alone(sandbox: Sandbox) -> None:
    async with sandbox.session("p") as py:
        await py.run("x = 42")
        fork = await py.fork()
    try:  # the parent session is closed: its interpreter is gone, the fork's is not
        r = await fork.run("x + 1")
        assert r.value == "43"
        r = await fork.run("import time\nwhile True: time.sleep(0.05)", timeout=1)
        assert r.status is ExecutionStatus.TIMEOUT
        assert not r.state_lost
        async with sandbox.session("other") as other:
            await other.run("y = 1")
            sibling = await other.fork()
            r = await sibling.run("import os\nos._exit(3)")
            assert r.state_lost
            r = await other.run("y")  # the crash of its fork does not touch it
            assert r.value == "1"
            assert not r.state_lost
            await sibling.close()
        assert (await fork.run("x")).value == "42"
    finally:
        await fork.close()


async def test_the_workspace_is_shared_unless_the_fork_gets_a_copy(sandbox: Sandbox) -> None:
    await sandbox.write_file("notes.txt", "original")
    async with sandbox.session() as py:
        await py.run("import os")
        async with await py.fork("shared") as shared:
            await shared.run("open('notes.txt', 'w').write('from the shared fork')")
            assert await sandbox.read_file("notes.txt") == "from the shared fork"
        async with await py.fork("own", copy_workspace=True) as own:
            r = await own.run("open('notes.txt').read()")
            assert r.value == repr("from the shared fork")
            await own.run("open('notes.txt', 'w').write('from the copy'); open('new.txt', 'w').write('n')")
        assert await sandbox.read_file("notes.txt") == "from the shared fork"
        assert await sandbox.read_file(".forks/own/notes.txt") == "from the copy"
        assert await sandbox.read_file(".forks/own/new.txt") == "n"
        assert not await sandbox.file_exists("new.txt")
        async with await py.fork("own2", copy_workspace=True) as own2:
            r = await own2.run("sorted(os.listdir('.')), os.path.basename(os.getcwd())")  # earlier copies left out
            assert r.value == repr((["notes.txt"], "own2"))


async def test_bad_fork_requests_are_refused_with_the_reason(sandbox: Sandbox) -> None:
    async with sandbox.session("a") as py:
        async with sandbox.session("b"):
            with pytest.raises(BackendError, match="'b' already exists"):
                await py.fork("b")
        with pytest.raises(ValueError, match="plain folder name"):
            await py.fork("../escape", copy_workspace=True)
        await sandbox.write_file(".forks/taken/x", "keep")
        with pytest.raises(BackendError, match="already exists"):
            await py.fork("taken", copy_workspace=True)
        assert await sandbox.read_file(".forks/taken/x") == "keep"
        r = await py.run("1 + 1")  # the session still works after the refusals
        assert r.value == "2"


HOSTILE_FORK = """
import array, gc, json, os, socket
kernel = next(o for o in gc.get_objects() if type(o).__name__ == 'Kernel')
def answer_with_the_runners_pid(req):
    sock = socket.socket(fileno=5)
    _, anc, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(20))
    sock.detach()
    fds = array.array('i')
    fds.frombytes(anc[0][2])
    body = json.dumps({'ev': 'forked', 'pid': os.getppid(), 'cwd': os.getcwd()}).encode()
    os.write(fds[3], len(body).to_bytes(4, 'big') + body)
    for fd in fds:
        os.close(fd)
kernel._fork = answer_with_the_runners_pid
"""


async def test_a_session_cannot_pass_off_another_process_as_its_fork(sandbox: Sandbox) -> None:
    # sandbox code owns its interpreter and can answer the fork request itself; had the runner
    # believed it, closing the "fork" would kill the runner's own tree
    async with sandbox.session() as py:
        assert (await py.run(HOSTILE_FORK)).success
        with pytest.raises(BackendError, match="not a process of the runner"):
            await py.fork("liar")
        assert (await py.run("1 + 1")).value == "2"
    assert (await sandbox.run("print('runner alive')")).stdout == "runner alive\n"
