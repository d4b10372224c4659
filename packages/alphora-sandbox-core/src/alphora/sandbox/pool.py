"""SandboxPool: started sandboxes kept ready, handed out in milliseconds, reset or destroyed on release.

::

    async with SandboxPool("local", size=4) as pool:
        async with pool.acquire(timeout=10) as sandbox:
            result = await sandbox.run("print(1)")

The pool owns at most ``size`` sandboxes (ready, handed out, being made or being reset) and keeps
``min_idle`` of them ready, refilling in the background with at most ``refill_concurrency`` sandboxes
being made or reset at a time. A ready sandbox is health-checked when it is handed out (an unhealthy
one is destroyed and the next one tried). ``max_age`` and ``max_uses`` retire sandboxes.

**Who holds what.** Every hand-out is a new :class:`~alphora.sandbox.sandbox.Sandbox` object (the
facade) over the pool's backend; when it is returned, that object is retired for good (its status
becomes ``DESTROYED``: any later call on it raises ``SandboxNotRunningError``), so a holder that kept
a reference cannot reach the next holder's sandbox through it, and a sandbox is never handed to two
holders. Do not keep ``sandbox.backend`` past the release.

**Release** (``on_release``): ``"destroy"`` destroys the sandbox (the pool makes a new one);
``"reset"`` (the default) makes it clean again, in the background, in this order:

1. ``stop()`` then ``start()`` of the backend: every process the holder started is killed (the runner
   kills its tree; local: the pids cgroup; isolated: the PID namespace; Docker: a new container, so
   ``/tmp`` and the container's root file system are fresh too), every session's interpreter is gone,
   and the next call runs in a fresh runner.
2. The workspace is emptied: every entry, hidden ones included, except the backend's package
   environment (its :attr:`~alphora.sandbox.backend.Backend.internal_paths` that are not scratch;
   local: ``.venv``); scratch space (``scratch_paths``; local: ``.tmp``) is emptied. Then it is
   listed again and must hold nothing else.
3. The package environment and the home directory (when it is outside the workspace: Docker's
   ``/home/sandbox`` volume, where ``pip install --user`` and dotfiles land) are fingerprinted (every
   entry's path, type, mode, size and modification time) by a fresh ``python -I -S`` process and
   compared with their fingerprint taken when the sandbox was made: **any** change (a package
   installed or removed, a ``.pth`` file planted, a cache written) retires the sandbox (destroyed, not
   reset).
4. The next holder gets a new facade: the configured env vars (``env_vars=``), no execution count, no
   audit events of the previous holder.

Any failure in these steps destroys the sandbox; a sandbox that was not made clean is never handed
out. What a reset does *not* cover, and why, is in docs/serving.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigurationError, SandboxError
from .rules import name_key
from .types import BackendType, SandboxStatus

#: the :class:`~alphora.sandbox.sandbox.Sandbox` arguments a pool passes on to every sandbox it makes
#: (``docker_image`` too, for a Docker pool); the pool chooses ``sandbox_id``, ``name`` and ``keep_workspace``
_SANDBOX_KWARGS = frozenset(
    {"base_path", "resource_limits", "security_policy", "backend_options", "env_vars", "registry"}
)
#: the pool's own keyword options (what :class:`SandboxManager`'s ``pool_options`` may hold)
POOL_OPTIONS = frozenset(
    {"min_idle", "max_age", "max_uses", "on_release", "refill_concurrency", "health_check", "maintenance_interval"}
)

if TYPE_CHECKING:
    from .backend import Backend
    from .sandbox import Sandbox

__all__ = ["OnRelease", "PoolClosedError", "PoolStats", "PoolTimeoutError", "SandboxPool"]

log = logging.getLogger(__name__)


class OnRelease(str, enum.Enum):
    """What the pool does with a sandbox that comes back."""

    #: make it clean again and keep it (see the module docstring for what "clean" means)
    RESET = "reset"
    #: destroy it; the pool makes a new one
    DESTROY = "destroy"


class PoolTimeoutError(SandboxError, TimeoutError):
    """No sandbox became free within the ``timeout`` of :meth:`SandboxPool.acquire`."""


class PoolClosedError(SandboxError):
    """The pool was shut down."""


@attrs.frozen(kw_only=True)
class PoolStats:
    """A snapshot of the pool's counts (:meth:`SandboxPool.stats`)."""

    size: int
    min_idle: int
    #: ready to be handed out
    idle: int
    #: handed out and not returned yet
    in_use: int
    #: being made / being reset / being destroyed right now
    creating: int
    resetting: int
    destroying: int
    #: callers waiting in acquire()
    waiting: int
    #: totals since the pool started
    created: int
    destroyed: int
    resets: int
    acquired: int
    create_failures: int
    reset_failures: int
    health_check_failures: int

    def to_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


