"""An alphora-sandbox backend written from scratch (not a subclass of a built-in backend).

Processes are plain subprocesses in their own process group, with a clean environment
(:func:`~alphora.sandbox.backend.minimal_env`); the workspace is a directory on this machine,
accessed only through :mod:`alphora.sandbox.runner.safefs` (fd-relative, never following a
symlink, refusing hard links, FIFOs and devices). It registers itself as ``"example"``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from alphora.sandbox import hookimpl
from alphora.sandbox.backend import (
    Backend,
    OutputCallback,
    OutputChunk,
    ProcessRequest,
    emit,
    entry_to_fileinfo,
    map_os_error,
    minimal_env,
)
from alphora.sandbox.errors import BackendError, SandboxNotRunningError
from alphora.sandbox.runner import safefs
from alphora.sandbox.types import ExecutionResult, ExecutionStatus, FileInfo, ResourceUsage

__all__ = ["ExampleBackend", "sandbox_register_backends"]

T = TypeVar("T")


class ExampleBackend(Backend):
    """Each call is a fresh subprocess in the workspace; a timeout kills its process group."""

    name = "example"
    python = sys.executable
    #: the scratch directory user code gets as TMPDIR: hidden from listings, emptied on reset
    internal_paths = (".tmp",)
    scratch_paths = (".tmp",)

    def __init__(self, sandbox_id: str, workspace_path: Any = None, **kwargs: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kwargs)
        self._running = False
        self._groups: set[int] = set()  # process groups of calls in flight, killed by stop()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.initialize()
        await self._fs(safefs.mkdir, ".tmp")
        self._running = True

    async def stop(self) -> None:
        self._running = False
        for pid in list(self._groups):
            _signal(pid, signal.SIGTERM)  # each call's reaper ends its tree

    async def health_check(self) -> bool:
        return self._running and self.workspace_path.is_dir()

    # -- processes ---------------------------------------------------------------------------

    def _argv(self, request: ProcessRequest) -> list[str]:
        """The command under the reaper (``_reaper.py``), which kills and reaps the call's whole
        tree when the command ends or on SIGTERM: a zombie counts as alive (Backend.run)."""
        if request.kind == "python":
            cmd = [self.python, "-c", request.code]
        elif request.kind == "file":
            cmd = [self.python, *request.argv]
        elif request.kind == "shell":
            cmd = ["/bin/sh", "-c", request.code]
        else:
            cmd = list(request.argv)
        return [sys.executable, _REAPER, *cmd]

    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        if not self._running:
            raise SandboxNotRunningError(f"sandbox {self.sandbox_id!r} is not running", sandbox_id=self.sandbox_id)
        ws = str(self.workspace_path)
        env = {**minimal_env(ws), **request.env}  # never the host's environment
        cwd = os.path.join(ws, request.cwd) if request.cwd else ws
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(request), cwd=cwd, env=env, start_new_session=True,  # its own process group
                stdin=asyncio.subprocess.PIPE if request.stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise BackendError(f"could not start the process: {exc}", sandbox_id=self.sandbox_id) from exc
        self._groups.add(proc.pid)
        out = {"stdout": bytearray(), "stderr": bytearray()}
        cut = {"stdout": False, "stderr": False}

        async def pump(stream: asyncio.StreamReader, which: str) -> None:
            while chunk := await stream.read(65536):
                room = request.max_output - len(out[which])
                if len(chunk) > room:
                    chunk, cut[which] = chunk[:max(room, 0)], True
                if chunk:
                    out[which] += chunk
                    await emit(on_output, OutputChunk(stream=which,  # type: ignore[arg-type]
                                                      text=chunk.decode("utf-8", "replace")))

        if request.stdin is not None and proc.stdin is not None:
            proc.stdin.write(request.stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        assert proc.stderr is not None
        pumps = asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"), proc.wait())
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(pumps), request.timeout)
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            # finished, timed out or cancelled: the reaper kills and reaps the call's whole tree
            # (this example keeps no background processes between calls); SIGKILL to the group
            # if the reaper itself does not end in time
            if not pumps.done():
                _signal(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(pumps), 5)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    _killpg(proc.pid)
                    with _suppress():
                        await asyncio.wait_for(pumps, 5)
            self._groups.discard(proc.pid)
        rc = proc.returncode
        text = {k: v.decode("utf-8", "replace") for k, v in out.items()}
        if timed_out:
            status, error, rc = ExecutionStatus.TIMEOUT, f"execution timed out after {request.timeout:g}s", None
        elif rc == 0:
            status, error = ExecutionStatus.SUCCESS, ""
        else:
            status = ExecutionStatus.FAILED
            error = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        return ExecutionResult(status=status, stdout=text["stdout"], stderr=text["stderr"], return_code=rc,
                               error=error, execution_time=time.monotonic() - started,
                               stdout_truncated=cut["stdout"], stderr_truncated=cut["stderr"])

    # -- files: every one through safefs, errors mapped by the public helper -----------------------

    async def _fs(self, op: Callable[..., T], *args: Any, path: str | None = None) -> T:
        try:
            return await asyncio.to_thread(op, str(self.workspace_path), *args)
        except (OSError, ValueError) as exc:
            raise map_os_error(exc, path if path is not None else (str(args[0]) if args else None),
                               self.sandbox_id) from exc

    async def read_bytes(self, path: str) -> bytes:
        return await self._fs(safefs.read, path)

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._fs(safefs.write, path, data)

    async def stat(self, path: str) -> FileInfo | None:
        entry = await self._fs(safefs.stat, path)
        return entry_to_fileinfo(entry) if entry else None

    async def list_dir(self, path: str, recursive: bool = False) -> list[FileInfo]:
        return [entry_to_fileinfo(e) for e in await self._fs(safefs.listdir, path, recursive)]

    async def remove(self, path: str) -> bool:
        return await self._fs(safefs.remove, path)

    async def copy(self, source: str, dest: str) -> None:
        await self._fs(safefs.copy, source, dest)

    async def move(self, source: str, dest: str) -> None:
        await self._fs(safefs.move, source, dest)

    async def mkdir(self, path: str) -> None:
        await self._fs(safefs.mkdir, path)

    async def get_resource_usage(self) -> ResourceUsage:
        used = await self._fs(safefs.disk_usage)
        return ResourceUsage(disk_mb=used / (1024 * 1024), process_count=len(self._groups))


_REAPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper.py")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


@hookimpl
def sandbox_register_backends(register: Callable[..., None]) -> None:
    """The hook alphora-sandbox calls at start (the entry point names this module)."""
    register("example", ExampleBackend)
