"""BackendContractTests: what every execution backend must do."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ..backend import Backend, OutputChunk, ProcessRequest
from ..errors import FileNotFoundError as SandboxFileNotFoundError
from ..errors import PathTraversalError, SandboxError
from ..session import PythonSession
from ..types import ExecutionStatus, FileType

#: a session cell that starts a child, a grandchild (below a second Python) and a double-forked
#: setsid daemon, all with ``MARKER`` in their argv, records their pids in ``cell.pids``, then sleeps
_SPAWNING_CELL = """
import os, subprocess, sys, time
kept = 'set before the timeout'
child = subprocess.Popen([MARKER + '-child', '300'], executable='sleep')
parent = subprocess.Popen([sys.executable, '-c', 'import subprocess, sys; p = subprocess.Popen([sys.argv[1], "300"], '
                           'executable="sleep"); print(p.pid, flush=True); p.wait()', MARKER + '-grandchild'],
                          stdout=subprocess.PIPE)
grandchild = int(parent.stdout.readline())
r, w = os.pipe()
if os.fork() == 0:
    try:
        os.close(r)
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.execvp('sleep', [MARKER + '-daemon', '300'])
        os.write(w, str(pid).encode())
    finally:
        os._exit(0)
os.close(w)
daemon = int(os.read(r, 64))
os.wait()
with open('cell.pids', 'w') as f:
    f.write(' '.join(map(str, [child.pid, parent.pid, grandchild, daemon])))
print('all started', flush=True)
time.sleep(300)
"""

#: prints the pids of ``cell.pids`` that still exist (zombies count) and of every process with
#: ``MARKER`` in its argv
_SURVIVORS = """
import os
found = {int(p) for p in open('cell.pids').read().split() if os.path.exists(f'/proc/{p}')}
for name in os.listdir('/proc'):
    if name.isdigit() and int(name) != os.getpid():
        try:
            if MARKER.encode() in open(f'/proc/{name}/cmdline', 'rb').read():
                found.add(int(name))
        except OSError:
            pass
