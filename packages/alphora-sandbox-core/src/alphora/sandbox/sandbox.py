"""The Sandbox facade: one object per isolated workspace, identical on every backend.

It owns what must not differ between backends: the status machine, security-policy checks, the
path guard, env vars, result shaping and package management. The backend (a plugin) only runs
processes and moves bytes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import checkpoint as _checkpoint
from ._files import FileMethods
from .backend import (
    Backend,
    OutputCallback,
    OutputChunk,
    ProcessRequest,
    build_request,
    default_base_path,
    iterate_output,
)
from .errors import (
    ConfigurationError,
    FileNotFoundError,
    SandboxAlreadyRunningError,
    SandboxError,
    SandboxNotRunningError,
)
from .packages import PackageMethods
from .plugins import PluginRegistry, get_registry
from .rules import name_key, resolve_timeout, validate_sandbox_id
from .security import CheckRequest, run_checks
from .session import PythonSession, check_figure_formats
from .types import (
    BackendType,
    ExecutionResult,
    ResourceLimits,
    ResourceUsage,
    SandboxInfo,
    SandboxStatus,
    SecurityPolicy,
)

if TYPE_CHECKING:
    from .checkpoint import CheckpointResult, ResumeReport
    from .config import SandboxConfig
    from .storage.base import Storage

__all__ = ["Sandbox"]

log = logging.getLogger("alphora.sandbox")
audit_log = logging.getLogger("alphora.sandbox.audit")

_ENV_KEY_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class Sandbox(FileMethods, PackageMethods):
    """A sandboxed workspace with its own processes, files, env vars and packages.

    Create one with :meth:`create_local`, :meth:`create_docker`, :meth:`from_config` or
    :meth:`create`, then ``async with sandbox:`` (or ``await sandbox.start()`` … ``stop()``).
    """

    def __init__(
        self,
        backend_type: BackendType | str = BackendType.LOCAL,
        *,
        sandbox_id: str | None = None,
        name: str | None = None,
        base_path: str | os.PathLike[str] | None = None,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        backend_options: Mapping[str, Any] | None = None,
        env_vars: Mapping[str, str] | None = None,
        registry: PluginRegistry | None = None,
        backend: Backend | None = None,
        keep_workspace: bool | None = None,
    ) -> None:
        #: what ``async with`` does on exit: keep the workspace (stop) or remove everything (destroy);
        #: by default a sandbox you named with ``sandbox_id`` is kept and an anonymous one destroyed
        self.keep_workspace = (sandbox_id is not None) if keep_workspace is None else keep_workspace
        self.sandbox_id = uuid.uuid4().hex[:12] if sandbox_id is None else validate_sandbox_id(sandbox_id)
        self.name = name or self.sandbox_id
        self.backend_type = name_key(backend_type)
        self.resource_limits = resource_limits or ResourceLimits()
        self.security_policy = security_policy or SecurityPolicy()
        self.base_path = Path(base_path).expanduser() if base_path else default_base_path()
        self._registry = registry
        if backend is None:
            backend_cls = self.registry.backend(self.backend_type)
            backend = backend_cls(
                self.sandbox_id,
                self.base_path / self.sandbox_id,
                resource_limits=self.resource_limits,
                security_policy=self.security_policy,
                options=dict(backend_options or {}),
            )
        self.backend = backend
        # the egress proxy (tiers that enforce SecurityPolicy.egress) asks this registry's
        # sandbox_egress_decide hook about every request
        backend.egress_proxy_options.setdefault("decide", self.registry.egress_decide)
        self._env: dict[str, str] = {}
        for key, value in dict(env_vars or {}).items():
            self._put_env(key, value)
        self._status = SandboxStatus.CREATED
        self._lock = asyncio.Lock()
        self.created_at = datetime.now(timezone.utc)
        self.started_at: datetime | None = None
        self.stopped_at: datetime | None = None
        #: calls of execute_code/run, execute_file and execute_shell (as the original counts them)
        self.execution_count = 0
        self.last_activity = time.time()
        self.audit_events: list[dict[str, Any]] = []
        self._sessions: dict[str, _CheckedSession] = {}
        #: what :meth:`resume` restored (None for a sandbox that was not resumed)
        self.resume_report: ResumeReport | None = None

    # -- factories -------------------------------------------------------------------------------

    @classmethod
    def create_local(
        cls,
        base_path: str | os.PathLike[str] | None = None,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        **kwargs: Any,
    ) -> Sandbox:
        """A sandbox on the local backend (processes on this host, workspace under base_path)."""
        return cls(
            BackendType.LOCAL,
            base_path=base_path,
            resource_limits=resource_limits,
            security_policy=security_policy,
            **kwargs,
        )

    @classmethod
    def create_docker(
        cls,
        base_path: str | os.PathLike[str] | None = None,
        docker_image: str | None = None,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        runtime: str | None = None,
        **kwargs: Any,
    ) -> Sandbox:
        """A sandbox in its own hardened Docker container (needs ``alphora-sandbox[docker]``).

        The spec's constructor, a thin alias: ``docker_image`` is the Docker backend's ``image``
        option (default: the plugin's, :data:`~alphora.sandbox.rules.DEFAULT_IMAGE`), ``runtime``
        its ``runtime`` option (e.g. ``"runsc"`` for gVisor); other options go in ``backend_options``."""
        options = dict(kwargs.pop("backend_options", None) or {})
        if docker_image is not None:
            options["image"] = docker_image
        if runtime is not None:
            options["runtime"] = runtime
        return cls(
            BackendType.DOCKER,
            base_path=base_path,
            resource_limits=resource_limits,
            security_policy=security_policy,
            backend_options=options,
            **kwargs,
        )

    @classmethod
    def from_config(cls, config: SandboxConfig, **kwargs: Any) -> Sandbox:
        """A sandbox as a :class:`~alphora.sandbox.config.SandboxConfig` describes it: its backend
        gets the config's section for that backend (``config.backend_options()``)."""
        params: dict[str, Any] = {
            "base_path": config.base_path,
            "resource_limits": config.resource_limits,
            "security_policy": config.security_policy,
            "backend_options": config.backend_options(),
            "env_vars": dict(config.env_vars or {}),
        }
        if config.sandbox_id:
            params["sandbox_id"] = config.sandbox_id
        if config.name:
            params["name"] = config.name
        params.update(kwargs)
        return cls(config.backend_type, **params)

    @classmethod
    def create(cls, backend_type: BackendType | str = BackendType.LOCAL, **kwargs: Any) -> Sandbox:
        """Factory for ``async with Sandbox.create("local") as sandbox:``; any registered backend name.

        For a backend that declares an ``options_class`` (docker, ray …), keyword arguments that are
        not the constructor's own are that backend's options (``Sandbox.create("ray", inner="docker")``),
        validated by the class field by field; for other backends they are a TypeError as before."""
        if name_key(backend_type) == BackendType.DOCKER.value and "docker_image" in kwargs:
            return cls.create_docker(**kwargs)
        own = inspect.signature(cls.__init__).parameters
        extra = [k for k in kwargs if k not in own]
        if extra:
            registry = kwargs.get("registry") or get_registry()
            if registry.backend(name_key(backend_type)).options_class is not None:
                options = dict(kwargs.pop("backend_options", None) or {})
                options.update({k: kwargs.pop(k) for k in extra})
                kwargs["backend_options"] = options
        return cls(backend_type, **kwargs)

    @property
    def registry(self) -> PluginRegistry:
        if self._registry is None:
            self._registry = get_registry()
        return self._registry

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def status(self) -> SandboxStatus:
        return self._status

    @property
    def is_running(self) -> bool:
        return self._status is SandboxStatus.RUNNING

    @property
    def workspace_path(self) -> Path:
        return self.backend.workspace_path

    async def start(self) -> Sandbox:
        """Start the sandbox (CREATED/STOPPED/ERROR → RUNNING)."""
        async with self._lock:
            if self._status is SandboxStatus.RUNNING:
                raise SandboxAlreadyRunningError(
                    f"sandbox {self.sandbox_id} is already running", sandbox_id=self.sandbox_id
                )
            if self._status is SandboxStatus.DESTROYED:
                raise SandboxError(f"sandbox {self.sandbox_id} was destroyed", sandbox_id=self.sandbox_id)
            self._status = SandboxStatus.STARTING
            try:
                await self.backend.initialize()
                await self.backend.start()
            except BaseException as exc:
                self._status = SandboxStatus.ERROR
                await self._undo_failed_start(exc)
                raise
            self._status = SandboxStatus.RUNNING
            self.started_at = datetime.now(timezone.utc)
            self._touch()
            self._audit("start")
        return self

    async def _undo_failed_start(self, exc: BaseException) -> None:
        """Stop what a failed start left behind. The start's own error is the one raised: a cleanup
        failure with the same message (an unreachable engine fails both) adds nothing, and a
        different one is attached to it as a note and logged in one line (traceback at DEBUG)."""
        try:
            await self.backend.stop()
        except Exception as cleanup_exc:  # never masks the start's error
            log.debug("cleanup after the failed start of %s failed", self.sandbox_id, exc_info=True)
            if str(cleanup_exc) == str(exc):
                return
            note = f"cleaning up after the failed start of sandbox {self.sandbox_id} also failed: {cleanup_exc}"
            log.warning("%s", note)
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(note)

    async def stop(self) -> None:
        """Stop the sandbox and everything running in it; keeps the workspace. Idempotent."""
        async with self._lock:
            if self._status in (SandboxStatus.CREATED, SandboxStatus.STOPPED, SandboxStatus.DESTROYED):
                return
            self._status = SandboxStatus.STOPPING
            try:
                await self.backend.stop()
            except BaseException:
                self._status = SandboxStatus.ERROR
                raise
            self._status = SandboxStatus.STOPPED
            self.stopped_at = datetime.now(timezone.utc)
            self._audit("stop")

    async def restart(self) -> Sandbox:
        """stop() then start(); recovers a sandbox in ERROR."""
        await self.stop()
        return await self.start()

    async def destroy(self) -> None:
        """Stop and remove everything: processes, container, workspace. Idempotent."""
        async with self._lock:
            if self._status is SandboxStatus.DESTROYED:
                return
            self._status = SandboxStatus.STOPPING
            try:
                await self.backend.destroy()
            finally:
                self._status = SandboxStatus.DESTROYED
                self.stopped_at = self.stopped_at or datetime.now(timezone.utc)
                self._audit("destroy")

    async def health_check(self) -> bool:
        """True when running and the backend answers; a running sandbox that doesn't goes to ERROR."""
        if self._status is not SandboxStatus.RUNNING:
            return False
        try:
            ok = await self.backend.health_check()
        except Exception:
            log.debug("health check of %s raised", self.sandbox_id, exc_info=True)
            ok = False
        if not ok:
            self._status = SandboxStatus.ERROR
        return ok

    async def __aenter__(self) -> Sandbox:
        if self._status is not SandboxStatus.RUNNING:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.keep_workspace:
                await self.stop()
            else:
                await self.destroy()
        except Exception:
            if exc is None:
                raise
            log.warning("cleaning up sandbox %s failed while handling %r", self.sandbox_id, exc, exc_info=True)

    def __del__(self) -> None:
        if getattr(self, "_status", None) in (SandboxStatus.RUNNING, SandboxStatus.STARTING):
            warnings.warn(
                f"sandbox {self.sandbox_id} was never stopped; call stop() or use 'async with'",
                ResourceWarning,
                stacklevel=2,
            )

    def _require_running(self) -> None:
        if self._status is not SandboxStatus.RUNNING:
            raise SandboxNotRunningError(
                f"sandbox {self.sandbox_id} is {self._status.value}, not running; call start() first",
                sandbox_id=self.sandbox_id,
            )

    def _touch(self) -> None:
        self.last_activity = time.time()

    def _audit(self, action: str, **details: Any) -> None:
        if not self.security_policy.audit_enabled:
            return
        event = {
            "time": datetime.now(timezone.utc).isoformat(),
            "sandbox_id": self.sandbox_id,
            "action": action,
            **details,
        }
        self.audit_events.append(event)
        audit_log.info("%s", json.dumps(event, default=str))

    async def _check(self, kind: Any, content: str = "", path: str = "", size: int = 0) -> None:
        await run_checks(
            self.registry.security_checks,
            CheckRequest(kind=kind, content=content, path=path, size=size),
            self.security_policy,
            sandbox_id=self.sandbox_id,
        )

    # -- code execution --------------------------------------------------------------------------

    def _env_for(self, env: Mapping[str, str] | None) -> dict[str, str]:
        return {**self._env, **(env or {})}

    async def _run(self, request: ProcessRequest, on_output: OutputCallback | None) -> ExecutionResult:
        self._require_running()
        self._touch()
        self._audit("run", kind=request.kind, code=request.code[:2000], argv=list(request.argv))
        try:
            return await self.backend.run(request, on_output)
        finally:
            self._touch()

    def _request(self, kind: Any, timeout: float | None, env: Mapping[str, str] | None, **kw: Any) -> ProcessRequest:
        return build_request(kind, self.resource_limits, timeout=timeout, env=self._env_for(env), **kw)

    async def run(
        self,
        code: str,
        timeout: float | None = None,
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
        keep_background: bool = True,
    ) -> ExecutionResult:
        """Run Python code in a fresh process (shorthand for :meth:`execute_code`)."""
        return await self.execute_code(code, timeout, on_output=on_output, env=env, keep_background=keep_background)

    async def execute_code(
        self,
        code: str,
        timeout: float | None = None,
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
        keep_background: bool = True,
    ) -> ExecutionResult:
        """Run Python code in a fresh process. A timeout returns a TIMEOUT result (no exception).

        Processes the code leaves running in the background keep running until :meth:`stop` (a server
        for the next call), unless they hit the process limit or keep forking (killed: a fork bomb is
        not a server); ``keep_background=False`` kills everything the call leaves when it ends."""
        self._require_running()
        await self._check("python", content=code)
        self.execution_count += 1
        return await self._run(
            self._request("python", timeout, env, code=code, keep_background=keep_background), on_output
        )

    async def execute_file(
        self,
        file_path: str,
        args: Sequence[str] | None = None,
        timeout: float | None = None,
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
        keep_background: bool = True,
    ) -> ExecutionResult:
        """Run a Python file of the workspace with arguments (``sys.argv[1:] == args``);
        ``keep_background`` as for :meth:`execute_code`."""
        self._require_running()
        rel = self._path(file_path)
        info = await self.backend.stat(rel)
        if info is None or info.is_directory:
            raise FileNotFoundError(
                f"no such file in the workspace: {file_path}", path=str(file_path), sandbox_id=self.sandbox_id
            )
        if info.size <= self.security_policy.max_file_size_bytes:
            source = (await self.backend.read_bytes(rel)).decode("utf-8", "replace")
            await self._check("python", content=source)
        argv = (rel, *(str(a) for a in (args or ())))
        self.execution_count += 1
        return await self._run(
            self._request("file", timeout, env, argv=argv, keep_background=keep_background), on_output
        )

    async def execute_shell(
        self,
        command: str,
        timeout: float | None = None,
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
        keep_background: bool = True,
    ) -> ExecutionResult:
        """Run a ``/bin/sh -c`` command line in the workspace (needs ``allow_shell``);
        ``keep_background`` as for :meth:`execute_code`."""
        self._require_running()
        await self._check("shell", content=command)
        self.execution_count += 1
        return await self._run(
            self._request("shell", timeout, env, code=command, keep_background=keep_background), on_output
        )

    def stream(
        self,
        code: str,
        timeout: float | None = None,
        *,
        kind: str = "python",
        env: Mapping[str, str] | None = None,
        keep_background: bool = True,
    ) -> AsyncIterator[OutputChunk | ExecutionResult]:
        """Run code (``kind="python"``) or a command (``kind="shell"``) and yield output chunks as
        they arrive, then the final :class:`ExecutionResult` as the last item::

            async for item in sandbox.stream("for i in range(3): print(i)"):
                print(item)
        """
        run = self.execute_shell if kind == "shell" else self.execute_code
        return iterate_output(
            lambda on_output: run(code, timeout, on_output=on_output, env=env, keep_background=keep_background)
        )

    @asynccontextmanager
    async def session(
        self, name: str = "default", *, figure_formats: Iterable[str] = ("png",)
    ) -> AsyncIterator[PythonSession]:
        """A stateful Python session (variables persist between calls, like a notebook kernel)::

        async with sandbox.session() as py:
            await py.run("x = 41")
            r = await py.run("x + 1")      # r.value == "42"

        Rich outputs (``display(obj)``, a trailing DataFrame, figures) come back as
        ``result.attachments``; ``figure_formats`` says which formats figures are rendered in
        (``"png"``, ``"svg"`` or both; docs/rich-outputs.md).
        """
        formats = check_figure_formats(figure_formats)
        self._require_running()
        inner = await self.backend.open_session(name, env=dict(self._env))
        inner.figure_formats = formats
        session = _CheckedSession(self, inner)
        try:
            yield session
        finally:
            await session.close()

    async def _open_session(self, name: str) -> _CheckedSession:
        """A session left open (its state stays in the sandbox until ``session(name)`` closes it)."""
        return _CheckedSession(self, await self.backend.open_session(name, env=dict(self._env)))

    @property
    def open_sessions(self) -> dict[str, PythonSession]:
        """The sessions open now, by name (``session()`` ones, forks, and those :meth:`resume` restored)."""
        return dict(self._sessions)

    # -- checkpoints -----------------------------------------------------------------------------

    async def checkpoint(self, storage: Storage, name: str, *, exclude: Sequence[str] = ()) -> CheckpointResult:
        """Save the workspace, the sandbox's own Python environment (what was installed into it, not
        the image) and the picklable globals of each open session to ``storage`` as ``name``;
        unchanged files are not sent again. Names that cannot be pickled are reported in the result.
        See docs/checkpoints.md."""
        self._require_running()
        return await _checkpoint.checkpoint(self, storage, name, exclude=exclude)

    @classmethod
    async def resume(
        cls, storage: Storage, name: str, *, backend: BackendType | str = BackendType.LOCAL, **kwargs: Any
    ) -> Sandbox:
        """A new, started sandbox on ``backend`` (``kwargs`` as for :meth:`create`) holding checkpoint
        ``name``: files, environment (copied when Python and platform match, else re-installed from
        the recorded requirements) and sessions (open them with ``session(name)``). What was and
        was not restored is in ``sandbox.resume_report``. A corrupted or partial checkpoint raises
        :class:`~alphora.sandbox.checkpoint.CheckpointError` before anything is created."""
        await _checkpoint.load_manifest(storage, name)  # refuse a bad name or manifest before creating anything
        sandbox = cls.create(backend, **kwargs)
        try:
            sandbox.resume_report = await _checkpoint.resume(sandbox, storage, name)
        except BaseException:
            if sandbox.status is not SandboxStatus.CREATED:
                await sandbox.destroy()
            raise
        return sandbox

    # -- environment variables -------------------------------------------------------------------

    @staticmethod
    def _check_env(key: str, value: str) -> None:
        if not isinstance(key, str) or not key or key[0].isdigit() or not set(key) <= _ENV_KEY_OK:
            raise ConfigurationError(f"invalid environment variable name {key!r}", field="key", value=key)
        if not isinstance(value, str) or "\0" in value:
            raise ConfigurationError(f"invalid value for {key}: must be a string without NUL", field=key, value=value)

    def _put_env(self, key: str, value: str) -> None:
        self._check_env(key, value)
        self._env[key] = value

    async def set_env(self, key: str, value: str) -> None:
        """Set a variable for every later call in this sandbox (the host's environment is never passed)."""
        self._put_env(key, value)

    async def get_env(self, key: str, default: str | None = None) -> str | None:
        """A variable set with set_env / set_env_vars / ``env_vars=`` (never the host's)."""
        return self._env.get(key, default)

    async def set_env_vars(self, env_vars: Mapping[str, str]) -> None:
        """Set several variables; all are checked before any is set."""
        pairs = dict(env_vars)
        for k, v in pairs.items():
            self._check_env(k, v)
        self._env.update(pairs)

    async def unset_env(self, key: str) -> bool:
        """Remove a variable; False when it was not set."""
        return self._env.pop(key, None) is not None

    @property
    def env_vars(self) -> dict[str, str]:
        """A copy of the variables set for this sandbox (synchronous, for code that can't await)."""
        return dict(self._env)

    # -- monitoring ------------------------------------------------------------------------------

    async def get_resource_usage(self) -> ResourceUsage:
        self._require_running()
        return await self.backend.get_resource_usage()

    async def get_status(self) -> dict[str, Any]:
        """The original's status dict (sandbox_id, name, status, backend_type, is_running,
        workspace_path, created_at, started_at, execution_count) plus uptime_seconds and last_activity."""
        running = self._status is SandboxStatus.RUNNING
        uptime = (datetime.now(timezone.utc) - self.started_at).total_seconds() if self.started_at and running else 0.0
        return {
            "sandbox_id": self.sandbox_id,
            "name": self.name,
            "status": self._status.value,
            "backend_type": self.backend_type,
            "is_running": running,
            "workspace_path": str(self.workspace_path),
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "execution_count": self.execution_count,
            "uptime_seconds": round(uptime, 3),
            "last_activity": self.last_activity,
        }

    async def get_info(self) -> SandboxInfo:
        """Everything about the sandbox as a :class:`SandboxInfo`."""
        return SandboxInfo(
            sandbox_id=self.sandbox_id,
            name=self.name,
            backend_type=self.backend_type,
            status=self._status,
            workspace_path=str(self.workspace_path),
            created_at=self.created_at,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            resource_limits=self.resource_limits,
            security_policy=self.security_policy,
            execution_count=self.execution_count,
            metadata={"env_vars": sorted(self._env)},
        )

    def __repr__(self) -> str:
        named = f" name={self.name!r}" if self.name != self.sandbox_id else ""
        return f"<Sandbox {self.sandbox_id}{named} {self.backend_type} {self._status.value}>"


class _CheckedSession(PythonSession):
    """Wraps a backend session so every call passes the sandbox's policy checks."""

    def __init__(self, sandbox: Sandbox, inner: PythonSession) -> None:
        self._sandbox = sandbox
        self._inner = inner
        self.name = inner.name
        sandbox._sessions[self.name] = self

    @property
    def figure_formats(self) -> tuple[str, ...]:
        return self._inner.figure_formats

    @figure_formats.setter
    def figure_formats(self, formats: Iterable[str]) -> None:
        self._inner.figure_formats = check_figure_formats(formats)

    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        self._sandbox._require_running()
        await self._sandbox._check("python", content=code)
        self._sandbox._touch()
        self._sandbox._audit("session_run", session=self.name, code=code[:2000])
        return await self._inner.run(code, resolve_timeout(timeout, self._sandbox.resource_limits), on_output=on_output)

    async def fork(self, name: str | None = None, *, copy_workspace: bool = False) -> PythonSession:
        self._sandbox._require_running()
        self._sandbox._touch()
        inner = await self._inner.fork(name, copy_workspace=copy_workspace)
        self._sandbox._audit("session_fork", session=self.name, fork=inner.name, copy_workspace=copy_workspace)
        return _CheckedSession(self._sandbox, inner)

    async def _run_internal(self, code: str) -> ExecutionResult:
        """Library-written helper code (checkpoints): skips the policy's code checks, still in the
        session, like ``PackageMethods._python_internal`` for fresh processes."""
        self._sandbox._require_running()
        self._sandbox._touch()
        return await self._inner.run(code, max(60.0, self._sandbox.resource_limits.timeout_seconds))

    async def reset(self) -> None:
        await self._inner.reset()

    async def close(self) -> None:
        if self._sandbox._sessions.get(self.name) is self:
            del self._sandbox._sessions[self.name]
        await self._inner.close()
