"""RunnerBackend: the base class of backends whose environment runs the alphora runner.

Writing a backend on the runner
-------------------------------

Subclass :class:`RunnerBackend` and implement one coroutine, :meth:`RunnerBackend.spawn_runner`:
start ``bootstrap_argv(self.python)`` inside your isolated environment with its stdin/stdout
connected to you, and return a :class:`~.transport.RunnerConnection` over that byte stream. The base
class then sends the runner's program (the bootstrap execs it), a ``hello`` frame (workspace, base
environment, limits), and implements every :class:`~alphora.sandbox.backend.Backend` primitive over
the connection: ``run`` (with streaming ``on_output``), the file primitives, usage, health,
``open_session`` and the async iterator :meth:`RunnerBackend.stream`. ``start()`` connects,
``stop()`` shuts the runner down (it kills everything it started) and closes the connection.

Extension points (public methods and attributes, each documented below): ``spawn_runner()``
(required), ``runner_workspace()``, ``runner_env()``, ``runner_limits()``, ``same_interpreter()``,
``stop_environment()``, ``restart_runner()``; attributes ``python``, ``send_source``, ``preload``,
``session_grace``, ``memory_cgroup``. Subclasses written against the underscore names of earlier
versions (``_spawn_runner`` …) keep working.

If the runner dies (EOF on the stream), every in-flight call returns a FAILED result whose
``error`` says so (sessions: ``state_lost=True``), and the next call starts a new runner.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import os
import signal
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from ..backend import (
    FILE_CHUNK,
    Backend,
    OutputCallback,
    OutputChunk,
    ProcessRequest,
    iterate_output,
    minimal_env,
)
from ..egress_bridge import EgressBridge
from ..errors import BackendError, SandboxNotRunningError
from ..rules import network_access
from ..session import PythonSession
from ..types import ExecutionResult, ExecutionStatus, FileInfo, ResourceUsage
from .client import OutputCollector, RunnerClient, RunnerError, RunnerLost, entry_to_fileinfo, map_fs_error
from .transport import RunnerConnection

__all__ = ["RunnerBackend", "error_text"]

_MiB = 1024 * 1024

#: underscore hook names of earlier versions -> the public extension points
_OLD_HOOK_NAMES = {
    "_spawn_runner": "spawn_runner",
    "_runner_workspace": "runner_workspace",
    "_runner_env": "runner_env",
    "_runner_limits": "runner_limits",
    "_same_interpreter": "same_interpreter",
    "_stop_environment": "stop_environment",
    "_restart_runner": "restart_runner",
}


def error_text(kind: str, rc: int | None, stderr: str) -> str:
    """The ``error`` of a failed call: the signal that killed it, the last line of a Python
    traceback, or the exit code."""
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


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class RunnerBackend(Backend):
    """A backend whose environment runs the alphora runner; see the module docstring for the extension points."""

    #: the environment's Python that runs the runner (a subclass sets its own, as a class or instance attribute)
    python: str = "python3"
    #: send the runner's source after spawning (the bootstrap execs it)
    send_source: bool = True
    #: modules the runner imports once so forked calls start warm
    preload: tuple[str, ...] = (
        "json",
        "re",
        "math",
        "random",
        "datetime",
        "collections",
        "itertools",
        "functools",
        "pathlib",
        "typing",
        "subprocess",
        "textwrap",
        "dataclasses",
        "decimal",
        "fractions",
        "statistics",
        "csv",
        "string",
        "hashlib",
        "copy",
        "pprint",
        "enum",
        "struct",
        "time",
        "uuid",
    )
    #: seconds a timed-out session call gets to stop after KeyboardInterrupt before a restart
    session_grace: float = 2.0
    #: the environment is a memory cgroup of its own, mounted at /sys/fs/cgroup (a container):
    #: ``get_resource_usage().memory_mb`` is then its usage, else the PSS of the runner's processes
    memory_cgroup: bool = False

    def __init__(self, sandbox_id: str, workspace_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kwargs)
        self._client: RunnerClient | None = None
        self._started = False
        #: counts runner (re)starts; a session opened on an earlier runner has lost its state
        self._generation = 0
        self._runner_lock = asyncio.Lock()
        self._pending_cancels: set[asyncio.Future[Any]] = set()
        #: the sandbox's egress proxy while its environment runs (see :meth:`start_egress`)
        self.egress: EgressBridge | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Subclasses written against the underscore names of earlier versions (``_spawn_runner``,
        ``_runner_env`` …) keep working: such an override is used as the public hook."""
        super().__init_subclass__(**kwargs)
        for old, new in _OLD_HOOK_NAMES.items():
            if old in cls.__dict__ and new not in cls.__dict__:
                setattr(cls, new, cls.__dict__[old])  # (ABCMeta then no longer counts it abstract)

    # -- extension points: what subclasses provide or may override --------------------------------

    @abc.abstractmethod
    async def spawn_runner(self) -> RunnerConnection:
        """Start ``bootstrap_argv(self.python)`` inside the environment with its stdin/stdout
        connected to this process and return a connection over that byte stream (a
        :class:`~.transport.ProcessConnection` for a local subprocess). Called by ``start()`` and
        whenever the runner has to be replaced (it died, or stopped answering)."""

    def runner_workspace(self) -> str | None:
        """The workspace path *as seen inside the environment* (``None``: the runner's cwd).
        Default: ``workspace_path``; Docker returns ``"/workspace"``."""
        return str(self.workspace_path)

    def runner_env(self) -> dict[str, str]:
        """The minimal base environment of user code inside the environment (a call's ``env`` is
        added to it; with an egress proxy running, its proxy and CA-bundle variables). Subclasses
        usually extend ``super().runner_env()``."""
        bridge = self.egress
        return minimal_env(
            self.runner_workspace() or "/tmp",
            proxy=bridge.proxy_url if bridge is not None else None,
            ca_bundle=bridge.ca_bundle if bridge is not None else None,
        )

    # -- egress (tiers that enforce SecurityPolicy.egress; see alphora.sandbox.egress_bridge) ----

    @property
    def egress_wanted(self) -> bool:
        """The sandbox has an egress policy (its network is the proxy only)."""
        return network_access(self.resource_limits, self.security_policy) == "egress"

    async def start_egress(self, *, owner: int | None = None, shared: bool = False) -> EgressBridge | None:
        """Start the egress proxy when the sandbox has an egress policy (before the runner starts;
        idempotent; it lives until :meth:`stop`). None when there is no policy."""
        policy = self.security_policy.egress
        if policy is None or not self.egress_wanted:
            return None
        if self.egress is None:
            self.egress = EgressBridge(
                policy, sandbox_id=self.sandbox_id, owner=owner, shared=shared, **self.egress_proxy_options
            )
        await self.egress.start()
        return self.egress

    async def stop_egress(self) -> None:
        bridge, self.egress = self.egress, None
        if bridge is not None:
            await bridge.aclose()

    def runner_limits(self) -> dict[str, int]:
        """The rlimits the runner applies to every call and session (keys: ``memory_bytes``,
        ``fsize_bytes``, ``nofile``, ``nproc``; 0 or missing: not set). See docs/runner.md."""
        rl = self.resource_limits
        return {
            "memory_bytes": rl.memory_mb * _MiB,
            "fsize_bytes": rl.disk_mb * _MiB,
            "nofile": rl.max_open_files,
            "nproc": rl.max_processes,
        }

    def same_interpreter(self) -> bool:
        """True if the runner's Python is this interpreter's version (the runner is then sent
        pre-compiled). Default False: the environment's python3 is unknown."""
        return False

    async def stop_environment(self) -> None:
        """Called by ``stop()`` after the runner is gone (e.g. stop a container). Default: nothing."""

    async def restart_runner(self) -> None:
        """Replace the runner (e.g. after switching ``self.python``); sessions lose their state."""
        async with self._runner_lock:
            if self._client is not None:
                await self._client.close()
                self._client = None
            if self._started:
                self._client = await self._connect()

    # The names of earlier versions, for callers (overrides are mapped by __init_subclass__). The
    # implementation used is the first one below the last class that overrides the old name, so an
    # old override's ``super()._runner_env()`` reaches the implementation it extends.
    def _hook(self, new: str) -> Any:
        old = "_" + new
        mro = type(self).__mro__
        start = max((i + 1 for i, k in enumerate(mro) if k is not RunnerBackend and old in k.__dict__), default=0)
        for klass in mro[start:]:
            if new in klass.__dict__:
                return klass.__dict__[new].__get__(self, type(self))
        raise AttributeError(new)  # pragma: no cover - RunnerBackend defines them all

    async def _spawn_runner(self) -> RunnerConnection:
        conn: RunnerConnection = await self._hook("spawn_runner")()
        return conn

    def _runner_workspace(self) -> str | None:
        ws: str | None = self._hook("runner_workspace")()
        return ws

    def _runner_env(self) -> dict[str, str]:
        env: dict[str, str] = self._hook("runner_env")()
        return env

    def _runner_limits(self) -> dict[str, int]:
        limits: dict[str, int] = self._hook("runner_limits")()
        return limits

    def _same_interpreter(self) -> bool:
        return bool(self._hook("same_interpreter")())

    async def _stop_environment(self) -> None:
        await self._hook("stop_environment")()

    async def _restart_runner(self) -> None:
        await self._hook("restart_runner")()

    # -- connection management -------------------------------------------------------------------

    async def _connect(self) -> RunnerClient:
        conn = await self.spawn_runner()
        client = RunnerClient(conn)
        try:
            await client.start(
                {
                    "workspace": self.runner_workspace(),
                    "env": self.runner_env(),
                    "limits": self.runner_limits(),
                    "preload": list(self.preload),
                    "memory_cgroup": self.memory_cgroup,
                    "egress": self.egress.runner_config() if self.egress is not None else None,
                },
                send_source=self.send_source,
                same_interpreter=self.same_interpreter(),
            )
        except BaseException as exc:
            diag = conn.diagnostics()
            await client.close()
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            raise BackendError(
                f"could not start the sandbox runner: {exc!r}" + (f" ({diag})" if diag else ""),
                sandbox_id=self.sandbox_id,
            ) from exc
        self._generation += 1
        return client

    async def _ready(self) -> RunnerClient:
        client = self._client
        if client is not None and client.alive:
            return client
        if not self._started:
            raise SandboxNotRunningError(f"backend {self.sandbox_id!r} is not started", sandbox_id=self.sandbox_id)
        async with self._runner_lock:
            if self._client is not None and self._client.alive:
                return self._client
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await self._client.close()
            self._client = await self._connect()
            return self._client

    async def start(self) -> None:
        await self.initialize()
        self._started = True
        await self._ready()

    async def stop(self) -> None:
        self._started = False
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        try:
            await self.stop_environment()
        finally:
            await self.stop_egress()

    async def health_check(self) -> bool:
        client = self._client
        if client is None or not client.alive:
            return False
        try:
            await client.request({"op": "ping"}, watchdog=5.0)
        except (BackendError, asyncio.TimeoutError, RunnerError):
            return False
        return True

    # -- processes -------------------------------------------------------------------------------

    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        client = await self._ready()
        msg: dict[str, Any] = {
            "op": "exec",
            "kind": request.kind,
            "code": request.code,
            "argv": list(request.argv),
            "env": dict(request.env),
            "cwd": request.cwd,
            "timeout": request.timeout,
            "max_output": request.max_output,
            "keep_background": request.keep_background,
        }
        if request.stdin:
            msg["stdin"] = base64.b64encode(request.stdin).decode()
        out = OutputCollector(on_output)
        rid: list[int] = []
        started = asyncio.get_running_loop().time()
        try:
            done = await client.request(msg, out, watchdog=request.timeout + 10.0, on_send=rid.append)
        except asyncio.CancelledError:
            if rid and client.alive:
                task = asyncio.ensure_future(self._cancel(client, rid[0]))
                self._pending_cancels.add(task)  # a strong reference until it is done
                task.add_done_callback(self._pending_cancels.discard)
            raise
        except RunnerLost as exc:
            return ExecutionResult(
                status=ExecutionStatus.FAILED,
                stdout=out.text("stdout"),
                stderr=out.text("stderr"),
                return_code=None,
                error=f"{exc} during the call; it is restarted on the next call",
                execution_time=asyncio.get_running_loop().time() - started,
            )
        except asyncio.TimeoutError:
            await self._abandon(client)
            return ExecutionResult(
                status=ExecutionStatus.TIMEOUT,
                stdout=out.text("stdout"),
                stderr=out.text("stderr"),
                return_code=None,
                error="the sandbox runner stopped answering; it was restarted",
                execution_time=asyncio.get_running_loop().time() - started,
            )
        except RunnerError as exc:
            raise BackendError(
                f"runner refused the request: {exc.etype}: {exc.msg}", sandbox_id=self.sandbox_id
            ) from None
        return self._result(request, done, out)

    def _result(self, request: ProcessRequest, done: Mapping[str, Any], out: OutputCollector) -> ExecutionResult:
        stdout, stderr = out.text("stdout"), out.text("stderr")
        rc = done.get("rc")
        if done.get("timed_out"):
            status, error = ExecutionStatus.TIMEOUT, f"execution timed out after {request.timeout:g}s"
        elif done.get("cancelled"):
            status, error = ExecutionStatus.CANCELLED, "cancelled"
        elif rc == 0:
            status, error = ExecutionStatus.SUCCESS, ""
        else:
            status, error = ExecutionStatus.FAILED, error_text(request.kind, rc, stderr)
        killed, reason = int(done.get("leftover_killed") or 0), str(done.get("leftover_reason") or "")
        if killed and reason != "keep_background=False":  # a fork bomb is not a server
            note = f"killed {killed} leftover processes that {reason} (a fork bomb is not a server)"
            if status is ExecutionStatus.SUCCESS:
                status, error = ExecutionStatus.FAILED, note
            else:
                error = f"{error}; {note}" if error else note
        return ExecutionResult(
            status=status,
            stdout=stdout,
            stderr=stderr,
            return_code=rc,
            execution_time=float(done.get("time", 0.0)),
            error=error,
            stdout_truncated=bool(done.get("stdout_truncated")),
            stderr_truncated=bool(done.get("stderr_truncated")),
            background_killed=killed,
            oom_killed=status is ExecutionStatus.FAILED and error.startswith("MemoryError"),
        )

    async def _cancel(self, client: RunnerClient, rid: int) -> None:
        with contextlib.suppress(Exception):
            await client.request({"op": "cancel", "target": rid}, watchdog=5.0)

    async def _abandon(self, client: RunnerClient) -> None:
        """The runner is wedged: drop it; the next call starts a fresh one."""
        async with self._runner_lock:
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
        from .session import RunnerSession

        session = RunnerSession(self, name, env=env, cwd=cwd)
        await session.open()
        return session

    # -- files (over the runner; subclasses may do it more directly) -----------------------------

    async def _fs(self, fn: str, **kw: Any) -> dict[str, Any]:
        client = await self._ready()
        try:
            return await client.request({"op": "fs", "fn": fn, **kw}, watchdog=120.0)
        except RunnerError as exc:
            raise map_fs_error(exc.etype, exc.msg, exc.path or kw.get("path"), self.sandbox_id) from None

    async def read_bytes(self, path: str) -> bytes:
        return b"".join([part async for part in self.read_stream(path)])

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self.write_stream(path, _one(data))

    async def read_stream(self, path: str, chunk_size: int = FILE_CHUNK) -> AsyncIterator[bytes]:
        """A ``get``: the runner sends the file in binary frames, a few ahead of what was taken."""
        client = await self._ready()
        try:
            async for part in client.download({"op": "get", "path": path}, chunk_size):
                yield part
        except RunnerError as exc:
            raise map_fs_error(exc.etype, exc.msg, exc.path or path, self.sandbox_id) from None

    async def write_stream(self, path: str, chunks: AsyncIterable[bytes]) -> None:
        """A ``put``: the chunks go to the runner in binary frames, into an atomic write."""
        client = await self._ready()
        try:
            await client.upload({"op": "put", "path": path}, chunks)
        except RunnerError as exc:
            raise map_fs_error(exc.etype, exc.msg, exc.path or path, self.sandbox_id) from None

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
            cpu_percent=float(res["cpu_percent"]),
            memory_mb=res["memory_bytes"] / _MiB,
            memory_percent=float(res["memory_percent"]),
            disk_mb=res["disk_bytes"] / _MiB,
            process_count=int(res["process_count"]),
        )