print(sorted(found))
"""


class BackendContractTests:
    """Subclass, implement :meth:`make_backend`, and every test runs against your backend."""

    #: seconds a killed call may take beyond its timeout before the contract fails
    timeout_slack: float = 5.0

    async def make_backend(self, workspace: Path) -> Backend:
        raise NotImplementedError("subclass BackendContractTests and implement make_backend()")

    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[Backend]:
        backend = await self.make_backend(tmp_path / "ws")
        await backend.initialize()
        await backend.start()
        try:
            yield backend
        finally:
            await backend.destroy()

    def req(self, backend: Backend, kind: str, **kw: object) -> ProcessRequest:
        kw.setdefault("timeout", 30.0)
        kw.setdefault("max_output", backend.resource_limits.max_output_size)
        return ProcessRequest(kind=kind, **kw)  # type: ignore[arg-type]

    # -- processes -------------------------------------------------------------------------------

    async def test_python_stdout_and_exit_code(self, backend: Backend) -> None:
        ok = await backend.execute_code("print('hello', 6 * 7)")
        assert ok.status is ExecutionStatus.SUCCESS, ok
        assert ok.stdout == "hello 42\n"
        assert ok.return_code == 0
        bad = await backend.execute_code("import sys; print('oops', file=sys.stderr); sys.exit(3)")
        assert bad.status is ExecutionStatus.FAILED
        assert bad.return_code == 3
        assert "oops" in bad.stderr

    async def test_exception_is_data(self, backend: Backend) -> None:
        r = await backend.execute_code("raise ValueError('boom')")
        assert not r.success
        assert "ValueError: boom" in r.stderr

    async def test_fresh_process_per_call(self, backend: Backend) -> None:
        await backend.execute_code("import builtins; builtins.LEAK = 1; x = 5")
        r = await backend.execute_code("import builtins; print(hasattr(builtins, 'LEAK'), 'x' in globals())")
        assert r.stdout == "False False\n"

    async def test_file_with_args(self, backend: Backend) -> None:
        await backend.write_bytes("bin/script.py", b"import sys\nprint(sys.argv[1:])\n")
        r = await backend.execute_file("bin/script.py", ["a b", "c"])
        assert r.stdout == "['a b', 'c']\n", r

    async def test_shell_pipeline_in_workspace(self, backend: Backend) -> None:
        await backend.write_bytes("here.txt", b"x")
        r = await backend.execute_shell("echo 'Hello' | tr '[:lower:]' '[:upper:]'; ls")
        assert r.stdout.splitlines()[0] == "HELLO"
        assert "here.txt" in r.stdout

    async def test_argv_no_shell(self, backend: Backend) -> None:
        r = await backend.execute_argv(["echo", "$HOME; rm -rf /"])
        assert r.stdout == "$HOME; rm -rf /\n"

    async def test_env_is_clean_and_explicit(self, backend: Backend) -> None:
        code = "import os; print(os.environ.get('MY_VAR'), os.environ.get('ALPHORA_CONTRACT_SECRET'))"
        import os

        os.environ["ALPHORA_CONTRACT_SECRET"] = "host-secret"
        try:
            r = await backend.execute_code(code, env={"MY_VAR": "given"})
        finally:
            del os.environ["ALPHORA_CONTRACT_SECRET"]
        assert r.stdout == "given None\n"

    async def test_timeout_kills_the_tree_and_keeps_output(self, backend: Backend) -> None:
        code = (
            "import subprocess, sys, time\n"
            "p = subprocess.Popen(['sleep', '300'])\n"
            "open('child.pid', 'w').write(str(p.pid))\n"
            "print('before', flush=True)\n"
            "time.sleep(300)\n"
        )
        t0 = time.monotonic()
        r = await backend.execute_code(code, timeout=1.5)
        elapsed = time.monotonic() - t0
        assert r.status is ExecutionStatus.TIMEOUT
        assert "before" in r.stdout
        assert elapsed < 1.5 + self.timeout_slack
        pid = (await backend.read_bytes("child.pid")).decode()
        check = await backend.execute_shell(f"kill -0 {pid} 2>/dev/null && echo alive || echo gone")
        assert check.stdout.strip() == "gone"

    async def test_output_is_capped(self, backend: Backend) -> None:
        request = self.req(backend, "python", code="import sys\nfor _ in range(64): sys.stdout.write('x' * 65536)\n",
                           max_output=100_000)
        r = await backend.run(request)
        assert r.stdout_truncated
        assert len(r.stdout.encode()) <= 100_000 + 1024

    async def test_non_utf8_output(self, backend: Backend) -> None:
        r = await backend.execute_code("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')")
        assert r.stdout.startswith("ok ")
        assert r.stdout.endswith(" end\n")

    async def test_streaming_callback(self, backend: Backend) -> None:
        chunks: list[OutputChunk] = []
        r = await backend.execute_code("import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.05)",
                                       on_output=chunks.append)
        assert r.success
        assert "".join(c.text for c in chunks if c.stream == "stdout") == "0\n1\n2\n"

    async def test_concurrent_calls(self, backend: Backend) -> None:
        results = await asyncio.gather(*(backend.execute_code(f"print({i} * 2)") for i in range(6)))
        assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(6)]

    # -- files -----------------------------------------------------------------------------------

    async def test_file_roundtrip_and_info(self, backend: Backend) -> None:
        data = bytes(range(256)) * 10
        await backend.write_bytes("deep/dir/blob.bin", data)
        assert await backend.read_bytes("deep/dir/blob.bin") == data
        info = await backend.stat("deep/dir/blob.bin")
        assert info is not None
        assert info.size == len(data)
        assert info.name == "blob.bin"
        assert info.path == "deep/dir/blob.bin"
        assert (await backend.stat("deep")).is_directory  # type: ignore[union-attr]
        assert await backend.stat("missing.txt") is None
        r = await backend.execute_code("print(open('deep/dir/blob.bin', 'rb').read() == bytes(range(256)) * 10)")
        assert r.stdout == "True\n"

    async def test_files_written_by_code_are_visible(self, backend: Backend) -> None:
        await backend.execute_code("import os; os.makedirs('out', exist_ok=True); open('out/r.json', 'w').write('{}')")
        info = await backend.stat("out/r.json")
        assert info is not None
        assert info.file_type is FileType.JSON
        assert await backend.read_bytes("out/r.json") == b"{}"

    async def test_missing_file(self, backend: Backend) -> None:
        with pytest.raises(SandboxFileNotFoundError):
            await backend.read_bytes("nope.txt")

    async def test_list_remove_copy_move(self, backend: Backend) -> None:
        await backend.write_bytes("a.txt", b"A")
        await backend.write_bytes("src/b.py", b"B")
        await backend.write_bytes("src/sub/c.py", b"C")
        top = {i.path for i in await backend.list_dir("")}
        assert {"a.txt", "src"} <= top
        assert "src/b.py" not in top
        deep = {i.path for i in await backend.list_dir("", recursive=True)}
        assert {"a.txt", "src", "src/b.py", "src/sub", "src/sub/c.py"} <= deep
        await backend.copy("a.txt", "copy/a2.txt")
        assert await backend.read_bytes("copy/a2.txt") == b"A"
        await backend.move("a.txt", "moved.txt")
        assert await backend.stat("a.txt") is None
        assert await backend.read_bytes("moved.txt") == b"A"
        assert await backend.remove("src") is True
        assert await backend.stat("src/sub/c.py") is None
        assert await backend.remove("src") is False

    async def test_planted_symlinks_are_refused(self, backend: Backend) -> None:
        await backend.execute_shell("ln -s /etc etc_link && ln -s /etc/hostname host_link && mkdir -p d && "
                                    "ln -s .. d/up")
        for path in ("etc_link/passwd", "host_link", "d/up/x"):
            with pytest.raises(PathTraversalError):
                await backend.read_bytes(path)
        with pytest.raises(PathTraversalError):
            await backend.write_bytes("etc_link/evil", b"x")

    # -- health and usage ------------------------------------------------------------------------

    async def test_health_and_usage(self, backend: Backend) -> None:
        assert await backend.health_check()
        await backend.write_bytes("big.bin", b"\0" * (2 * 1024 * 1024))
        usage = await backend.get_resource_usage()
        assert usage.disk_mb >= 1.5
        await backend.stop()
        assert not await backend.health_check()

    # -- sessions --------------------------------------------------------------------------------

    async def _session(self, backend: Backend, name: str = "contract") -> PythonSession:
        try:
            return await backend.open_session(name)
        except NotImplementedError:
            pytest.skip(f"backend {backend.name!r} has no stateful sessions")

    async def test_session_timeout_kills_the_cells_processes_and_keeps_state(self, backend: Backend) -> None:
        marker = f"MARKER = 'alphora-contract-{secrets.token_hex(4)}'\n"
        py = await self._session(backend)
        try:
            await py.run("earlier = 1")
            t0 = time.monotonic()
            r = await py.run(marker + _SPAWNING_CELL, timeout=5)
            assert r.status is ExecutionStatus.TIMEOUT, r
            assert "all started" in r.stdout, r  # everything was running when the timeout hit
            assert time.monotonic() - t0 < 5 + self.timeout_slack
            survivors = await backend.execute_code(marker + _SURVIVORS)
            assert survivors.stdout == "[]\n", survivors  # child, grandchild, daemon: none left, not even a zombie
            assert not r.state_lost, r
            state = await py.run("(earlier, kept, child.poll())")
            assert state.value == "(1, 'set before the timeout', -9)", state  # the cell's own variables too
        finally:
            await py.close()

    async def test_session_background_processes_of_completed_cells_keep_running(self, backend: Backend) -> None:
        marker = f"MARKER = 'alphora-contract-{secrets.token_hex(4)}'\n"
        py = await self._session(backend)
        try:
            started = await py.run(marker + "import subprocess\n"
                                   "server = subprocess.Popen([MARKER + '-server', '300'], executable='sleep')\n"
                                   "open('cell.pids', 'w').write(str(server.pid))")
            assert started.success, started
            r = await py.run("import time\ntime.sleep(300)", timeout=1)
            assert r.status is ExecutionStatus.TIMEOUT, r
            assert (await py.run("server.poll() is None")).value == "True"  # a server started earlier lives on
            alive = await backend.execute_code(marker + _SURVIVORS)
            assert alive.stdout != "[]\n", alive
        finally:
            await py.close()
        gone = await backend.execute_code(marker + _SURVIVORS)
        assert gone.stdout == "[]\n", gone  # closing the session ends it

    async def test_memory_usage_counts_each_page_once(self, backend: Backend) -> None:
        py = await self._session(backend)
        try:
            await py.run("import os, time")
            before = (await backend.get_resource_usage()).memory_mb
            assert (await py.run("blob = b'x' * (100 << 20)")).success
            grown = (await backend.get_resource_usage()).memory_mb - before
            assert 90 <= grown <= 130, grown
            # a forked child shares the 100 MB with the session (copy-on-write): still counted once
            fork = await py.run("pid = os.fork()\nif pid == 0:\n    time.sleep(300)\n    os._exit(0)")
            assert fork.success, fork
            await asyncio.sleep(0.2)
            shared = (await backend.get_resource_usage()).memory_mb - before
            await py.run("os.kill(pid, 9)\nos.waitpid(pid, 0)")
            assert 90 <= shared <= grown + 15, (grown, shared)
        finally:
            await py.close()

    # -- hostile workspace entries: hard links, FIFOs, a symlink-swap race --------------------------
    #
    # Sandbox code plants these itself. The "outside" files live where user code can write outside
    # the workspace (the workspace's parent directory, else /tmp) as *user code* sees it, which is
    # also what a backend's file primitives would reach if they followed the entry.

    #: seconds a file primitive may take on a FIFO before the contract calls it hung
    fifo_bound: float = 10.0
    #: seconds the symlink-swap race may run to see both outcomes (a read and a refusal)
    race_bound: float = 60.0
    #: the race goes on until each outcome (a read, a refusal) was seen this many times
    race_rounds: int = 300

    async def _code_json(self, backend: Backend, code: str, timeout: float = 60.0) -> Any:
        r = await backend.execute_code(code, timeout=timeout)
        assert r.success, r
        return json.loads(r.stdout.strip().splitlines()[-1])

    async def _outside_dir(self, backend: Backend, tag: str) -> str:
        """Make a fresh directory outside the workspace, writable by user code; its path as user
        code sees it."""
        path: str = await self._code_json(backend, _MAKE_OUTSIDE.replace("TAG", repr(tag)))
        return path

    async def _snapshot(self, backend: Backend, outside: str) -> dict[str, str]:
        code = ("import json, os\nd = OUT\nprint(json.dumps({n: open(os.path.join(d, n)).read() "
                "for n in sorted(os.listdir(d))}))").replace("OUT", repr(outside))
        files: dict[str, str] = await self._code_json(backend, code)
        return files

    async def test_hard_link_to_an_outside_file_is_never_read_or_written_through(self, backend: Backend) -> None:
        outside = await self._outside_dir(backend, "hardlink")
        planted = await self._code_json(backend, _PLANT_HARD_LINKS.replace("OUT", repr(outside)))
        if not planted:
            # user code could not link an outside file into the workspace at all (a separate mount:
            # EXDEV): the hazard cannot arise on this backend, and the plant code proved it
            return
        before = await self._snapshot(backend, outside)
        assert before == {"secret.txt": "outside secret", "target.txt": "outside target"}, before
        with pytest.raises(SandboxError):
            leaked = await backend.read_bytes("hl.txt")
            pytest.fail(f"read through a hard link returned {leaked!r}")
        with contextlib.suppress(SandboxError):
            await backend.copy("hl.txt", "copied.txt")
        copied = await backend.stat("copied.txt")
        if copied is not None:  # a copy may be refused; if made, it must not carry the outside bytes
            assert b"outside" not in await _read_or_empty(backend, "copied.txt")
        await backend.write_bytes("mine.txt", b"inside")
        await backend.write_bytes("mine2.txt", b"inside")
        # each destination is a hard link to the outside target: replacing the name is fine,
        # writing into the inode is not
        with contextlib.suppress(SandboxError):
            await backend.write_bytes("hl_w.txt", b"written by the file API")
        with contextlib.suppress(SandboxError):
            await backend.copy("mine.txt", "hl_c.txt")
        with contextlib.suppress(SandboxError):
            await backend.move("mine2.txt", "hl_m.txt")
        with contextlib.suppress(SandboxError):
            await backend.remove("hl.txt")
        assert await self._snapshot(backend, outside) == before  # the outside files: unread, unchanged

    async def test_fifo_is_refused_not_waited_on(self, backend: Backend) -> None:
        made = await backend.execute_code("import os; os.mkfifo('pipe'); os.makedirs('d'); os.mkfifo('d/pipe')")
        assert made.success, made
        for name, call in (("read_bytes", lambda: backend.read_bytes("pipe")),
                           ("copy", lambda: backend.copy("pipe", "pipe_copy")),
                           ("copy of a tree", lambda: backend.copy("d", "d_copy"))):
            try:
                await asyncio.wait_for(call(), self.fifo_bound)
            except SandboxError:
                continue  # the clear error the contract asks for
            except asyncio.TimeoutError:
                await _unblock_fifos(backend)
                pytest.fail(f"{name} on a FIFO hung for {self.fifo_bound:g}s instead of raising")
            if name == "read_bytes":
                pytest.fail("read_bytes on a FIFO returned instead of raising")
            copied = await backend.stat("pipe_copy" if name == "copy" else "d_copy/pipe")
            assert copied is None or not copied.is_directory, copied  # a tree copy may skip a FIFO
        assert (await backend.stat("pipe")) is not None  # the entries are listed, just not opened

    async def test_symlink_swap_race_never_reaches_outside(self, backend: Backend) -> None:
        outside = await self._outside_dir(backend, "race")
        await backend.write_bytes("d/f.txt", b"inside")
        await backend.write_bytes("g.txt", b"inside")
        stop = f"stop-{secrets.token_hex(4)}"
        swapper = asyncio.ensure_future(backend.execute_code(
            _SWAPPER.replace("OUT", repr(outside)).replace("STOP", repr(stop)), timeout=self.race_bound + 30))
        outcomes: collections.Counter[str] = collections.Counter()
        leaks: list[str] = []
        deadline = time.monotonic() + self.race_bound
        try:
            while time.monotonic() < deadline and not swapper.done():
                for path in ("d/f.txt", "g.txt"):
                    try:
                        data = await backend.read_bytes(path)
                    except SandboxError:
                        outcomes["refused"] += 1
                    else:
                        outcomes["read"] += 1
                        if data != b"inside":
                            leaks.append(f"read_bytes({path!r}) returned {data!r}")
                    with contextlib.suppress(SandboxError):
                        await backend.write_bytes(path, b"inside")
                    with contextlib.suppress(SandboxError):
                        await backend.copy(path, "copy.txt")
                        copied = await _read_or_empty(backend, "copy.txt")
                        if b"outside" in copied:
                            leaks.append(f"copy({path!r}) copied {copied!r}")
                    with contextlib.suppress(SandboxError):
                        for info in await backend.list_dir("d"):
                            if info.name != "f.txt":
                                leaks.append(f"list_dir('d') listed {info.path!r}")
                if leaks or (outcomes["read"] >= self.race_rounds and outcomes["refused"] >= self.race_rounds):
                    break
        finally:
            await backend.write_bytes(stop, b"")
            swapped = await swapper
        assert swapped.success, swapped
        assert "swaps" in swapped.stdout, swapped
        after = await self._snapshot(backend, outside)
        assert not leaks, leaks[:5]
        assert after == {"f.txt": "outside secret", "g.txt": "outside secret"}, after
        assert outcomes["read"], f"the race was not exercised: {dict(outcomes)}"
        assert outcomes["refused"], f"the race was not exercised: {dict(outcomes)}"


async def _read_or_empty(backend: Backend, path: str) -> bytes:
    try:
        return await backend.read_bytes(path)
    except SandboxError:
        return b""


async def _unblock_fifos(backend: Backend) -> None:
    """Open every FIFO of the test for writing and close it, so a reader stuck in open() goes on."""
    await backend.execute_code(
        "import os\nfor p in ('pipe', 'd/pipe'):\n    for _ in range(20):\n        try:\n"
        "            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))\n        except OSError:\n            pass\n",
        timeout=30)


#: makes a fresh directory outside the workspace (its parent, else /tmp) and prints its path
_MAKE_OUTSIDE = """
import json, os, tempfile
ws = os.path.realpath(os.getcwd())
for base in (os.path.dirname(ws), '/tmp', os.path.expanduser('~')):
    if base == ws or base.startswith(ws + os.sep):
        continue
    try:
        d = tempfile.mkdtemp(prefix='alphora-contract-outside-' + TAG + '-', dir=base)
    except OSError:
        continue
    print(json.dumps(d))
    break
