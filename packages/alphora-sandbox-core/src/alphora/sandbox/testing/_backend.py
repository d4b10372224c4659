"""BackendContractTests: what every execution backend must do."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..backend import Backend, OutputChunk, ProcessRequest
from ..errors import FileNotFoundError as SandboxFileNotFoundError
from ..errors import PathTraversalError
from ..session import PythonSession
from ..types import ExecutionStatus, FileType
from ._backend_files import HostileEntryCases

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


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class BackendContractTests(HostileEntryCases):
    """Subclass, implement :meth:`make_backend`, and every test runs against your backend.

    The hostile-entry cases (and their knobs ``fifo_bound``, ``race_bound``, ``race_rounds``) come
    from :class:`~._backend_files.HostileEntryCases`."""

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
        request = self.req(
            backend,
            "python",
            code="import sys\nfor _ in range(64): sys.stdout.write('x' * 65536)\n",
            max_output=100_000,
        )
        r = await backend.run(request)
        assert r.stdout_truncated
        assert len(r.stdout.encode()) <= 100_000 + 1024

    async def test_non_utf8_output(self, backend: Backend) -> None:
        r = await backend.execute_code("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')")
        assert r.stdout.startswith("ok ")
        assert r.stdout.endswith(" end\n")

    async def test_streaming_callback(self, backend: Backend) -> None:
        chunks: list[OutputChunk] = []
        r = await backend.execute_code(
            "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.05)", on_output=chunks.append
        )
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
        await backend.execute_shell(
            "ln -s /etc etc_link && ln -s /etc/hostname host_link && mkdir -p d && ln -s .. d/up"
        )
        for path in ("etc_link/passwd", "host_link", "d/up/x"):
            with pytest.raises(PathTraversalError):
                await backend.read_bytes(path)
        with pytest.raises(PathTraversalError):
            await backend.write_bytes("etc_link/evil", b"x")

    async def test_streamed_write_and_read(self, backend: Backend) -> None:
        """write_stream/read_stream: any chunking in, pieces of at most ``chunk_size`` out."""
        parts = [b"a" * 1000, b"", bytes(range(256)) * 40, b"z"]

        async def chunks() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        await backend.write_stream("streamed/dir/s.bin", chunks())
        whole = b"".join(parts)
        info = await backend.stat("streamed/dir/s.bin")
        assert info is not None
        assert info.size == len(whole)
        pieces = [p async for p in backend.read_stream("streamed/dir/s.bin", 4096)]
        assert b"".join(pieces) == whole
        assert max(len(p) for p in pieces) <= 4096
        assert len(pieces) >= len(whole) // 4096
        await backend.write_stream("streamed/empty", chunks_of(b""))
        assert [p async for p in backend.read_stream("streamed/empty")] in ([], [b""])
        assert await backend.read_bytes("streamed/empty") == b""

    async def test_streamed_write_is_atomic(self, backend: Backend) -> None:
        """A source that fails half-way leaves the old file as it was and no temp file beside it;
        a read left early leaves the backend working."""
        await backend.write_bytes("atomic/keep.txt", b"old")

        async def failing() -> AsyncIterator[bytes]:
            yield b"new" * 1000
            raise RuntimeError("the source failed")

        with pytest.raises(RuntimeError, match="the source failed"):
            await backend.write_stream("atomic/keep.txt", failing())
        assert await backend.read_bytes("atomic/keep.txt") == b"old"
        assert [i.path for i in await backend.list_dir("atomic")] == ["atomic/keep.txt"]
        await backend.write_bytes("atomic/big.bin", b"x" * 300_000)
        async for _ in backend.read_stream("atomic/big.bin", 1000):
            break
        assert await backend.read_bytes("atomic/keep.txt") == b"old"

    async def test_streamed_transfers_refuse_what_the_file_api_refuses(self, backend: Backend) -> None:
        await backend.execute_shell("ln -s /etc etc_link && ln -s /etc/hostname host_link")
        with pytest.raises(SandboxFileNotFoundError):
            async for _ in backend.read_stream("nope.bin"):
                pass
        for path in ("etc_link/passwd", "host_link"):
            with pytest.raises(PathTraversalError):
                async for _ in backend.read_stream(path):
                    pass
        with pytest.raises(PathTraversalError):
            await backend.write_stream("etc_link/evil", chunks_of(b"x"))

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
            started = await py.run(
                marker + "import subprocess\n"
                "server = subprocess.Popen([MARKER + '-server', '300'], executable='sleep')\n"
                "open('cell.pids', 'w').write(str(server.pid))"
            )
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
