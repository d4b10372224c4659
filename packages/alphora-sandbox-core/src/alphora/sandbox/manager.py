"""SandboxManager: many sandboxes under one roof (the spec's 多沙箱管理).

The manager creates, finds, stops and destroys sandboxes by id *or* name, enforces
``max_sandboxes``, runs batch operations concurrently, and (with ``auto_cleanup``) reaps idle
sandboxes in the background and destroys everything it created when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import (
    ConfigurationError,
    SandboxAlreadyExistsError,
    SandboxError,
    SandboxNotFoundError,
)
from .rules import name_key
from .types import BackendType, ResourceLimits, ResourceUsage, SandboxInfo, SandboxStatus, SecurityPolicy

if TYPE_CHECKING:
    from .config import SandboxConfig
    from .plugins import PluginRegistry
    from .pool import SandboxPool
    from .sandbox import Sandbox

__all__ = ["SandboxLimitError", "SandboxManager"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SandboxLimitError(SandboxError):
    """The manager already holds ``max_sandboxes`` sandboxes."""


_backend_name = name_key


class SandboxManager:
    """Creates and tracks sandboxes; ``async with SandboxManager(...) as manager:``.

    * ``default_backend`` (``BackendType`` or a plugin's name), ``resource_limits``,
      ``security_policy`` (also accepted under the original's names ``default_limits`` and
      ``default_policy``), ``docker_image`` and ``env_vars`` are the defaults for new sandboxes;
      ``config`` (a :class:`~alphora.sandbox.config.SandboxConfig`) may provide all of them at once,
      and its ``backends`` sections are the options of each backend the manager creates.
      ``docker_image`` is the spec's thin alias of the Docker backend's ``image`` option.
    * ``max_sandboxes`` caps how many sandboxes the manager holds (any status but destroyed);
      one more raises :class:`SandboxLimitError`.
    * ``auto_cleanup=True``: a background task destroys sandboxes idle for more than
      ``idle_timeout`` seconds (checked every ``cleanup_interval`` seconds), and
      :meth:`shutdown` destroys every sandbox (workspaces included). With ``False`` nothing is
      reaped and shutdown only stops them, keeping their workspaces.
    * ``pool_size=N``: the manager keeps ``N`` started sandboxes of its defaults ready (a
      :class:`~alphora.sandbox.pool.SandboxPool`, started with the manager); ``create_sandbox()``
      with nothing but defaults (no name, id, backend or per-sandbox setting) takes one of them
      in milliseconds instead of starting one cold, and the pool makes a replacement in the
      background. Named or explicitly configured sandboxes are created cold as before.
      ``pool_options`` are more :class:`~alphora.sandbox.pool.SandboxPool` options (``max_age``,
      ``refill_concurrency`` …). The ready sandboxes do not count against ``max_sandboxes``.

    Every method that takes a ``sandbox_id`` also accepts the sandbox's name.
    """

    def __init__(
        self,
        base_path: str | os.PathLike[str] | None = None,
        default_backend: BackendType | str = BackendType.LOCAL,
        max_sandboxes: int = 100,
        auto_cleanup: bool = True,
        *,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        docker_image: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        idle_timeout: float | None = 3600.0,
        cleanup_interval: float = 60.0,
        config: SandboxConfig | None = None,
        registry: PluginRegistry | None = None,
        default_limits: ResourceLimits | None = None,
        default_policy: SecurityPolicy | None = None,
        pool_size: int = 0,
        pool_options: Mapping[str, Any] | None = None,
    ) -> None:
        # the original alphora's names for resource_limits / security_policy
        if default_limits is not None:
            if resource_limits is not None:
                raise ConfigurationError(
                    "give resource_limits or default_limits, not both", field="default_limits", value=default_limits
                )
            resource_limits = default_limits
        if default_policy is not None:
            if security_policy is not None:
                raise ConfigurationError(
                    "give security_policy or default_policy, not both", field="default_policy", value=default_policy
                )
            security_policy = default_policy
        if not isinstance(max_sandboxes, int) or isinstance(max_sandboxes, bool) or max_sandboxes <= 0:
            raise ConfigurationError(
                f"max_sandboxes must be a positive integer, got {max_sandboxes!r}",
                field="max_sandboxes",
                value=max_sandboxes,
            )
        if cleanup_interval <= 0:
            raise ConfigurationError(
                f"cleanup_interval must be > 0, got {cleanup_interval!r}",
                field="cleanup_interval",
                value=cleanup_interval,
            )
        if idle_timeout is not None and idle_timeout <= 0:
            raise ConfigurationError(
                f"idle_timeout must be > 0 or None, got {idle_timeout!r}", field="idle_timeout", value=idle_timeout
            )
        self.config = config
        if base_path is None and config is not None and config.base_path:
            base_path = config.base_path
        self.base_path: Path | None = Path(base_path).expanduser() if base_path else None
        if config is not None and _backend_name(default_backend) == BackendType.LOCAL.value:
            default_backend = config.backend_type  # the config decides unless a backend was asked for
        self.default_backend = _backend_name(default_backend)
        self.max_sandboxes = max_sandboxes
        self.auto_cleanup = auto_cleanup
        self.resource_limits = resource_limits or (config.resource_limits if config else None)
        self.security_policy = security_policy or (config.security_policy if config else None)
        self.docker_image = docker_image
        self.env_vars = dict(env_vars if env_vars is not None else (config.env_vars if config else {}))
        self.idle_timeout = idle_timeout
        self.cleanup_interval = cleanup_interval
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 0:
            raise ConfigurationError(
                f"pool_size must be a non-negative integer, got {pool_size!r}", field="pool_size", value=pool_size
            )
        self.pool_size = pool_size
        self.pool_options = dict(pool_options or {})
        from .pool import POOL_OPTIONS

        for key in self.pool_options:  # the sandboxes' settings are the manager's own arguments
            if key not in POOL_OPTIONS:
                raise ConfigurationError(
                    f"pool_options may hold only the pool's own options ({', '.join(sorted(POOL_OPTIONS))}), not "
                    f"{key!r}: the pool's sandboxes are made with the manager's settings (its base_path, "
                    "default_backend, docker_image, resource_limits, security_policy, env_vars, backend_options), "
                    "and its size is pool_size",
                    field=f"pool_options.{key}",
                    value=self.pool_options[key],
                )
        self.pool: SandboxPool | None = None
        self._registry = registry
        self._sandboxes: dict[str, Sandbox] = {}
        self._pending: dict[str, Sandbox] = {}  # created, not started yet: counts against the limit
        self._lock: asyncio.Lock | None = None
        self._running = False
        self._started_at: float | None = None
        self._reaper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._running

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def start(self) -> SandboxManager:
        """Start the manager (and its idle reaper when ``auto_cleanup``). Idempotent."""
        if self._running:
            return self
        if self.pool_size:
            from .pool import SandboxPool

            self.pool = SandboxPool(
                self.default_backend,
                size=self.pool_size,
                **self.pool_options,
                **self._sandbox_defaults(self.default_backend, None, None),
            )
            try:
                await self.pool.start()
            except BaseException:
                pool, self.pool = self.pool, None
                await pool.shutdown()
                raise
        self._running = True
        self._started_at = time.time()
        if self.auto_cleanup and self.idle_timeout is not None:
            self._reaper = asyncio.create_task(self._reap_loop(), name="alphora-sandbox-manager-reaper")
        return self

    async def shutdown(self, force: bool = False) -> None:
        """Stop the manager: destroy every sandbox with ``auto_cleanup`` (or ``force``), else stop them.

        ``force=True`` destroys all sandboxes even without auto_cleanup and never raises for a
        sandbox that fails to go away (failures are logged). Idempotent.
        """
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        self._running = False
        pool, self.pool = self.pool, None
        try:
            if force or self.auto_cleanup:
                await self.destroy_all(raise_errors=not force)
            else:
                await self.stop_all()
        finally:
            if pool is not None:
                await pool.shutdown()

    async def __aenter__(self) -> SandboxManager:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.shutdown(force=exc is not None)
        except Exception:
            if exc is None:
                raise
            log.warning("shutting down the sandbox manager failed while handling %r", exc, exc_info=True)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                if self.idle_timeout is not None:
                    cleaned = await self.cleanup_idle(self.idle_timeout)
                    if cleaned:
                        log.info("destroyed idle sandboxes: %s", ", ".join(cleaned))
            except Exception:
                log.warning("idle sandbox cleanup failed", exc_info=True)

    # -- creation --------------------------------------------------------------------------------

    async def create_sandbox(
        self,
        name: str | None = None,
        sandbox_id: str | None = None,
        backend_type: BackendType | str | None = None,
        *,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        docker_image: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        backend_options: Mapping[str, Any] | None = None,
        auto_start: bool = True,
        **kwargs: Any,
    ) -> Sandbox:
        """Create (and by default start) a sandbox; ``name`` defaults to the id.

        Ids and names are unique within the manager (SandboxAlreadyExistsError); a full manager
        raises SandboxLimitError. A sandbox that fails to start is not kept.
        """
        from .sandbox import Sandbox

        if not self._running:
            await self.start()
        same_backend = backend_type is None or _backend_name(backend_type) == self.default_backend
        plain = same_backend and not (name or sandbox_id or resource_limits or security_policy or docker_image)
        if self.pool is not None and plain and not (env_vars or backend_options or kwargs) and auto_start:
            return await self._from_pool(self.pool)
        backend = _backend_name(backend_type) if backend_type is not None else self.default_backend
        params = self._sandbox_defaults(backend, docker_image, backend_options)
        params.update(
            resource_limits=resource_limits or self.resource_limits,
            security_policy=security_policy or self.security_policy,
            env_vars={**self.env_vars, **(env_vars or {})},
        )
        params.update(kwargs)
        sandbox = Sandbox(backend, sandbox_id=sandbox_id, name=name, **params)
        await self._reserve(sandbox)
        try:
            if auto_start:
                await sandbox.start()
        except BaseException:
            self._release(sandbox)
            with contextlib.suppress(Exception):
                await sandbox.destroy()
            raise
        self._pending.pop(sandbox.sandbox_id, None)
        self._sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox

    def _sandbox_defaults(
        self, backend: str, docker_image: str | None, backend_options: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """What the manager gives every new sandbox of this backend (its pool's sandboxes too)."""
        # precedence: the config's section for this backend < the docker_image alias < backend_options
        options = self.config.backend_options(backend) if self.config is not None else {}
        image = docker_image or self.docker_image
        if image and backend == BackendType.DOCKER.value:
            options["image"] = image
        options.update(backend_options or {})
        return {
            "base_path": self.base_path,
            "resource_limits": self.resource_limits,
            "security_policy": self.security_policy,
            "backend_options": options,
            "env_vars": dict(self.env_vars),
            "registry": self._registry,
        }

    async def _from_pool(self, pool: SandboxPool) -> Sandbox:
        """A ready sandbox taken from the pool (it is the manager's from now on)."""
        if len(self._sandboxes) + len(self._pending) >= self.max_sandboxes:
            raise SandboxLimitError(
                f"the manager already holds {len(self._sandboxes) + len(self._pending)} sandboxes "
                f"(max_sandboxes={self.max_sandboxes}); destroy some (destroy_sandbox, cleanup_stopped, "
                "cleanup_idle) or raise max_sandboxes"
            )
        sandbox = await pool.take()
        try:
            await self._reserve(sandbox)  # checks the limit again: others may have come first
        except BaseException:
            await sandbox.destroy()
            raise
        self._pending.pop(sandbox.sandbox_id, None)
        self._sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox

    async def _reserve(self, sandbox: Sandbox) -> None:
        async with self._get_lock():
            for gone in [s for s in self._sandboxes.values() if s.status is SandboxStatus.DESTROYED]:
                self._release(gone)  # destroyed behind the manager's back: holds nothing any more
            held = len(self._sandboxes) + len(self._pending)
            if held >= self.max_sandboxes:
                raise SandboxLimitError(
                    f"the manager already holds {held} sandboxes (max_sandboxes={self.max_sandboxes}); "
                    "destroy some (destroy_sandbox, cleanup_stopped, cleanup_idle) or raise max_sandboxes",
                    sandbox_id=sandbox.sandbox_id,
                )
            for other in (*self._sandboxes.values(), *self._pending.values()):
                for taken in (sandbox.sandbox_id, sandbox.name):
                    if taken in (other.sandbox_id, other.name):
                        raise SandboxAlreadyExistsError(
                            f"a sandbox with id or name {taken!r} already exists ({other.sandbox_id})",
                            sandbox_id=sandbox.sandbox_id,
                        )
            self._pending[sandbox.sandbox_id] = sandbox

    def _release(self, sandbox: Sandbox) -> None:
        self._pending.pop(sandbox.sandbox_id, None)
        self._sandboxes.pop(sandbox.sandbox_id, None)

    async def create_local_sandbox(self, name: str | None = None, **kwargs: Any) -> Sandbox:
        """A sandbox on the local backend."""
        return await self.create_sandbox(name, backend_type=BackendType.LOCAL, **kwargs)

    async def create_docker_sandbox(
        self, name: str | None = None, docker_image: str | None = None, **kwargs: Any
    ) -> Sandbox:
        """A sandbox on the Docker backend; ``docker_image`` defaults to the manager's, else the
        config's ``docker`` section, else the plugin's default image."""
        return await self.create_sandbox(name, backend_type=BackendType.DOCKER, docker_image=docker_image, **kwargs)

    async def get_or_create(self, sandbox_id: str, **kwargs: Any) -> Sandbox:
        """The sandbox with this id (or name), started if it was stopped; else a new one with that id."""
        existing = self._find(sandbox_id)
        if existing is not None and existing.status is not SandboxStatus.DESTROYED:
            if existing.status is not SandboxStatus.RUNNING:
                await existing.restart()
            return existing
        kwargs.setdefault("name", sandbox_id)
        return await self.create_sandbox(sandbox_id=sandbox_id, **kwargs)

    # -- lookup ----------------------------------------------------------------------------------

    def _find(self, key: str) -> Sandbox | None:
        sandbox = self._sandboxes.get(key)
        if sandbox is not None:
            return sandbox
        for candidate in self._sandboxes.values():
            if candidate.name == key:
                return candidate
        return None

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """The sandbox with this id, else the one with this name; SandboxNotFoundError otherwise."""
        sandbox = self._find(sandbox_id)
        if sandbox is None:
            raise SandboxNotFoundError(
                f"no sandbox with id or name {sandbox_id!r} in this manager", sandbox_id=sandbox_id
            )
        return sandbox

    def get_sandbox_by_name(self, name: str) -> Sandbox | None:
        """The sandbox with this name, or None (as in the original; get_sandbox raises instead)."""
        for candidate in self._sandboxes.values():
            if candidate.name == name:
                return candidate
        return None

    def has_sandbox(self, sandbox_id: str) -> bool:
        """True when a sandbox with this id or name is managed."""
        return self._find(sandbox_id) is not None

    def list_sandboxes(
        self, status: SandboxStatus | str | None = None, backend_type: BackendType | str | None = None
    ) -> list[Sandbox]:
        """Managed sandboxes, oldest first, optionally only those with this status / backend."""
        wanted_status = SandboxStatus(getattr(status, "value", status)) if status is not None else None
        wanted_backend = _backend_name(backend_type) if backend_type is not None else None
        return [
            s
            for s in self._sandboxes.values()
            if (wanted_status is None or s.status is wanted_status)
            and (wanted_backend is None or s.backend_type == wanted_backend)
        ]

    def list_running(self) -> list[Sandbox]:
        return self.list_sandboxes(status=SandboxStatus.RUNNING)

    async def list_info(self) -> list[SandboxInfo]:
        """:meth:`Sandbox.get_info` of every managed sandbox, oldest first."""
        return [await s.get_info() for s in list(self._sandboxes.values())]

    @property
    def sandbox_count(self) -> int:
        """How many sandboxes the manager holds (``len(manager)``)."""
        return len(self._sandboxes)

    def __len__(self) -> int:
        return len(self._sandboxes)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has_sandbox(key)

    # -- single-sandbox operations ---------------------------------------------------------------

    async def stop_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.get_sandbox(sandbox_id)
        await sandbox.stop()
        return sandbox

    async def destroy_sandbox(self, sandbox_id: str) -> bool:
        """Destroy the sandbox (processes, container, workspace) and forget it. False if unknown."""
        sandbox = self._find(sandbox_id)
        if sandbox is None:
            return False
        try:
            await sandbox.destroy()
        finally:
            self._release(sandbox)
        return True

    async def restart_sandbox(self, sandbox_id: str) -> Sandbox:
        sandbox = self.get_sandbox(sandbox_id)
        await sandbox.restart()
        return sandbox

    # -- batch operations ------------------------------------------------------------------------

    async def _each(
        self, sandboxes: list[Sandbox], action: Callable[[Sandbox], Awaitable[T]], what: str
    ) -> tuple[dict[str, T], dict[str, BaseException]]:
        results = await asyncio.gather(*(action(s) for s in sandboxes), return_exceptions=True)
        done: dict[str, T] = {}
        failed: dict[str, BaseException] = {}
        for sandbox, result in zip(sandboxes, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, (KeyboardInterrupt, SystemExit)):
                    raise result
                log.warning("%s of sandbox %s failed: %r", what, sandbox.sandbox_id, result)
                failed[sandbox.sandbox_id] = result
            else:
                done[sandbox.sandbox_id] = result
        return done, failed

    async def stop_all(self) -> list[str]:
        """Stop every sandbox concurrently; returns the ids stopped (failures are logged)."""
        done, _ = await self._each(list(self._sandboxes.values()), lambda s: s.stop(), "stop")
        return list(done)

    async def destroy_all(self, *, raise_errors: bool = False) -> list[str]:
        """Destroy and forget every sandbox concurrently; returns the ids destroyed.

        A sandbox that fails to be destroyed is forgotten anyway (its failure is logged);
        ``raise_errors=True`` raises SandboxError naming them after all others are done.
        """
        sandboxes = list(self._sandboxes.values())

        async def destroy(s: Sandbox) -> None:
            try:
                await s.destroy()
            finally:
                self._release(s)

        done, failed = await self._each(sandboxes, destroy, "destroy")
        if failed and raise_errors:
            raise SandboxError(
                f"could not destroy sandboxes: {', '.join(sorted(failed))}",
                errors={k: repr(v) for k, v in failed.items()},
            )
        return list(done)

    async def health_check_all(self) -> dict[str, bool]:
        """``{sandbox_id: healthy}`` for every sandbox (not running counts as unhealthy)."""
        done, failed = await self._each(list(self._sandboxes.values()), lambda s: s.health_check(), "health check")
        return {**done, **dict.fromkeys(failed, False)}

    async def cleanup_stopped(self) -> list[str]:
        """Destroy and forget sandboxes that are stopped, in error or already destroyed; returns their ids."""
        dead = [
            s
            for s in self._sandboxes.values()
            if s.status in (SandboxStatus.STOPPED, SandboxStatus.ERROR, SandboxStatus.DESTROYED)
        ]
        return await self._destroy_these(dead, "cleanup")

    async def cleanup_idle(self, max_idle_seconds: float = 3600.0) -> list[str]:
        """Destroy and forget sandboxes with no call for more than ``max_idle_seconds``; returns their ids.

        Idleness is measured from the start of a sandbox's last call (``sandbox.last_activity``).
        """
        now = time.time()
        idle = [
            s
            for s in self._sandboxes.values()
            if s.status is not SandboxStatus.STARTING and now - s.last_activity > max_idle_seconds
        ]
        return await self._destroy_these(idle, "idle cleanup")

    async def _destroy_these(self, sandboxes: list[Sandbox], what: str) -> list[str]:
        async def destroy(s: Sandbox) -> None:
            try:
                await s.destroy()
            finally:
                self._release(s)

        done, _ = await self._each(sandboxes, destroy, what)
        return list(done)

    # -- monitoring ------------------------------------------------------------------------------

    async def get_total_resource_usage(self) -> ResourceUsage:
        """The sum of :meth:`Sandbox.get_resource_usage` over the running sandboxes."""
        usages, _ = await self._each(self.list_running(), lambda s: s.get_resource_usage(), "resource usage")
        values = list(usages.values())
        return ResourceUsage(
            cpu_percent=sum(u.cpu_percent for u in values),
            memory_mb=sum(u.memory_mb for u in values),
            memory_percent=sum(u.memory_percent for u in values),
            disk_mb=sum(u.disk_mb for u in values),
            process_count=sum(u.process_count for u in values),
        )

    async def get_status(self) -> dict[str, Any]:
        """The manager's state: the original's keys (base_path, default_backend, max_sandboxes,
        sandbox_count, running_count, and ``sandboxes`` keyed by id with each one's name, status and
        backend) plus counts by status and backend, the cleanup settings and uptime. Each entry of
        ``sandboxes`` is that sandbox's :meth:`Sandbox.get_status` with ``backend`` added."""
        by_status: dict[str, int] = {}
        by_backend: dict[str, int] = {}
        sandboxes: dict[str, dict[str, Any]] = {}
        for s in list(self._sandboxes.values()):
            by_status[s.status.value] = by_status.get(s.status.value, 0) + 1
            by_backend[s.backend_type] = by_backend.get(s.backend_type, 0) + 1
            sandboxes[s.sandbox_id] = {**await s.get_status(), "backend": s.backend_type}
        return {
            "base_path": str(self.base_path) if self.base_path else None,
            "default_backend": self.default_backend,
            "max_sandboxes": self.max_sandboxes,
            "sandbox_count": len(sandboxes),
            "running_count": by_status.get(SandboxStatus.RUNNING.value, 0),
            "sandboxes": sandboxes,
            "running": self._running,
            "by_status": by_status,
            "by_backend": by_backend,
            "auto_cleanup": self.auto_cleanup,
            "idle_timeout": self.idle_timeout,
            "pool": self.pool.stats().to_dict() if self.pool is not None else None,
            "uptime_seconds": round(time.time() - self._started_at, 3) if self._running and self._started_at else 0.0,
        }

    def __repr__(self) -> str:
        return (
            f"<SandboxManager {len(self._sandboxes)}/{self.max_sandboxes} sandboxes "
            f"{'running' if self._running else 'stopped'}>"
        )
