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

The public contract for a backend author is this module: :class:`Backend` (every attribute the
facade reads is declared on it, with its meaning), :class:`ProcessRequest`, the output helpers,
:func:`fileinfo_from_stat` / :func:`entry_to_fileinfo` to build :class:`~alphora.sandbox.types.FileInfo`,
:func:`map_fs_error` / :func:`map_os_error` to turn OS errors into the errors the facade expects,
:func:`minimal_env` for the base environment of user code, and
:class:`alphora.sandbox.testing.BackendContractTests` to prove it. Register the class with
``alphora.sandbox.hookimpl`` (see docs/plugins.md).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import os
import stat as _stat
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from .errors import BackendError, ConfigurationError, FileNotFoundError, FileSystemError, PathTraversalError
from .rules import network_access, resolve_timeout
from .runner.protocol import CHUNK
from .runner.safefs import rmtree
from .types import Attachment, ExecutionResult, FileInfo, ResourceLimits, ResourceUsage, SecurityPolicy

if TYPE_CHECKING:
    from .session import PythonSession

__all__ = [
    "CA_BUNDLE_VARS",
    "FILE_CHUNK",
    "HOST_PACKAGE_ENV",
    "PROXY_VARS",
    "STANDARD_PATH",
    "Backend",
    "OutputCallback",
    "OutputChunk",
    "ProcessRequest",
    "build_request",
    "default_base_path",
    "emit",
    "entry_to_fileinfo",
    "fileinfo_from_stat",
    "iterate_output",
    "map_fs_error",
    "map_os_error",
    "minimal_env",
]

#: host variables that configure pip's index, certificates and proxy; passed to pip inside a
#: backend whose :attr:`Backend.pip_host_env` is True (its pip runs on the host's network)
HOST_PACKAGE_ENV: tuple[str, ...] = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_FIND_LINKS",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


#: the default size of the pieces a streamed file read yields (the runner protocol's binary frame)
FILE_CHUNK = CHUNK


