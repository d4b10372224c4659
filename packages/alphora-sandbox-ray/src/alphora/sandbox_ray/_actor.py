"""The actor that owns one inner sandbox on a Ray node (runs in a Ray worker process there).

Results cross the wire as tagged tuples: ``("ok", value)`` or ``("err", class name, message,
path)``. alphora errors are rebuilt by name on the driver (:func:`raise_remote`), so a
``FileNotFoundError`` raised on the node is a ``FileNotFoundError`` for the caller, without
relying on pickling exception objects with keyword-only constructors.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from alphora.sandbox import errors as _errors
from alphora.sandbox.backend import Backend, ProcessRequest, default_base_path, iterate_output
from alphora.sandbox.errors import BackendError, StorageNotFoundError
from alphora.sandbox.plugins import get_registry
from alphora.sandbox.session import PythonSession
from alphora.sandbox.storage.base import Storage, StorageConfig
from alphora.sandbox.storage.factory import StorageFactory
from alphora.sandbox.storage.persist import restore_workspace, save_workspace
from alphora.sandbox.types import FileInfo, ResourceLimits, SecurityPolicy

__all__ = ["SandboxActor", "raise_remote"]

Tagged = tuple[Any, ...]

#: calls after which the workspace may have changed (saved when ``checkpoint_every_call``)
_MUTATING = frozenset({"write_bytes", "remove", "copy", "move", "mkdir"})


def _err(exc: BaseException) -> Tagged:
    path = getattr(exc, "path", None)
    message = getattr(exc, "message", None) or str(exc)
    return ("err", type(exc).__name__, message, path if isinstance(path, str) else None)


def raise_remote(tagged: Tagged, sandbox_id: str) -> Any:
    """The value of an ``("ok", value)`` answer; raise the alphora error an ``("err", …)`` names."""
    if tagged[0] == "ok":
        return tagged[1]
    _, name, message, path = tagged
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, _errors.SandboxError):
        if issubclass(cls, _errors.FileSystemError):
            raise cls(message, path=path, sandbox_id=sandbox_id)
        raise cls(message, sandbox_id=sandbox_id)
    if name == "NotImplementedError":
        raise NotImplementedError(message)
    raise BackendError(f"{name} in the sandbox's actor: {message}", sandbox_id=sandbox_id)


class _Files:
    """The file API persistence needs (``storage.persist``), over the inner backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.sandbox_id = backend.sandbox_id

    async def list_files(self, path: str = "", recursive: bool = False, pattern: str | None = None) -> list[FileInfo]:
        return await self.backend.list_dir(path, recursive)

    async def read_file_bytes(self, path: str) -> bytes:
        return await self.backend.read_bytes(path)

    async def write_file_bytes(self, path: str, content: bytes) -> None:
        await self.backend.write_bytes(path, content)


