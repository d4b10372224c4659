"""Host side of the runner: an asyncio client and :class:`RunnerBackend`.

Writing a backend on the runner (the subclass API)
---------------------------------------------------

Subclass :class:`RunnerBackend` and implement one coroutine, :meth:`RunnerBackend._spawn_runner`:
start ``bootstrap_argv(self.python)`` inside your isolated environment with its stdin/stdout
connected to you, and return a :class:`RunnerConnection` over that byte stream. The base class
then sends the runner's source (the bootstrap execs it), a ``hello`` frame (workspace, base
environment, limits), and implements every :class:`~alphora.sandbox.backend.Backend` primitive
over the connection: ``run`` (with streaming ``on_output``), the file primitives, usage, health,
``open_session`` and the async iterator :meth:`RunnerBackend.stream`. ``start()`` connects,
``stop()`` shuts the runner down (it kills everything it started) and closes the connection.

Hooks you may override:

* ``_runner_workspace()``: the workspace path *as seen inside the environment* (``None``: the
  runner's cwd). Docker returns ``"/workspace"``.
* ``_runner_env()``: the minimal base environment of user code inside the environment.
* ``_runner_limits()``: rlimits applied to every call (see docs/runner.md).
* ``_stop_environment()``: called by ``stop()`` after the runner is gone (e.g. stop a container).
* ``memory_cgroup`` (attribute): True if the environment is a container with a memory cgroup of
  its own at /sys/fs/cgroup; ``get_resource_usage()`` then reports that cgroup (docs/runner.md).
* ``send_source``: set False if your runner is started some other way (``python -m
  alphora.sandbox.runner.server``) and needs no bootstrap.

For a byte stream other than a local subprocess, subclass :class:`RunnerConnection` (``reader``
is an ``asyncio.StreamReader`` you feed; ``write``/``drain``/``close``), e.g. over an attached
Docker socket. :class:`ProcessConnection` wraps an ``asyncio.subprocess.Process``.

If the runner dies (EOF on the stream), every in-flight call returns a FAILED result whose
``error`` says so (sessions: ``state_lost=True``), and the next call starts a new runner.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import collections
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

from ..backend import (
    Backend,
    OutputCallback,
    OutputChunk,
    ProcessRequest,
    emit,
    entry_to_fileinfo,
    iterate_output,
    map_fs_error,
)
from ..errors import (
    BackendError,
    SandboxNotRunningError,
)
from ..rules import resolve_timeout
from ..session import PythonSession
from ..types import Attachment, ExecutionResult, ExecutionStatus, FileInfo, ResourceUsage
from . import source_frame

__all__ = [
    "ProcessConnection",
    "RunnerBackend",
    "RunnerClient",
    "RunnerConnection",
    "RunnerLost",
    "RunnerSession",
    "entry_to_fileinfo",
    "map_fs_error",
]

_MiB = 1024 * 1024
_MAX_FRAME = 1 << 30


class RunnerLost(BackendError):
    """The runner process ended (or its stream broke) while a request was in flight."""


class RunnerConnection(abc.ABC):
    """A byte stream to one started runner."""

    #: bytes from the runner's stdout
    reader: asyncio.StreamReader

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue bytes for the runner's stdin."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until queued bytes are handed to the stream."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the runner (closing its stdin makes it shut down; kill it if it lingers)."""

    def diagnostics(self) -> str:
        """Something useful when the runner died (its exit status, stderr tail)."""
        return ""