else:
    raise SystemExit('no writable directory outside the workspace')
"""

#: links outside files into the workspace; prints true, or false if linking across is impossible
_PLANT_HARD_LINKS = """
import errno, json, os
d = OUT
for name, text in (('secret.txt', 'outside secret'), ('target.txt', 'outside target')):
    with open(os.path.join(d, name), 'w') as f:
        f.write(text)
try:
    os.link(os.path.join(d, 'secret.txt'), 'hl.txt')
    for name in ('hl_w.txt', 'hl_c.txt', 'hl_m.txt'):
        os.link(os.path.join(d, 'target.txt'), name)
except OSError as exc:
    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES):
        raise
    print(json.dumps(False))
else:
    print(json.dumps(True))
"""

#: swaps d/ and g.txt for symlinks to the outside directory and file until STOP appears
_SWAPPER = """
import os, shutil, time
out = OUT
for name in ('f.txt', 'g.txt'):
    with open(os.path.join(out, name), 'w') as f:
        f.write('outside secret')

def place(src, dst):
    # rename src to dst; if the file API recreated dst in between (a write makes parents), drop that
    for _ in range(1000):
        try:
            os.rename(src, dst)
            return
        except OSError:
            if os.path.islink(dst) or not os.path.isdir(dst):
                try:
                    os.unlink(dst)
                except FileNotFoundError:
                    pass
            else:
                shutil.rmtree(dst, ignore_errors=True)
    raise SystemExit('could not place ' + dst)

n = 0
end = time.monotonic() + 300
while not os.path.exists(STOP) and time.monotonic() < end:
    os.rename('d', 'd_real')
    os.symlink(out, 'd_tmp')
    place('d_tmp', 'd')
    os.symlink(os.path.join(out, 'g.txt'), 'g_tmp')
    os.rename('g_tmp', 'g.txt')
    n += 1
    os.unlink('d')
    place('d_real', 'd')
    with open('g_tmp', 'w') as f:
        f.write('inside')
    os.rename('g_tmp', 'g.txt')
print('swaps', n)
"""