#: ``python -I -S -c PROBE <internal path>…``: a fingerprint (sha256 of every entry's path, type, mode,
#: size, mtime, and its content: a regular file's bytes, a symlink's target) of the named workspace
#: entries and of $HOME when it lies outside the workspace. The content counts because a holder can
#: rewrite a file in place and put its size and mtime back (``os.utime``); the mtime alone proves
#: nothing. ``-I -S``: nothing of the sandbox's environment (PYTHON* variables, user site, .pth files)
#: runs first; the interpreter is one the holder cannot replace (see ``SandboxPool._fingerprint``).
PROBE = r"""
import hashlib, os, stat, sys
ws = os.path.realpath(os.getcwd())
roots = [os.path.join(ws, p) for p in sys.argv[1:]]
home = os.environ.get("HOME") or ""
if home and os.path.isdir(home):
    real = os.path.realpath(home)
    if real != ws and not real.startswith(ws + os.sep):
        roots.append(real)
h = hashlib.sha256()
count = 0
def content(path, st):
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path)
    if not stat.S_ISREG(st.st_mode):
        return ""
    d = hashlib.sha256()
    try:  # unreadable (its mode says so, and the mode counts): recorded as such
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return "unreadable %d" % exc.errno
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.update(chunk)
    return d.hexdigest()
def add(path):
    global count
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        h.update(f"{path}\0missing\n".encode("utf-8", "surrogateescape"))
        return
    count += 1
    what = content(path, st)
    h.update(f"{path}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{what}\n".encode("utf-8", "surrogateescape"))
for root in roots:
    add(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            add(os.path.join(dirpath, name))
print(h.hexdigest(), count)
"""


class _Dirty(SandboxError):
    """A reset found something it cannot undo."""


class _Slot:
    """One sandbox of the pool: its backend, the facade of its current (or next) holder."""

    __slots__ = ("backend", "created", "fingerprint", "sandbox", "uses")

    def __init__(self, sandbox: Sandbox, fingerprint: str, created: float) -> None:
        self.sandbox = sandbox
        self.backend: Backend = sandbox.backend
        self.created = created
        self.uses = 0
        self.fingerprint = fingerprint