class ProcessConnection(RunnerConnection):
    """A runner that is a local subprocess (``asyncio.create_subprocess_exec`` with pipes)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.proc = proc
        self.reader = proc.stdout
        self._stdin = proc.stdin
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_task = asyncio.ensure_future(self._pump_stderr()) if proc.stderr is not None else None

    async def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(Exception):
            async for line in self.proc.stderr:
                self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def write(self, data: bytes) -> None:
        self._stdin.write(data)

    async def drain(self) -> None:
        await self._stdin.drain()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 3.0)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._stderr_task, 1.0)

    def diagnostics(self) -> str:
        rc = self.proc.returncode
        parts = []
        if rc is not None:
            parts.append(f"runner exited with {'signal ' + signal.Signals(-rc).name if rc < 0 else rc}")
        tail = [line for line in self._stderr_tail if line][-5:]
        if tail:
            parts.append("stderr: " + " | ".join(tail))
        return "; ".join(parts)


def encode(msg: Mapping[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return len(body).to_bytes(4, "big") + body


EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


class RunnerClient:
    """Multiplexes requests over one runner connection (ids tag every frame)."""

    def __init__(self, conn: RunnerConnection) -> None:
        self.conn = conn
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._write_lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self.alive = True
        self.lost_reason = ""
        self.info: dict[str, Any] = {}

    async def start(self, hello: Mapping[str, Any], send_source: bool = True,
                    same_interpreter: bool = False) -> dict[str, Any]:
        self._reader_task = asyncio.ensure_future(self._read_loop())
        if send_source:
            self.conn.write(source_frame(same_interpreter))
        self.info = await self.request({"op": "hello", **hello}, watchdog=30.0)
        return self.info

    async def _read_loop(self) -> None:
        reader = self.conn.reader
        try:
            while True:
                head = await reader.readexactly(4)
                size = int.from_bytes(head, "big")
                if size > _MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes: the runner's stream is corrupt")
                body = await reader.readexactly(size)
                msg = json.loads(body.decode("utf-8", "surrogatepass"))
                queue = self._pending.get(msg.get("id"))
                if queue is not None:
                    queue.put_nowait(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            self.lost_reason = "" if isinstance(exc, asyncio.IncompleteReadError) else repr(exc)
        finally:
            self.alive = False
            for queue in self._pending.values():
                queue.put_nowait({"ev": "lost"})

    async def send(self, msg: Mapping[str, Any]) -> None:
        data = encode(msg)
        async with self._write_lock:
            try:
                self.conn.write(data)
                await self.conn.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                self.alive = False
                raise RunnerLost(f"cannot write to the runner: {exc!r}") from exc

    def lost_message(self) -> str:
        diag = self.conn.diagnostics() or self.lost_reason
        return "the sandbox runner died" + (f" ({diag})" if diag else "")

    async def request(
        self,
        msg: Mapping[str, Any],
        on_event: EventHandler | None = None,
        watchdog: float | None = None,
        on_send: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Send a request; feed its intermediate frames to ``on_event``; return its final frame.

        Raises RunnerLost if the runner dies, asyncio.TimeoutError if ``watchdog`` seconds pass
        without the final frame, and the mapped exception for an ``error`` frame."""
        if not self.alive:
            raise RunnerLost(self.lost_message())
        rid = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[rid] = queue
        try:
            await self.send({**msg, "id": rid})
            if on_send is not None:
                on_send(rid)
            loop = asyncio.get_running_loop()
            deadline = None if watchdog is None else loop.time() + watchdog
            while True:
                if deadline is None:
                    ev = await queue.get()
                else:
                    ev = await asyncio.wait_for(queue.get(), max(deadline - loop.time(), 0.0))
                kind = ev.get("ev")
                if kind == "done":
                    return ev
                if kind == "error":
                    raise _RunnerError(ev)
                if kind == "lost":
                    raise RunnerLost(self.lost_message())
                if on_event is not None:
                    await on_event(ev)
        finally:
            self._pending.pop(rid, None)

    async def close(self) -> None:
        if self.alive:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.request({"op": "shutdown"}), 5.0)
        await self.conn.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self.alive = False


class _RunnerError(Exception):
    def __init__(self, ev: Mapping[str, Any]) -> None:
        super().__init__(ev.get("msg", ""))
        self.etype = str(ev.get("etype", "Error"))
        self.msg = str(ev.get("msg", ""))
        self.path = ev.get("path")


def _error_text(kind: str, rc: int | None, stderr: str) -> str:
    if rc is not None and rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    if kind in ("python", "file") and "Traceback (most recent call last):" in stderr:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return f"exit code {rc}"


class _Output:
    """Accumulates streamed chunks (already capped by the runner) and forwards them."""

    def __init__(self, on_output: OutputCallback | None) -> None:
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.on_output = on_output

    async def __call__(self, ev: dict[str, Any]) -> None:
        if ev.get("ev") != "out":
            return
        stream: Literal["stdout", "stderr"] = "stderr" if ev.get("s") == "stderr" else "stdout"
        text = str(ev.get("d", ""))
        self.parts[stream].append(text)
        await emit(self.on_output, OutputChunk(stream=stream, text=text))

    def text(self, stream: str) -> str:
        return "".join(self.parts[stream])


