"""The execution backend base class: the narrow waist between the Sandbox facade and isolation.

A backend implements *primitives* only: start/stop an isolated environment, run one process
request in it (with timeout, output cap, env, cwd, whole-tree kill), move bytes in and out of its
workspace, report usage and health. The spec's ``execute_code`` / ``execute_file`` /
``execute_shell`` are concrete template methods built on :meth:`Backend.run`.

Paths given to the file primitives are workspace-relative POSIX strings that
:func:`alphora.sandbox.pathguard.normalize` has already checked lexically (no NUL, no ``..``
escape, not absolute); ``""`` is the workspace root. Backends must still refuse symlinks and hard
links at open time (race-safe); :mod:`alphora.sandbox.runner.safefs` does that and every
first-party backend uses it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from .errors import FileSystemError
from .rules import resolve_timeout
from .runner.safefs import rmtree
from .types import ExecutionResult, FileInfo, ResourceLimits, ResourceUsage, SecurityPolicy

if TYPE_CHECKING:
    from .session import PythonSession

__all__ = [
    "Backend",
    "OutputCallback",
    "OutputChunk",
    "ProcessRequest",
    "build_request",
    "default_base_path",
    "emit",
    "iterate_output",
]


def default_base_path() -> Path:
    """Per-user default parent of sandbox workspaces: ``$ALPHORA_SANDBOX_HOME`` or XDG data dir."""
    env = os.environ.get("ALPHORA_SANDBOX_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "alphora-sandbox" / "sandboxes"


@attrs.frozen(kw_only=True)
class OutputChunk:
    """A piece of output streamed while a call runs."""

    stream: Literal["stdout", "stderr"]
    text: str


#: Called with each chunk as it arrives; may be a plain function or a coroutine function.
OutputCallback = Callable[[OutputChunk], "Awaitable[None] | None"]


async def emit(callback: OutputCallback | None, chunk: OutputChunk) -> None:
    """Deliver a chunk to a sync or async callback."""
    if callback is None:
        return
    res = callback(chunk)
    if inspect.isawaitable(res):
        await res


async def iterate_output(
    run: Callable[[OutputCallback], Awaitable[ExecutionResult]],
) -> AsyncIterator[OutputChunk | ExecutionResult]:
    """Turn a call that reports output through a callback into an async iterator: each
    :class:`OutputChunk` as it arrives, then the :class:`ExecutionResult` as the last item.
    Leaving the loop early cancels the call."""
    queue: asyncio.Queue[OutputChunk | ExecutionResult | BaseException] = asyncio.Queue()

    async def produce() -> None:
        try:
            queue.put_nowait(await run(queue.put_nowait))
        except BaseException as exc:  # noqa: BLE001 - delivered to the consumer
            queue.put_nowait(exc)

    task = asyncio.ensure_future(produce())
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, ExecutionResult):
                return
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


#: the call defaults of a request built without a sandbox's limits
_DEFAULT_LIMITS = ResourceLimits()


@attrs.frozen(kw_only=True)
class ProcessRequest:
    """One thing to run in the sandbox.

    ``kind``:
      * ``python``: ``code`` is Python source, run as ``python -c``-like ``__main__`` in a fresh process
      * ``file``:   ``argv[0]`` is a workspace-relative .py path, ``argv[1:]`` its arguments
      * ``shell``:  ``code`` is a ``/bin/sh -c`` command line
      * ``argv``:   ``argv`` is executed directly (no shell)
    ``env`` is the *complete* environment added on top of the backend's minimal safe base (the host's
    environment is never inherited). ``cwd`` is workspace-relative. ``max_output`` caps stdout and
    stderr each, in bytes, while they stream. Their defaults are :class:`ResourceLimits`'
    (build requests with :func:`build_request` to get a sandbox's own).
    """

    kind: Literal["python", "file", "shell", "argv"]
    code: str = ""
    argv: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    env: Mapping[str, str] = attrs.field(factory=dict)
    cwd: str = ""
    timeout: float = _DEFAULT_LIMITS.timeout_seconds
    max_output: int = _DEFAULT_LIMITS.max_output_size
    stdin: bytes | None = None


def build_request(kind: Any, limits: ResourceLimits, *, timeout: Any = None, env: Mapping[str, str] | None = None,
                  **kw: Any) -> ProcessRequest:
    """The one request builder of a call (the facade's and the backends' template methods): the
    timeout through :func:`~alphora.sandbox.rules.resolve_timeout` (None: ``limits.timeout_seconds``),
    the output cap from ``limits``, ``env`` as given."""
    return ProcessRequest(kind=kind, timeout=resolve_timeout(timeout, limits), max_output=limits.max_output_size,
                          env=dict(env or {}), **kw)


class Backend(abc.ABC):
    """Base class of execution backends. Subclass it, implement the abstract primitives, register
    the class with the ``sandbox_register_backends`` hook and run
    :class:`alphora.sandbox.testing.BackendContractTests` against it."""

    #: the registry name (``local``, ``docker``, …)
    name: ClassVar[str] = ""
    #: the Python interpreter inside the sandbox, as an argv[0]
    python: str = "python3"
    #: workspace entries the backend itself keeps (scratch dirs, environments); list_files hides
    #: them unless asked for by path
    internal_paths: ClassVar[tuple[str, ...]] = ()
    #: the attrs class of this backend's options: ``SandboxConfig.backends[name]`` (a config file's
    #: section) is validated by it, field by field; None: options are passed on unchecked
    options_class: ClassVar[type[Any] | None] = None

    def __init__(
        self,
        sandbox_id: str,
        workspace_path: str | os.PathLike[str] | None = None,
        *,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        options: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.workspace_path = Path(workspace_path) if workspace_path else default_base_path() / sandbox_id
        self.resource_limits = resource_limits or ResourceLimits()
        self.security_policy = security_policy or SecurityPolicy()
        self.options: dict[str, Any] = {**(options or {}), **extra}
        self._initialized = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Prepare what start() needs (workspace directory, images …). Idempotent."""
        if not self._initialized:
            self.workspace_path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._initialized = True

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the isolated environment. Called after initialize()."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop it and everything running in it. Idempotent; keeps the workspace."""

    async def destroy(self) -> None:
        """stop() and remove everything the backend created, the workspace included: a tree of any
        depth (iterative, fd-relative, never following a symlink); FileSystemError if any of it
        cannot be removed (never silently left behind)."""
        await self.stop()
        try:
            await asyncio.to_thread(rmtree, self.workspace_path)
        except OSError as exc:
            raise FileSystemError(f"could not remove the workspace {str(self.workspace_path)!r}: {exc}",
                                  path=str(self.workspace_path), sandbox_id=self.sandbox_id) from exc

    @abc.abstractmethod
    async def health_check(self) -> bool:
        """True when the environment is up and answers."""

    # -- processes -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Run one request in its own process group. On timeout, kill the whole tree and return a
        TIMEOUT result holding the output produced before the kill; never raise for user errors."""

    async def open_session(
        self, name: str = "default", *, env: Mapping[str, str] | None = None, cwd: str = ""
    ) -> PythonSession:
        """A stateful Python session (variables persist between calls); ``env`` is added to the
        base environment, ``cwd`` is its workspace-relative starting directory. Optional primitive."""
        raise NotImplementedError(f"backend {self.name!r} has no stateful sessions")

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        """argv prefix and extra env that run pip *inside the sandbox's own Python environment*.

        Package management never touches the host's environment: the local backends run on the
        workspace's own venv (made when they start) and return pip for that venv."""
        return [self.python, "-m", "pip"], {}

    # -- files (workspace-relative, already normalised) ------------------------------------------

    @abc.abstractmethod
    async def read_bytes(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write atomically (temp file + rename), creating parent directories."""

    @abc.abstractmethod
    async def stat(self, path: str) -> FileInfo | None:
        """FileInfo of the path, or None if it does not exist."""

    @abc.abstractmethod
    async def list_dir(self, path: str, recursive: bool = False) -> list[FileInfo]: ...

    @abc.abstractmethod
    async def remove(self, path: str) -> bool:
        """Delete a file or a directory tree. False if nothing was there."""

    @abc.abstractmethod
    async def copy(self, source: str, dest: str) -> None: ...

    @abc.abstractmethod
    async def move(self, source: str, dest: str) -> None: ...

    @abc.abstractmethod
    async def mkdir(self, path: str) -> None: ...

    # -- monitoring ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_resource_usage(self) -> ResourceUsage: ...

    # -- template methods (the spec's backend API) ------------------------------------------------

    def _request(self, kind: Any, *, timeout: float | None, env: Mapping[str, str] | None, **kw: Any) -> ProcessRequest:
        return build_request(kind, self.resource_limits, timeout=timeout, env=env, **kw)

    async def execute_code(
        self,
        code: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecutionResult:
        return await self.run(self._request("python", code=code, timeout=timeout, env=env), on_output)

    async def execute_file(
        self,
        file_path: str,
        args: Sequence[str] | None = None,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecutionResult:
        argv = (file_path, *(str(a) for a in (args or ())))
        return await self.run(self._request("file", argv=argv, timeout=timeout, env=env), on_output)

    async def execute_shell(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecutionResult:
        return await self.run(self._request("shell", code=command, timeout=timeout, env=env), on_output)

    async def execute_argv(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecutionResult:
        return await self.run(self._request("argv", argv=tuple(argv), timeout=timeout, env=env), on_output)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sandbox_id!r} at {str(self.workspace_path)!r}>"