def default_base_path() -> Path:
    """Per-user default parent of sandbox workspaces: ``$ALPHORA_SANDBOX_HOME`` or XDG data dir."""
    env = os.environ.get("ALPHORA_SANDBOX_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "alphora-sandbox" / "sandboxes"


#: the ``PATH`` of user code unless the environment knows better (an image's own PATH)
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


#: the variables that name a CA bundle, for the clients that read one (OpenSSL/Python, requests,
#: pip, curl, Node)
CA_BUNDLE_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
#: the variables ordinary clients (pip, requests, httpx, urllib, curl) take their proxy from
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def minimal_env(
    workspace: str,
    *,
    home: str | None = None,
    tmpdir: str | None = None,
    path: str | None = None,
    proxy: str | None = None,
    ca_bundle: str | None = None,
) -> dict[str, str]:
    """The minimal safe base environment of user code: ``PATH`` (default: the standard one),
    ``HOME`` (default: the workspace), UTF-8 locale, ``TMPDIR`` (default: ``<workspace>/.tmp``) and
    unbuffered Python. Nothing comes from the host's environment; :attr:`ProcessRequest.env` is
    added on top. The one place this environment is written: every built-in backend starts from it.

    ``proxy`` (a sandbox with an egress policy: the URL of the in-sandbox forwarder to the egress
    proxy) sets :data:`PROXY_VARS` and empties ``NO_PROXY``/``no_proxy``, so every destination,
    loopback names included, goes through the proxy; ``ca_bundle`` (the path of a CA bundle inside
    the sandbox) sets :data:`CA_BUNDLE_VARS`."""
    env = {
        "PATH": path or STANDARD_PATH,
        "HOME": home or workspace,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": tmpdir or f"{workspace}/.tmp",
        "PYTHONUNBUFFERED": "1",
    }
    if proxy:
        env.update(dict.fromkeys(PROXY_VARS, proxy))
        env.update(NO_PROXY="", no_proxy="")
    if ca_bundle:
        env.update(dict.fromkeys(CA_BUNDLE_VARS, ca_bundle))
    return env


def map_fs_error(etype: str, msg: str, path: str | None, sandbox_id: str | None = None) -> Exception:
    """The alphora error for a failed file operation, by the *name* of the exception class (so it
    works for errors that crossed a wire): ``PathEscape`` (safefs' refusal of a symlink, hard link,
    FIFO or device) → :class:`~alphora.sandbox.errors.PathTraversalError`; ``FileNotFoundError`` →
    :class:`~alphora.sandbox.errors.FileNotFoundError`; other OS and value errors →
    :class:`~alphora.sandbox.errors.FileSystemError`; anything else →
    :class:`~alphora.sandbox.errors.BackendError`. Raise what it returns."""
    if etype == "PathEscape":
        return PathTraversalError(f"path refused: {msg}", path=path, sandbox_id=sandbox_id)
    if etype == "FileNotFoundError":
        return FileNotFoundError(f"not found in the workspace: {path}", path=path, sandbox_id=sandbox_id)
    if etype in (
        "IsADirectoryError",
        "NotADirectoryError",
        "FileExistsError",
        "TooLarge",
        "PermissionError",
        "OSError",
        "ValueError",
        "TypeError",
    ):
        return FileSystemError(f"{msg}: {path}" if path else msg, path=path, sandbox_id=sandbox_id)
    return BackendError(f"{etype}: {msg}", sandbox_id=sandbox_id)


def map_os_error(exc: BaseException, path: str | None, sandbox_id: str | None = None) -> Exception:
    """:func:`map_fs_error` for an exception object: ``raise map_os_error(exc, rel, sandbox_id) from exc``.
    OSError subclasses it does not name (``BlockingIOError``, ``InterruptedError`` …) count as ``OSError``."""
    etype = type(exc).__name__
    if isinstance(exc, OSError) and etype not in _NAMED_OS_ERRORS:
        etype = "OSError"
    msg = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return map_fs_error(etype, msg, path, sandbox_id)


_NAMED_OS_ERRORS = frozenset(
    {
        "PathEscape",
        "TooLarge",
        "FileNotFoundError",
        "IsADirectoryError",
        "NotADirectoryError",
        "FileExistsError",
        "PermissionError",
    }
)


def entry_to_fileinfo(e: Mapping[str, Any]) -> FileInfo:
    """A :class:`~alphora.sandbox.types.FileInfo` from a safefs entry dict (``name``, ``path``,
    ``size``, ``mode``, ``mtime``, ``is_dir``, ``is_symlink``), as safefs' ``stat``/``listdir`` and
    the runner return them."""
    mode = int(e.get("mode", 0)) | (
        _stat.S_IFDIR if e.get("is_dir") else _stat.S_IFLNK if e.get("is_symlink") else _stat.S_IFREG
    )
    mtime = e.get("mtime")
    return FileInfo(
        name=e["name"],
        path=e["path"],
        size=int(e.get("size", 0)),
        is_directory=bool(e.get("is_dir")),
        modified_time=datetime.fromtimestamp(mtime, timezone.utc) if mtime is not None else None,
        permissions=_stat.filemode(mode),
    )


def fileinfo_from_stat(path: str, st: os.stat_result) -> FileInfo:
    """A :class:`~alphora.sandbox.types.FileInfo` for the workspace-relative ``path`` from an
    ``os.stat_result`` (take it with ``os.lstat``/``os.fstat``, never a following ``os.stat``)."""
    return entry_to_fileinfo(
        {
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "size": st.st_size,
            "mode": _stat.S_IMODE(st.st_mode),
            "mtime": st.st_mtime,
            "is_dir": _stat.S_ISDIR(st.st_mode),
            "is_symlink": _stat.S_ISLNK(st.st_mode),
        }
    )


@attrs.frozen(kw_only=True)
class OutputChunk:
    """A piece of output streamed while a call runs. A session cell's rich output (``display()``,
    a figure, a rich trailing value) comes as a chunk on the ``display`` stream: ``text`` is empty
    and ``attachments`` holds the output in each of its MIME types (see docs/rich-outputs.md)."""

    stream: Literal["stdout", "stderr", "display"]
    text: str
    attachments: tuple[Attachment, ...] = ()


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
    (build requests with :func:`build_request` to get a sandbox's own). ``keep_background``: True
    (default) keeps what the call leaves running in the background (a server for the next call) —
    except a leftover tree that hits the process limit or keeps forking, which is killed; False
    kills everything the call leaves when its main process exits (docs/limits-and-policy.md).
    """

    kind: Literal["python", "file", "shell", "argv"]
    code: str = ""
    argv: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    env: Mapping[str, str] = attrs.field(factory=dict)
    cwd: str = ""
    timeout: float = _DEFAULT_LIMITS.timeout_seconds
    max_output: int = _DEFAULT_LIMITS.max_output_size
    stdin: bytes | None = None
    keep_background: bool = True


def build_request(
    kind: Any, limits: ResourceLimits, *, timeout: Any = None, env: Mapping[str, str] | None = None, **kw: Any
) -> ProcessRequest:
    """The one request builder of a call (the facade's and the backends' template methods): the
    timeout through :func:`~alphora.sandbox.rules.resolve_timeout` (None: ``limits.timeout_seconds``),
    the output cap from ``limits``, ``env`` as given."""
    return ProcessRequest(
        kind=kind,
        timeout=resolve_timeout(timeout, limits),
        max_output=limits.max_output_size,
        env=dict(env or {}),
        **kw,
    )


class Backend(abc.ABC):
    """Base class of execution backends. Subclass it, implement the abstract primitives, register
    the class with the ``sandbox_register_backends`` hook (``from alphora.sandbox import hookimpl``)
    and run :class:`alphora.sandbox.testing.BackendContractTests` against it.

    The facade (``Sandbox``, the tools, the manager, workspace persistence) uses a backend only
    through what is declared here: the class attributes below, :attr:`sandbox_id`,
    :attr:`workspace_path`, :attr:`resource_limits`, :attr:`security_policy`, :attr:`options`, and
    the methods. File primitives raise :class:`~alphora.sandbox.errors.FileNotFoundError`,
    :class:`~alphora.sandbox.errors.PathTraversalError` (a symlink, hard link, FIFO or device met on
    the way: refused, never followed) or :class:`~alphora.sandbox.errors.FileSystemError`
    (:func:`map_os_error` maps OS errors to them)."""

    #: the registry name (``local``, ``docker``, …)
    name: ClassVar[str] = ""
    # The attributes below may be set on the class or per instance (e.g. from ``options``).
    #: the Python interpreter inside the sandbox, as an argv[0]
    python: str = "python3"
    #: an interpreter inside the sandbox that sandbox code cannot replace, for checks the library
    #: runs there (the pool's reset fingerprint): local and isolated, the base interpreter their
    #: ``.venv`` was made from (outside the workspace; isolated: bound read-only). None: use
    #: :attr:`python` (Docker: the image's, in a fresh container)
    probe_python: str | None = None
    #: workspace entries (top-level names) the backend itself keeps: scratch dirs, package
    #: environments. ``Sandbox.list_files`` and the ``list_files`` tool hide them unless asked for by
    #: path, ``save_workspace`` leaves them out by default, and the ``reset_sandbox`` tool keeps
    #: them (emptying those also named in :attr:`scratch_paths`). The local backend: ``.tmp``, ``.venv``.
    internal_paths: tuple[str, ...] = ()
    #: the subset of :attr:`internal_paths` that is scratch space (e.g. the ``TMPDIR`` of user code):
    #: ``reset_sandbox`` empties these directories and keeps them
    scratch_paths: tuple[str, ...] = ()
    #: absolute POSIX names under which *user code* sees the workspace, other than
    #: :attr:`workspace_path` itself (Docker: ``("/workspace",)``). The facade accepts a path under one
    #: of them as naming the workspace (``read_file("/workspace/a.txt")`` is ``a.txt``).
    workspace_aliases: tuple[str, ...] = ()
    #: True if pip inside this backend reaches the network as the host does (the local backend), so
    #: the facade passes the host's index, certificate and proxy settings (:data:`HOST_PACKAGE_ENV`)
    #: to it; False (the default) for backends whose network is their own (containers, VMs)
    pip_host_env: bool = False
    #: the attrs class of this backend's options: ``SandboxConfig.backends[name]`` (a config file's
    #: section) is validated by it, field by field; None: options are passed on unchecked
    options_class: ClassVar[type[Any] | None] = None
    #: True if this backend enforces ``SecurityPolicy.egress`` outside the sandbox (isolated, Docker:
    #: no network but the library's egress proxy). A backend that does not is refused an egress
    #: policy (fails closed), unless its ``allow_unenforced_egress`` option is true: then it warns.
    enforces_egress: ClassVar[bool] = False

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
        #: keyword arguments for the sandbox's :class:`~alphora.sandbox.egress.EgressProxy` when this
        #: backend enforces an egress policy (``decide``, ``audit``, ``resolver``,
        #: ``upstream_ssl_context``); the facade sets ``decide`` to its registry's
        #: ``sandbox_egress_decide`` hook
        self.egress_proxy_options: dict[str, Any] = {}
        self._initialized = False
        self._check_egress()

    def _check_egress(self) -> None:
        """Refuse an egress policy this backend cannot enforce (see :attr:`enforces_egress`)."""
        if network_access(self.resource_limits, self.security_policy) != "egress" or self.enforces_egress:
            return
        opt_in = self.options.get("allow_unenforced_egress", False)
        if opt_in is True:
            import warnings

            warnings.warn(
                f"the {self.name or type(self).__name__!r} backend cannot enforce security_policy.egress: "
                f"sandbox {self.sandbox_id!r} reaches the network as this process does (see docs/egress.md)",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        if opt_in is not False:
            raise ConfigurationError(
                f"backend option allow_unenforced_egress must be true or false, got {opt_in!r}",
                field="allow_unenforced_egress",
                value=opt_in,
            )
        raise ConfigurationError(
            f"the {self.name or type(self).__name__!r} backend cannot enforce security_policy.egress (its code "
            f"reaches the network as this process does): use the 'isolated' or 'docker' backend, which send "
            f"the sandbox's traffic through the egress proxy only, or set the backend option "
            f"allow_unenforced_egress=True to run anyway with a warning (see docs/egress.md)",
            field="security_policy.egress",
            sandbox_id=self.sandbox_id,
        )

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
            raise FileSystemError(
                f"could not remove the workspace {str(self.workspace_path)!r}: {exc}",
                path=str(self.workspace_path),
                sandbox_id=self.sandbox_id,
            ) from exc

    @abc.abstractmethod
    async def health_check(self) -> bool:
        """True when the environment is up and answers."""

    # -- processes -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Run one request and return its :class:`~alphora.sandbox.types.ExecutionResult`.

        * **Environment**: exactly a minimal safe base (:func:`minimal_env` or your environment's
          equivalent) plus ``request.env``; never the host's environment. ``cwd`` is the
          workspace-relative ``request.cwd``; stdin is ``request.stdin`` or empty.
        * **Output**: stdout and stderr decoded as UTF-8 (undecodable bytes replaced), each capped at
          ``request.max_output`` bytes *while streaming* (``stdout_truncated``/``stderr_truncated``
          set when the cap cut); each piece is passed to ``on_output`` (:func:`emit`) as it arrives.
        * **Result**: ``SUCCESS`` with ``return_code == 0``; ``FAILED`` with the exit code
          (negative: the signal) and ``error`` naming it; user errors are data, never raised.
        * **Timeout**: after ``request.timeout`` seconds kill the *whole* process tree (everything
          the call started, grandchildren and ``setsid`` daemons included) and return
          ``status=TIMEOUT``, the stdout/stderr produced before the kill, ``return_code=None`` and an
          ``error`` like ``"execution timed out after 2s"``.
        * **Reaping**: every child is waited for. A zombie counts as alive: the contract suite checks
          with ``kill -0`` and ``/proc/<pid>``, so a killed tree must be reaped (by you, or by a
          subreaper/init inside your environment), not left ``<defunct>``.
        * **Errors**: raise :class:`~alphora.sandbox.errors.SandboxNotRunningError` when not started,
          :class:`~alphora.sandbox.errors.BackendError` when the environment itself fails (it died,
          cannot spawn); :class:`~alphora.sandbox.errors.SecurityViolationError` is the facade's job.
        """

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
    async def read_bytes(self, path: str) -> bytes:
        """The file's bytes. Must not follow a symlink anywhere in the path, read through a file
        with more than one hard link, or block on a FIFO/device: PathTraversalError instead."""

    @abc.abstractmethod
    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write atomically (temp file + rename), creating parent directories."""

    async def read_stream(self, path: str, chunk_size: int = FILE_CHUNK) -> AsyncIterator[bytes]:
        """The file's bytes in pieces of at most ``chunk_size`` bytes, with the guarantees of
        :meth:`read_bytes`. Override it to stream with bounded memory (every first-party backend
        does); this default reads the whole file with :meth:`read_bytes` and slices it."""
        data = await self.read_bytes(path)
        for i in range(0, len(data), chunk_size):
            yield data[i : i + chunk_size]

    async def write_stream(self, path: str, chunks: AsyncIterable[bytes]) -> None:
        """Write the concatenated ``chunks`` with the guarantees of :meth:`write_bytes` (atomic:
        nothing of it is visible until all of it is written; if ``chunks`` raises, the old file is
        left as it was). Override it to stream with bounded memory (every first-party backend
        does); this default collects the chunks and calls :meth:`write_bytes`."""
        parts = [bytes(c) async for c in chunks]
        await self.write_bytes(path, b"".join(parts))

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