class RunnerBackend(Backend):
    """A backend whose environment runs the alphora runner; see the module docstring."""

    #: send the runner's source after spawning (the bootstrap execs it)
    send_source: bool = True
    #: modules the runner imports once so forked calls start warm
    preload: tuple[str, ...] = (
        "json", "re", "math", "random", "datetime", "collections", "itertools", "functools", "pathlib",
        "typing", "subprocess", "textwrap", "dataclasses", "decimal", "fractions", "statistics", "csv", "string",
        "hashlib", "copy", "pprint", "enum", "struct", "time", "uuid",
    )
    #: seconds a timed-out session call gets to stop after KeyboardInterrupt before a restart
    session_grace: float = 2.0
    #: the environment is a memory cgroup of its own, mounted at /sys/fs/cgroup (a container):
    #: ``get_resource_usage().memory_mb`` is then its usage, else the PSS of the runner's processes
    memory_cgroup: bool = False

    _client: RunnerClient | None = None
    _started: bool = False
    _generation: int = 0

    # -- what subclasses provide -----------------------------------------------------------------

    @abc.abstractmethod
    async def _spawn_runner(self) -> RunnerConnection:
        """Start ``bootstrap_argv(self.python)`` in the environment; return a connection to it."""

    def _runner_workspace(self) -> str | None:
        return str(self.workspace_path)

    def _runner_env(self) -> dict[str, str]:
        ws = self._runner_workspace() or "/tmp"
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": ws,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": f"{ws}/.tmp",
            "PYTHONUNBUFFERED": "1",
        }

    def _runner_limits(self) -> dict[str, int]:
        rl = self.resource_limits
        return {
            "memory_bytes": rl.memory_mb * _MiB,
            "fsize_bytes": rl.disk_mb * _MiB,
            "nofile": rl.max_open_files,
            "nproc": rl.max_processes,
        }

    def _same_interpreter(self) -> bool:
        """True if the runner's Python is this interpreter's version (the runner is then sent
        pre-compiled). Default False: the environment's python3 is unknown."""
        return False

    async def _stop_environment(self) -> None:
        """Called by stop() after the runner is gone."""

    # -- connection management -------------------------------------------------------------------

    async def _connect(self) -> RunnerClient:
        conn = await self._spawn_runner()
        client = RunnerClient(conn)
        try:
            await client.start(
                {"workspace": self._runner_workspace(), "env": self._runner_env(),
                 "limits": self._runner_limits(), "preload": list(self.preload), "memory_cgroup": self.memory_cgroup},
                send_source=self.send_source, same_interpreter=self._same_interpreter(),
            )
        except BaseException as exc:
            diag = conn.diagnostics()
            await client.close()
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise BackendError(f"could not start the sandbox runner: {exc!r}" + (f" ({diag})" if diag else ""),
                               sandbox_id=self.sandbox_id) from exc
        self._generation += 1
        return client

    def _lock(self) -> asyncio.Lock:
        lock: asyncio.Lock | None = self.__dict__.get("_runner_lock")
        if lock is None:
            lock = self.__dict__["_runner_lock"] = asyncio.Lock()
        return lock

    async def _ready(self) -> RunnerClient:
        client = self._client
        if client is not None and client.alive:
            return client
        if not self._started:
            raise SandboxNotRunningError(f"backend {self.sandbox_id!r} is not started", sandbox_id=self.sandbox_id)
        async with self._lock():
            if self._client is not None and self._client.alive:
                return self._client
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await self._client.close()
            self._client = await self._connect()
            return self._client

    async def _restart_runner(self) -> None:
        """Replace the runner (e.g. after switching ``self.python``); sessions lose their state."""
        async with self._lock():
            if self._client is not None:
                await self._client.close()
                self._client = None
            if self._started:
                self._client = await self._connect()

    async def start(self) -> None:
        await self.initialize()
        self._started = True
        await self._ready()

    async def stop(self) -> None:
        self._started = False
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        await self._stop_environment()

    async def health_check(self) -> bool:
        client = self._client
        if client is None or not client.alive:
            return False
        try:
            await client.request({"op": "ping"}, watchdog=5.0)
        except (BackendError, asyncio.TimeoutError, _RunnerError):
            return False
        return True

    # -- processes -------------------------------------------------------------------------------

    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        client = await self._ready()
        msg: dict[str, Any] = {
            "op": "exec", "kind": request.kind, "code": request.code, "argv": list(request.argv),
            "env": dict(request.env), "cwd": request.cwd, "timeout": request.timeout,
            "max_output": request.max_output,
        }
        if request.stdin:
            msg["stdin"] = base64.b64encode(request.stdin).decode()
        out = _Output(on_output)
        rid: list[int] = []
        started = asyncio.get_running_loop().time()
        try:
            done = await client.request(msg, out, watchdog=request.timeout + 10.0, on_send=rid.append)
        except asyncio.CancelledError:
            if rid and client.alive:
                pending: set[asyncio.Future[Any]] = self.__dict__.setdefault("_pending_cancels", set())
                task = asyncio.ensure_future(self._cancel(client, rid[0]))
                pending.add(task)  # a strong reference until it is done
                task.add_done_callback(pending.discard)
            raise
        except RunnerLost as exc:
            return ExecutionResult(status=ExecutionStatus.FAILED, stdout=out.text("stdout"), stderr=out.text("stderr"),
                                   return_code=None, error=f"{exc} during the call; it is restarted on the next call",
                                   execution_time=asyncio.get_running_loop().time() - started)
        except asyncio.TimeoutError:
            await self._abandon(client)
            return ExecutionResult(status=ExecutionStatus.TIMEOUT, stdout=out.text("stdout"), stderr=out.text("stderr"),
                                   return_code=None, error="the sandbox runner stopped answering; it was restarted",
                                   execution_time=asyncio.get_running_loop().time() - started)
        except _RunnerError as exc:
            raise BackendError(f"runner refused the request: {exc.etype}: {exc.msg}", sandbox_id=self.sandbox_id) from None
        return self._result(request, done, out)

    def _result(self, request: ProcessRequest, done: Mapping[str, Any], out: _Output) -> ExecutionResult:
        stdout, stderr = out.text("stdout"), out.text("stderr")
        rc = done.get("rc")
        if done.get("timed_out"):
            status, error = ExecutionStatus.TIMEOUT, f"execution timed out after {request.timeout:g}s"
        elif done.get("cancelled"):
            status, error = ExecutionStatus.CANCELLED, "cancelled"
        elif rc == 0:
            status, error = ExecutionStatus.SUCCESS, ""
        else:
            status, error = ExecutionStatus.FAILED, _error_text(request.kind, rc, stderr)
        return ExecutionResult(
            status=status, stdout=stdout, stderr=stderr, return_code=rc, execution_time=float(done.get("time", 0.0)),
            error=error, stdout_truncated=bool(done.get("stdout_truncated")),
            stderr_truncated=bool(done.get("stderr_truncated")),
            oom_killed=status is ExecutionStatus.FAILED and error.startswith("MemoryError"),
        )

    async def _cancel(self, client: RunnerClient, rid: int) -> None:
        with contextlib.suppress(Exception):
            await client.request({"op": "cancel", "target": rid}, watchdog=5.0)

    async def _abandon(self, client: RunnerClient) -> None:
        """The runner is wedged: drop it; the next call starts a fresh one."""
        async with self._lock():
            if self._client is client:
                self._client = None
        with contextlib.suppress(Exception):
            await client.close()

    def stream(self, request: ProcessRequest) -> AsyncIterator[OutputChunk | ExecutionResult]:
        """Yield OutputChunks while the request runs, then its ExecutionResult."""
        return iterate_output(lambda on_output: self.run(request, on_output))

    # -- sessions --------------------------------------------------------------------------------

    async def open_session(
        self, name: str = "default", *, env: Mapping[str, str] | None = None, cwd: str = ""
    ) -> PythonSession:
        """A stateful Python session; ``env`` is added to the base environment, ``cwd`` is its
        (workspace-relative) starting directory. Opening an existing name attaches to it."""
        session = RunnerSession(self, name, env=env, cwd=cwd)
        await session.open()
        return session

    # -- files (over the runner; subclasses may do it more directly) -----------------------------

    async def _fs(self, fn: str, **kw: Any) -> dict[str, Any]:
        client = await self._ready()
        try:
            return await client.request({"op": "fs", "fn": fn, **kw}, watchdog=120.0)
        except _RunnerError as exc:
            raise map_fs_error(exc.etype, exc.msg, exc.path or kw.get("path"), self.sandbox_id) from None

    async def read_bytes(self, path: str) -> bytes:
        res = await self._fs("read", path=path)
        return base64.b64decode(res["data"])

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._fs("write", path=path, data=base64.b64encode(data).decode())

    async def stat(self, path: str) -> FileInfo | None:
        entry = (await self._fs("stat", path=path)).get("entry")
        return entry_to_fileinfo(entry) if entry else None

    async def list_dir(self, path: str, recursive: bool = False) -> list[FileInfo]:
        res = await self._fs("list", path=path, recursive=recursive)
        return [entry_to_fileinfo(e) for e in res["entries"]]

    async def remove(self, path: str) -> bool:
        return bool((await self._fs("remove", path=path)).get("removed"))

    async def copy(self, source: str, dest: str) -> None:
        await self._fs("copy", src=source, dst=dest, path=source)

    async def move(self, source: str, dest: str) -> None:
        await self._fs("move", src=source, dst=dest, path=source)

    async def mkdir(self, path: str) -> None:
        await self._fs("mkdir", path=path)

    async def get_resource_usage(self) -> ResourceUsage:
        client = await self._ready()
        res = await client.request({"op": "usage"}, watchdog=30.0)
        return ResourceUsage(
            cpu_percent=float(res["cpu_percent"]), memory_mb=res["memory_bytes"] / _MiB,
            memory_percent=float(res["memory_percent"]), disk_mb=res["disk_bytes"] / _MiB,
            process_count=int(res["process_count"]),
        )