def _positive_int(name: str, value: Any, *, zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        raise ConfigurationError(
            f"{name} must be a {'non-negative' if zero else 'positive'} integer, got {value!r}",
            field=name,
            value=value,
        )
    return value


def _retire(sandbox: Sandbox) -> None:
    """The facade is dead from now on: every call raises SandboxNotRunningError, stop/destroy do nothing."""
    sandbox._status = SandboxStatus.DESTROYED


class SandboxPool:
    """A pool of started sandboxes of one configuration; see the module docstring.

    * ``backend``: ``"local"``, ``"isolated"``, ``"docker"``, a :class:`BackendType` or a plugin's name.
    * ``size``: the most sandboxes the pool owns at once (ready + handed out + being made or reset);
      :meth:`acquire` waits when all are handed out.
    * ``min_idle``: how many ready sandboxes the pool keeps (default: ``size``); refilled in the
      background, at most ``refill_concurrency`` (default 2) made or reset at a time.
    * ``max_age`` (seconds since it was made) and ``max_uses`` (hand-outs): a sandbox past either is
      destroyed instead of handed out or reset. None: no limit.
    * ``on_release``: ``"reset"`` (default) or ``"destroy"``; see :class:`OnRelease`.
    * ``health_check``: ping a ready sandbox before handing it out (default True).
    * ``sandbox_kwargs``: what every sandbox is made with (:class:`~alphora.sandbox.sandbox.Sandbox`'s
      ``base_path``, ``resource_limits``, ``security_policy``, ``backend_options``, ``env_vars``,
      ``registry``; for Docker also ``docker_image``, as in :meth:`Sandbox.create_docker`). ``sandbox_id``
      and ``name`` are the pool's to choose; any other name is a :class:`ConfigurationError` at once.
    """

    def __init__(
        self,
        backend: BackendType | str = BackendType.LOCAL,
        size: int = 4,
        *,
        min_idle: int | None = None,
        max_age: float | None = None,
        max_uses: int | None = None,
        on_release: OnRelease | str = OnRelease.RESET,
        refill_concurrency: int = 2,
        health_check: bool = True,
        maintenance_interval: float = 5.0,
        **sandbox_kwargs: Any,
    ) -> None:
        self.backend_type = name_key(backend)
        self.size = _positive_int("size", size)
        self.min_idle = self.size if min_idle is None else _positive_int("min_idle", min_idle, zero=True)
        if self.min_idle > self.size:
            raise ConfigurationError(
                f"min_idle ({self.min_idle}) cannot exceed size ({self.size})", field="min_idle", value=min_idle
            )
        if max_age is not None and not max_age > 0:
            raise ConfigurationError(f"max_age must be > 0 or None, got {max_age!r}", field="max_age", value=max_age)
        self.max_age = max_age
        self.max_uses = None if max_uses is None else _positive_int("max_uses", max_uses)
        try:
            self.on_release = OnRelease(getattr(on_release, "value", on_release))
        except ValueError:
            raise ConfigurationError(
                f"on_release must be 'reset' or 'destroy', got {on_release!r}", field="on_release", value=on_release
            ) from None
        self.refill_concurrency = _positive_int("refill_concurrency", refill_concurrency)
        self.health_check = bool(health_check)
        if not maintenance_interval > 0:
            raise ConfigurationError(
                f"maintenance_interval must be > 0, got {maintenance_interval!r}",
                field="maintenance_interval",
                value=maintenance_interval,
            )
        self.maintenance_interval = maintenance_interval
        for taken in ("sandbox_id", "name", "backend", "backend_type"):
            if taken in sandbox_kwargs:
                raise ConfigurationError(
                    f"a pool names its sandboxes itself: {taken}= cannot be given to SandboxPool",
                    field=taken,
                    value=sandbox_kwargs[taken],
                )
        # a misspelt or unknown option is refused here, not at start() as a TypeError from Sandbox()
        accepted = _SANDBOX_KWARGS | ({"docker_image"} if self.backend_type == BackendType.DOCKER.value else set())
        for key in sandbox_kwargs:
            if key not in accepted:
                raise ConfigurationError(
                    f"SandboxPool got an unknown option {key}=: the pool's own options are "
                    f"{', '.join(sorted(POOL_OPTIONS | {'size'}))}; a {self.backend_type} pool's sandboxes take "
                    f"{', '.join(sorted(accepted))} (backend-specific options go in backend_options)",
                    field=key,
                    value=sandbox_kwargs[key],
                )
        self.sandbox_kwargs = dict(sandbox_kwargs)

        self._idle: collections.deque[_Slot] = collections.deque()
        self._in_use: dict[int, _Slot] = {}
        self._creating = 0
        self._resetting = 0
        self._destroying = 0
        self._waiting = 0
        self._counts = dict.fromkeys(
            ("created", "destroyed", "resets", "acquired", "create_failures", "reset_failures", "health_failures"), 0
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._cond: asyncio.Condition | None = None
        self._sem: asyncio.Semaphore | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._last_error: BaseException | None = None
        self._failures = 0  # consecutive failed creations (backs off the refill)
        self._failure_gen = 0
        #: the clock of max_age (a test may replace it)
        self._clock: Callable[[], float] = time.monotonic

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> SandboxPool:
        """Start filling the pool up to ``min_idle``; with ``wait`` (default) return once they are ready.

        A sandbox that cannot be made raises here (the first failure, with its cause) when
        ``wait`` is set. Idempotent."""
        if self._closed:
            raise PoolClosedError("the pool was shut down; make a new one")
        if not self._started:
            self._started = True
            self._cond = asyncio.Condition()
            self._sem = asyncio.Semaphore(self.refill_concurrency)
            self._maintenance = asyncio.create_task(self._maintain(), name="alphora-sandbox-pool-maintenance")
            self._refill()
        if wait:
            cond = self._condition()
            async with cond:
                while len(self._idle) < self.min_idle and not self._closed:
                    if self._last_error is not None:
                        error = self._last_error
                        raise SandboxError(
                            f"the pool could not start a {self.backend_type} sandbox: {error}",
                        ) from error
                    await cond.wait()
        return self

    async def shutdown(self) -> None:
        """Destroy every sandbox of the pool (ready, handed out, being made or reset) and stop.

        Handed-out sandboxes are retired and destroyed too; callers waiting in :meth:`acquire` get
        :class:`PoolClosedError`. Returns when nothing of the pool runs any more. Idempotent."""
        self._closed = True
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()
        # creations and resets in flight see _closed when they finish and destroy what they hold
        while True:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            slots = list(self._idle) + list(self._in_use.values())
            self._idle.clear()
            self._in_use.clear()
            if not slots:
                break
            for slot in slots:
                self._discard(slot, "the pool shuts down")

    async def __aenter__(self) -> SandboxPool:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> PoolStats:
        """Counts of ready, handed-out, in-flight sandboxes and totals since start."""
        c = self._counts
        return PoolStats(
            size=self.size,
            min_idle=self.min_idle,
            idle=len(self._idle),
            in_use=len(self._in_use),
            creating=self._creating,
            resetting=self._resetting,
            destroying=self._destroying,
            waiting=self._waiting,
            created=c["created"],
            destroyed=c["destroyed"],
            resets=c["resets"],
            acquired=c["acquired"],
            create_failures=c["create_failures"],
            reset_failures=c["reset_failures"],
            health_check_failures=c["health_failures"],
        )

    async def settle(self) -> None:
        """Wait until no sandbox is being made, reset or destroyed (for tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- hand-out and return ---------------------------------------------------------------------

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[Sandbox]:
        """``async with pool.acquire(timeout=...) as sandbox:`` a sandbox for the block alone; returned
        (reset or destroyed) when the block ends. :class:`PoolTimeoutError` when none is free in time."""
        sandbox = await self.get(timeout)
        try:
            yield sandbox
        finally:
            await self.put(sandbox)

    async def get(self, timeout: float | None = None) -> Sandbox:
        """A sandbox for the caller alone until :meth:`put` (use :meth:`acquire` where you can).

        Waits up to ``timeout`` seconds (None: as long as it takes) when all ``size`` sandboxes are
        handed out (:class:`PoolTimeoutError` after that). If a sandbox the pool makes while the caller
        waits fails to start, raises :class:`~alphora.sandbox.errors.SandboxError` with that cause
        instead of waiting on. Starts the pool if it was not started."""
        if timeout is not None and not timeout >= 0:
            raise ConfigurationError(f"timeout must be >= 0 or None, got {timeout!r}", field="timeout", value=timeout)
        if not self._started:
            await self.start(wait=False)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            slot = await self._take_idle(deadline)
            try:
                healthy = await slot.sandbox.health_check() if self.health_check else True
            except BaseException:  # cancelled while checking: the slot must not stay "handed out"
                self._in_use.pop(id(slot.sandbox), None)
                self._discard(slot, "the caller was cancelled during its health check")
                raise
            if not healthy:
                self._in_use.pop(id(slot.sandbox), None)
                self._counts["health_failures"] += 1
                self._discard(slot, "it failed its health check")
                continue
            slot.uses += 1
            self._counts["acquired"] += 1
            slot.sandbox._touch()
            return slot.sandbox

    async def put(self, sandbox: Sandbox) -> None:
        """Give a sandbox from :meth:`get` back; the object is retired at once (see the module
        docstring), the sandbox reset or destroyed in the background."""
        slot = self._in_use.get(id(sandbox))
        if slot is None or slot.sandbox is not sandbox:
            if self._closed and sandbox.status is SandboxStatus.DESTROYED:
                return  # shutdown already destroyed it
            raise SandboxError(
                f"sandbox {sandbox.sandbox_id} is not handed out by this pool (returned twice, taken, or foreign)",
                sandbox_id=sandbox.sandbox_id,
            )
        del self._in_use[id(sandbox)]
        destroyed_by_holder = sandbox.status is SandboxStatus.DESTROYED
        _retire(sandbox)
        reason = self._retire_reason(slot)
        if destroyed_by_holder:
            reason = "its holder destroyed it"
        elif reason is None and self.on_release is OnRelease.DESTROY:
            reason = "on_release='destroy'"
        if reason is not None:
            self._discard(slot, reason)
        else:
            self._resetting += 1
            self._spawn(self._reset(slot), f"reset {slot.backend.sandbox_id}")
        self._refill()

    async def take(self, timeout: float | None = None) -> Sandbox:
        """A sandbox that leaves the pool: the caller owns it (stop/destroy it yourself); the pool
        makes a replacement. What :class:`~alphora.sandbox.manager.SandboxManager` uses with ``pool_size``."""
        sandbox = await self.get(timeout)
        self.detach(sandbox)
        return sandbox

    def detach(self, sandbox: Sandbox) -> None:
        """Hand a sandbox from :meth:`get` over to the caller for good (the pool forgets it)."""
        slot = self._in_use.get(id(sandbox))
        if slot is None or slot.sandbox is not sandbox:
            raise SandboxError(
                f"sandbox {sandbox.sandbox_id} is not handed out by this pool", sandbox_id=sandbox.sandbox_id
            )
        del self._in_use[id(sandbox)]
        self._refill()

    # -- internals -------------------------------------------------------------------------------

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            raise PoolClosedError("the pool is not started")
        return self._cond

    def _owned(self) -> int:
        return len(self._idle) + len(self._in_use) + self._creating + self._resetting

    def _expired(self, slot: _Slot) -> bool:
        return self.max_age is not None and self._clock() - slot.created >= self.max_age

    def _retire_reason(self, slot: _Slot) -> str | None:
        if self._closed:
            return "the pool shuts down"
        if self.max_uses is not None and slot.uses >= self.max_uses:
            return f"it was handed out {slot.uses} times (max_uses={self.max_uses})"
        if self._expired(slot):
            return f"it is older than max_age={self.max_age:g}s"
        return None

    async def _take_idle(self, deadline: float | None) -> _Slot:
        cond = self._condition()
        loop = asyncio.get_running_loop()
        async with cond:
            self._waiting += 1
            try:
                seen_failures = self._failure_gen
                while True:
                    if self._closed:
                        raise PoolClosedError("the pool was shut down")
                    while self._idle:
                        slot = self._idle.popleft()
                        reason = self._retire_reason(slot)
                        if reason is not None:
                            self._discard(slot, reason)
                            continue
                        self._in_use[id(slot.sandbox)] = slot
                        return slot
                    if self._failure_gen != seen_failures:
                        error = self._last_error
                        raise SandboxError(
                            f"the pool could not start a {self.backend_type} sandbox: {error}"
                        ) from error
                    self._refill()
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        s = self.stats()
                        raise PoolTimeoutError(
                            f"no sandbox became free in time ({s.in_use} of size={self.size} handed out, "
                            f"{s.creating} being made, {s.resetting} being reset)"
                            + (f"; last failure: {self._last_error}" if self._last_error else "")
                        )
                    try:
                        await asyncio.wait_for(cond.wait(), remaining)
                    except asyncio.TimeoutError:
                        pass
            finally:
                self._waiting -= 1

    def _refill(self) -> None:
        """Start making sandboxes until ready + in flight covers min_idle and the waiters, within size."""
        if self._closed or not self._started:
            return
        wanted = max(self.min_idle, self._waiting)
        need = wanted - (len(self._idle) + self._creating + self._resetting)
        room = self.size - self._owned()
        for _ in range(min(need, room)):
            self._creating += 1
            self._spawn(self._create(), "create")

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"alphora-sandbox-pool: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()

    def _adopt(self, backend: Backend, template: Sandbox) -> Sandbox:
        """A new facade over a running backend, as the configuration makes it (env vars included)."""
        from .sandbox import Sandbox

        sandbox = Sandbox(
            template.backend_type,
            sandbox_id=backend.sandbox_id,
            base_path=template.base_path,
            resource_limits=template.resource_limits,
            security_policy=template.security_policy,
            env_vars=self.sandbox_kwargs.get("env_vars"),
            registry=template._registry,
            backend=backend,
            keep_workspace=False,
        )
        sandbox._status = SandboxStatus.RUNNING
        sandbox.started_at = template.started_at
        return sandbox

    async def _fingerprint(self, backend: Backend) -> str:
        keep = [p for p in backend.internal_paths if p not in backend.scratch_paths]
        # not backend.python when that lives in the fingerprinted venv (local, isolated): a holder that
        # replaced .venv/bin/python would be asked to vouch for itself. Their base interpreter is
        # outside the workspace (isolated: bound read-only); Docker's is the image's, in a new container.
        python = backend.probe_python or backend.python
        result = await backend.execute_argv([python, "-I", "-S", "-c", PROBE, *keep], timeout=60)
        if result.return_code != 0 or not result.stdout.strip():
            raise _Dirty(
                f"the package-environment probe failed: {result.error or result.stderr.strip()[-300:]}",
                sandbox_id=backend.sandbox_id,
            )
        return result.stdout.split()[0]

    async def _wipe(self, backend: Backend) -> None:
        """Empty the workspace but for the package environment; empty scratch space; check."""
        internal = set(backend.internal_paths)
        for entry in await backend.list_dir(""):
            if entry.name not in internal:
                await backend.remove(entry.path)
        for scratch in backend.scratch_paths:
            for entry in await backend.list_dir(scratch) if await backend.stat(scratch) else ():
                await backend.remove(entry.path)
        left = sorted(e.name for e in await backend.list_dir("") if e.name not in internal)
        for scratch in backend.scratch_paths:
            left += [e.path for e in await backend.list_dir(scratch)] if await backend.stat(scratch) else []
        if left:
            raise _Dirty(f"the workspace could not be emptied: {left[:5]}", sandbox_id=backend.sandbox_id)

    async def _create(self) -> None:
        from .sandbox import Sandbox

        assert self._sem is not None
        sandbox: Sandbox | None = None
        try:
            if self._failures:  # back off after failures (a broken engine must not be hammered)
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(self._failures, 5)))
            async with self._sem:
                if self._closed:
                    self._creating -= 1
                    return
                # Sandbox.create: the spec's docker_image= works here as in Sandbox.create("docker", ...)
                sandbox = Sandbox.create(self.backend_type, keep_workspace=False, **self.sandbox_kwargs)
                await sandbox.start()
                fingerprint = await self._fingerprint(sandbox.backend)
        except Exception as exc:  # noqa: BLE001 - any failure: counted, reported to waiters, backed off
            self._creating -= 1
            self._counts["create_failures"] += 1
            self._failures += 1
            self._failure_gen += 1
            self._last_error = exc
            log.warning("the pool could not make a %s sandbox: %s", self.backend_type, exc)
            if sandbox is not None:
                with contextlib.suppress(Exception):
                    await sandbox.destroy()
            await self._notify()
            return
        except BaseException:
            self._creating -= 1
            if sandbox is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(sandbox.destroy())
            raise
        self._creating -= 1
        self._failures = 0
        self._last_error = None
        self._counts["created"] += 1
        slot = _Slot(sandbox, fingerprint, self._clock())
        if self._closed:
            self._discard(slot, "the pool shuts down")
        else:
            self._idle.append(slot)
        await self._notify()

    async def _reset(self, slot: _Slot) -> None:
        assert self._sem is not None
        backend = slot.backend
        try:
            async with self._sem:
                await backend.stop()
                await backend.start()
                await self._wipe(backend)
                fingerprint = await self._fingerprint(backend)
                if fingerprint != slot.fingerprint:
                    raise _Dirty(
                        "the package environment or the home directory changed (a package installed, a file "
                        "planted): a reset cannot undo that",
                        sandbox_id=backend.sandbox_id,
                    )
        except Exception as exc:  # noqa: BLE001 - any failure of a reset destroys the sandbox
            self._resetting -= 1
            self._counts["reset_failures"] += 1
            log.info("sandbox %s is destroyed instead of reset: %s", backend.sandbox_id, exc)
            self._discard(slot, f"its reset failed: {exc}")
            self._refill()
            await self._notify()
            return
        except BaseException:
            self._resetting -= 1
            self._discard(slot, "its reset was cancelled")
            raise
        self._resetting -= 1
        self._counts["resets"] += 1
        slot.sandbox = self._adopt(backend, slot.sandbox)
        reason = self._retire_reason(slot)
        if reason is not None:
            self._discard(slot, reason)
        else:
            self._idle.append(slot)
        self._refill()
        await self._notify()

    def _discard(self, slot: _Slot, reason: str) -> None:
        """Destroy a sandbox the pool no longer keeps (in the background; shutdown waits for it)."""
        log.debug("pool destroys sandbox %s: %s", slot.backend.sandbox_id, reason)
        _retire(slot.sandbox)
        self._destroying += 1
        self._spawn(self._destroy(slot), f"destroy {slot.backend.sandbox_id}")

    async def _destroy(self, slot: _Slot) -> None:
        try:
            await slot.backend.destroy()
        except Exception as exc:  # noqa: BLE001 - logged; the pool forgets it either way
            log.warning("the pool could not destroy sandbox %s: %s", slot.backend.sandbox_id, exc)
        finally:
            self._destroying -= 1
            self._counts["destroyed"] += 1
        self._refill()
        await self._notify()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_interval)
            try:
                for slot in [s for s in self._idle if self._expired(s)]:
                    self._idle.remove(slot)
                    self._discard(slot, f"it is older than max_age={self.max_age:g}s")
                self._refill()
            except Exception:  # pragma: no cover - keeps the loop alive whatever happens
                log.warning("pool maintenance failed", exc_info=True)

    def __repr__(self) -> str:
        s = self.stats()
        state = "closed" if self._closed else "running" if self._started else "not started"
        return f"<SandboxPool {self.backend_type} {s.idle} idle, {s.in_use} in use, size={self.size} {state}>"