class SandboxActor:
    """One inner sandbox on this node. Every method is async (Ray runs them concurrently on the
    actor's event loop), so a long run does not block file calls or a second run."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)
        self.sandbox_id: str = spec["sandbox_id"]
        self.inner: Backend | None = None
        self.sessions: dict[int, PythonSession] = {}
        self._next_session = 0
        self.storage: Storage | None = None
        self.prefix: str = spec.get("storage_prefix") or f"ray-sandboxes/{self.sandbox_id}"
        self.guard: subprocess.Popen[bytes] | None = None

    def _start_guard(self) -> None:
        """The child that cleans the inner sandbox up if this worker dies (see ``_guard``)."""
        self.guard = subprocess.Popen(
            [sys.executable, "-m", "alphora.sandbox_ray._guard", str(os.getpid()), self.sandbox_id, self.spec["inner"]],
            stdin=subprocess.PIPE,
            start_new_session=True,  # not in the worker's process group, which may be killed with it
        )
        self.guard.wait(30)  # the launcher exits at once; the guard itself has forked away (see _guard)

    def _poke(self, what: bytes = b"\n") -> None:
        """Tell the guard to look at the process tree again now (``q``: stand down)."""
        if self.guard is not None and self.guard.stdin is not None:
            with contextlib.suppress(OSError):
                self.guard.stdin.write(what)
                self.guard.stdin.flush()

    # -- lifecycle -------------------------------------------------------------------------------

    def _node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def _workspace(self) -> Path:
        base = self.spec.get("node_base_path")
        parent = Path(base).expanduser() if base else default_base_path() / "ray" / self._node_id()[:16]
        return parent / self.sandbox_id

    async def start(self, restore: bool) -> Tagged:
        """Build the inner sandbox, restore its workspace from the storage (when there is one and
        something is saved), start it. Returns where it runs."""
        try:
            cls = get_registry().backend(self.spec["inner"])
            self.inner = cls(
                self.sandbox_id,
                self._workspace(),
                resource_limits=self.spec.get("resource_limits") or ResourceLimits(),
                security_policy=self.spec.get("security_policy") or SecurityPolicy(),
                options=dict(self.spec.get("inner_options") or {}),
            )
            storage_cfg = self.spec.get("storage")
            if storage_cfg is not None:
                cfg = storage_cfg if isinstance(storage_cfg, StorageConfig) else StorageConfig(**storage_cfg)
                self.storage = StorageFactory.create(cfg)
                await self.storage.connect()
            self._start_guard()
            await self.inner.initialize()
            restored: list[str] = []
            if self.storage is not None and restore:
                try:
                    restored = await restore_workspace(_Files(self.inner), self.storage, self.prefix)
                except StorageNotFoundError:
                    restored = []
            await self.inner.start()
            self._poke()
            return (
                "ok",
                {
                    "node_id": self._node_id(),
                    "pid": os.getpid(),
                    "workspace": str(self.inner.workspace_path),
                    "probe_python": self.inner.probe_python,
                    "restored": restored,
                },
            )
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def checkpoint(self) -> Tagged:
        try:
            if self.storage is None or self.inner is None:
                return ("ok", None)
            exclude = tuple(self.inner.internal_paths)
            return ("ok", await save_workspace(_Files(self.inner), self.storage, self.prefix, exclude=exclude))
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def _after_change(self) -> None:
        if self.storage is not None and self.spec.get("checkpoint_every_call", True):
            tagged = await self.checkpoint()
            if tagged[0] != "ok":
                raise BackendError(f"saving the workspace failed: {tagged[2]}", sandbox_id=self.sandbox_id)

    async def shutdown(self, destroy: bool) -> Tagged:
        """Close sessions, save the workspace (stop) or drop the stored copy (destroy), then stop or
        destroy the inner sandbox."""
        try:
            for session in list(self.sessions.values()):
                await session.close()
            self.sessions.clear()
            if self.inner is None:
                return ("ok", None)
            if destroy:
                if self.storage is not None:
                    await self.storage.delete_prefix(self.prefix.strip("/") + "/")
                await self.inner.destroy()
                self._poke(b"q")
            else:
                if self.storage is not None:
                    saved = await self.checkpoint()
                    if saved[0] != "ok":
                        return saved
                await self.inner.stop()
            self._poke()
            return ("ok", None)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def resume(self) -> Tagged:
        """Start the inner sandbox again after shutdown(destroy=False): same node, same workspace."""
        try:
            if self.inner is None:
                raise _errors.SandboxNotRunningError(
                    "the sandbox's actor has not started it", sandbox_id=self.sandbox_id
                )
            await self.inner.start()
            self._poke()
            return ("ok", None)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    def ping(self) -> str:
        return self._node_id()

    # -- primitives ------------------------------------------------------------------------------

    async def call(self, method: str, *args: Any) -> Tagged:
        """A backend primitive without streaming: file calls, health, usage, pip, a plain run."""
        try:
            if self.inner is None:
                raise _errors.SandboxNotRunningError(
                    "the sandbox's actor has not started it", sandbox_id=self.sandbox_id
                )
            value = await getattr(self.inner, method)(*args)
            self._poke()
            if method in _MUTATING or method == "run":
                await self._after_change()
            return ("ok", value)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def run_stream(self, request: ProcessRequest) -> AsyncIterator[Tagged]:
        """A run whose output chunks are yielded as they arrive, then the result (a Ray
        streaming generator: the driver sees each chunk as soon as it is yielded)."""
        try:
            if self.inner is None:
                raise _errors.SandboxNotRunningError(
                    "the sandbox's actor has not started it", sandbox_id=self.sandbox_id
                )
            inner = self.inner
            self._poke()
            async for item in iterate_output(lambda cb: inner.run(request, cb)):
                yield ("ok", item)
            self._poke()
            await self._after_change()
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            yield _err(exc)

    # -- sessions --------------------------------------------------------------------------------

    async def session_open(self, name: str, env: Mapping[str, str] | None, cwd: str) -> Tagged:
        try:
            if self.inner is None:
                raise _errors.SandboxNotRunningError(
                    "the sandbox's actor has not started it", sandbox_id=self.sandbox_id
                )
            session = await self.inner.open_session(name, env=env, cwd=cwd)
            self._next_session += 1
            self.sessions[self._next_session] = session
            self._poke()
            return ("ok", self._next_session)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def session_fork(self, sid: int, name: str | None, copy_workspace: bool) -> Tagged:
        """Fork a session on the node (copy-on-write interpreter); the fork gets its own id."""
        try:
            session = self.sessions.get(sid)
            if session is None:
                raise BackendError("the session is closed", sandbox_id=self.sandbox_id)
            fork = await session.fork(name, copy_workspace=copy_workspace)
            self._next_session += 1
            self.sessions[self._next_session] = fork
            self._poke()
            return ("ok", (self._next_session, fork.name))
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def session_call(self, sid: int, method: str, *args: Any) -> Tagged:
        try:
            session = self.sessions.get(sid)
            if session is None:
                raise BackendError("the session is closed", sandbox_id=self.sandbox_id)
            value = await getattr(session, method)(*args)
            self._poke()
            if method == "close":
                self.sessions.pop(sid, None)
            elif method == "run":
                await self._after_change()
            return ("ok", value)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            return _err(exc)

    async def session_stream(self, sid: int, code: str, timeout: float | None) -> AsyncIterator[Tagged]:
        try:
            session = self.sessions.get(sid)
            if session is None:
                raise BackendError("the session is closed", sandbox_id=self.sandbox_id)
            async for item in iterate_output(lambda cb: session.run(code, timeout, on_output=cb)):
                yield ("ok", item)
            await self._after_change()
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            yield _err(exc)