class RunnerSession(PythonSession):
    """A stateful Python session living in the runner (a long-lived forked interpreter)."""

    def __init__(self, backend: RunnerBackend, name: str = "default", *, env: Mapping[str, str] | None = None,
                 cwd: str = "") -> None:
        self.backend = backend
        self.name = name
        self.env = dict(env or {})
        self.cwd = cwd
        self._generation = -1
        self._closed = False
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        client = await self.backend._ready()
        await client.request({"op": "session_open", "name": self.name, "env": self.env, "cwd": self.cwd},
                             watchdog=30.0)
        self._generation = self.backend._generation

    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        timeout = resolve_timeout(timeout, self.backend.resource_limits)
        if self._closed:
            raise BackendError(f"session {self.name!r} is closed", sandbox_id=self.backend.sandbox_id)
        async with self._lock:
            lost = False
            client = await self.backend._ready()
            if self._generation != self.backend._generation:  # the runner was restarted meanwhile
                await self.open()
                lost = True
            out = _Output(on_output)
            msg = {"op": "session_run", "name": self.name, "code": code, "timeout": timeout,
                   "max_output": self.backend.resource_limits.max_output_size, "grace": self.backend.session_grace}
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                done = await client.request(msg, out, watchdog=timeout + self.backend.session_grace + 10.0)
            except RunnerLost as exc:
                return ExecutionResult(status=ExecutionStatus.FAILED, stdout=out.text("stdout"),
                                       stderr=out.text("stderr"), return_code=None, state_lost=True,
                                       error=f"{exc} during the call; the session's state was lost",
                                       execution_time=loop.time() - started)
            except asyncio.TimeoutError:
                await self.backend._abandon(client)
                return ExecutionResult(status=ExecutionStatus.TIMEOUT, stdout=out.text("stdout"),
                                       stderr=out.text("stderr"), return_code=None, state_lost=True,
                                       error="the sandbox runner stopped answering; it was restarted",
                                       execution_time=loop.time() - started)
            except _RunnerError as exc:
                raise BackendError(f"session {self.name!r}: {exc.msg}", sandbox_id=self.backend.sandbox_id) from None
        state_lost = lost or bool(done.get("state_lost"))
        error = str(done.get("error") or "")
        if done.get("timed_out"):
            status = ExecutionStatus.TIMEOUT
            killed = int(done.get("killed") or 0)
            if done.get("state_lost"):  # the runner says why: the cell ignored the interrupt, or it died
                error = f"execution timed out after {timeout:g}s; {error}"
            else:
                ended = f" after killing the {killed} process{'es' if killed > 1 else ''} it started" if killed else ""
                error = (f"execution timed out after {timeout:g}s (interrupted with KeyboardInterrupt{ended}; "
                         "the session's state is kept)")
        elif done.get("ok"):
            status = ExecutionStatus.SUCCESS
        else:
            status = ExecutionStatus.FAILED
        if lost and not error:
            error = "the sandbox runner was restarted before this call; the session's earlier state was lost"
        attachments = tuple(
            Attachment(mime_type=a["mime_type"], data=base64.b64decode(a["data"]), name=a.get("name", ""))
            for a in done.get("attachments") or ()
        )
        rc = done.get("rc")
        return ExecutionResult(
            status=status, stdout=out.text("stdout"), stderr=out.text("stderr"),
            return_code=(0 if status is ExecutionStatus.SUCCESS else (rc if rc is not None else 1)),
            execution_time=float(done.get("time", 0.0)), error=error, value=done.get("value"),
            attachments=attachments, state_lost=state_lost,
            stdout_truncated=bool(done.get("stdout_truncated")), stderr_truncated=bool(done.get("stderr_truncated")),
            oom_killed=error.startswith("MemoryError"),
        )

    async def reset(self) -> None:
        async with self._lock:
            client = await self.backend._ready()
            await client.request({"op": "session_close", "name": self.name}, watchdog=30.0)
            await self.open()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self.backend._client
        if client is not None and client.alive:
            with contextlib.suppress(Exception):
                await client.request({"op": "session_close", "name": self.name}, watchdog=30.0)

    def __repr__(self) -> str:
        return f"<RunnerSession {self.name!r} of {self.backend!r}>"
