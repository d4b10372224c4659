"""The machinery behind the sync API: one shared event-loop thread and the base of every wrapper.

Every sync object forwards its calls to the async object it wraps, on one event loop that runs in
a background thread (``alphora-sandbox-sync``). That thread is shared by all sync objects of the
process and exists only while one of them *needs* it — a sandbox that is running, a manager that
is running (or still holds a running sandbox). When the last one stops, is destroyed, is shut down
or is garbage-collected, the loop is stopped, its executor threads are joined and the thread ends:
a script that closes what it opened leaves no thread behind. A later call starts a fresh loop.

Objects that come out of another sync object (a manager's sandboxes, a sandbox's sessions, tools
over a sync sandbox) belong to the same *family*: they run on the loop their root keeps alive.

Calling the sync API from a thread that runs an event loop would block that loop (and deadlock if
it is the sync API's own loop, e.g. from an ``on_output`` callback), so it raises
:class:`SyncInAsyncError` instead and names the async API to use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import logging
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, TypeVar

from ..errors import SandboxError
from ..types import SandboxStatus

__all__ = ["ManagerBase", "PoolBase", "SandboxBase", "SyncInAsyncError", "SyncWrapper", "loop_thread_alive", "register"]

log = logging.getLogger("alphora.sandbox.sync")

T = TypeVar("T")

THREAD_NAME = "alphora-sandbox-sync"
#: at interpreter exit, how long clean-ups of still-open sync objects may take
EXIT_GRACE_SECONDS = 30.0


class SyncInAsyncError(SandboxError, RuntimeError):
    """A sync-API call from a thread that runs an asyncio event loop (it would block the loop)."""


class _LoopThread:
    """The shared loop thread, started by the first lease and stopped by the last release."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def acquire(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, ready), name=THREAD_NAME, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            self._users += 1
            return self._loop

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._loop is None:
                return
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def join(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for the loop thread to end, if one runs."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def release_from_finalizer(self) -> None:
        """:meth:`release`, or the same on a short-lived thread if this thread holds the lock now."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            self.release()
        else:
            threading.Thread(target=self.release, name=f"{THREAD_NAME}-release", daemon=True).start()

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()


_LOOP = _LoopThread()


def loop_thread_alive() -> bool:
    """True while the sync API's loop thread runs (some sync object still needs it)."""
    return _LOOP.alive


def _refuse_in_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SyncInAsyncError(
        f"{what} is the sync API and was called from a thread that runs an asyncio event loop, which it "
        "would block. In async code use the async API instead: `from alphora.sandbox import Sandbox` "
        "(SandboxManager, SandboxTools) and `await` its methods (`async with`, `async for`). Jupyter and IPython "
        "run such a loop in the main thread: there, use the async API with top-level `await`."
    )


class _Family:
    """The sync objects that share one root; holds a lease on the loop while the root needs it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leased = False
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.needs_loop: Callable[[], bool] = lambda: False
        #: the sync objects that came out of the root (a pool's or manager's sandboxes, sessions)
        self.members: weakref.WeakSet[SyncWrapper] = weakref.WeakSet()

    def run(self, what: str, factory: Callable[[], Awaitable[T]]) -> T:
        _refuse_in_loop(what)
        with self._lock:
            if not self._leased:
                self._loop = _LOOP.acquire()
                self._leased = True
            self._in_flight += 1
            loop = self._loop
            assert loop is not None

        async def call() -> T:
            return await factory()

        try:
            future = asyncio.run_coroutine_threadsafe(call(), loop)
            try:
                return future.result()
            except BaseException:  # KeyboardInterrupt in the caller cancels the call on the loop
                future.cancel()
                raise
        finally:
            with self._lock:
                self._in_flight -= 1
                release = self._in_flight == 0 and self._leased and not self._needs_loop()
                if release:
                    self._leased = False
            if release:
                _LOOP.release()

    def _needs_loop(self) -> bool:
        """The root needs the loop, or an object that came out of it does (a sandbox taken from a
        pool keeps running after the pool is shut down)."""
        try:
            return self.needs_loop() or any(m._needs_loop() for m in list(self.members))
        except Exception:  # a broken predicate must not leak the thread's lease forever
            log.debug("needs_loop predicate failed", exc_info=True)
            return False

    def close_if_idle(self) -> None:
        """Give the lease back now if nothing needs the loop (after a root was made)."""
        with self._lock:
            release = self._leased and self._in_flight == 0 and not self._needs_loop()
            if release:
                self._leased = False
        if release:
            _LOOP.release()

    def leased_loop(self) -> asyncio.AbstractEventLoop | None:
        with self._lock:
            return self._loop if self._leased else None

    def close(self) -> None:
        """Give the lease back: the root was garbage-collected without being closed. A finalizer can
        run in the middle of any code of this thread, including while it holds one of the locks
        involved; then the release is handed to a short-lived thread instead of deadlocking."""
        if not self._lock.acquire(blocking=False):
            threading.Thread(target=self.close, name=f"{THREAD_NAME}-release", daemon=True).start()
            return
        try:
            leased, self._leased = self._leased, False
        finally:
            self._lock.release()
        if leased:
            _LOOP.release_from_finalizer()


W = TypeVar("W", bound="SyncWrapper")

_BUSY = (SandboxStatus.STARTING, SandboxStatus.RUNNING, SandboxStatus.STOPPING, SandboxStatus.ERROR)


class SyncWrapper:
    """Base of the sync classes: holds the async object (``.async_object``) and its family."""

    #: the async class this one mirrors (set on each generated class)
    _async_class: ClassVar[type]
    _wrappers: ClassVar[weakref.WeakValueDictionary[int, SyncWrapper]] = weakref.WeakValueDictionary()
    _wrappers_lock: ClassVar[threading.Lock] = threading.Lock()

    _obj: Any
    _family: _Family
    _root: bool

    def _bind(self, obj: Any, family: _Family | None, *, root: bool = False) -> None:
        self._obj = obj
        self._root = root or family is None
        if family is None:
            family = _Family()
        if self._root:  # a root: it decides when the loop is needed
            ref = weakref.ref(self)
            family.needs_loop = lambda: (lambda me: me is not None and me._needs_loop())(ref())
            weakref.finalize(self, _finalize_root, family, obj, type(self)._cleanup, type(self).__name__)
        else:
            family.members.add(self)
        self._family = family
        with SyncWrapper._wrappers_lock:
            SyncWrapper._wrappers[id(obj)] = self

    @classmethod
    def _from_async(cls: type[W], obj: Any, family: _Family | None = None) -> W:
        self = cls.__new__(cls)
        self._bind(obj, family)
        return self

    @classmethod
    def _from_async_call(cls: type[W], name: str, factory: Callable[[], Awaitable[Any]]) -> W:
        """A new root made by an async factory (e.g. ``Sandbox.resume``): the factory runs on the
        loop under the new root's own claim, which the loop keeps while the object is being made."""
        family = _Family()
        family.needs_loop = lambda: True
        try:
            obj = family.run(f"{cls.__name__}.{name}", factory)
        except BaseException:
            family.needs_loop = lambda: False
            family.close()
            raise
        self = cls.__new__(cls)
        self._bind(obj, family, root=True)
        family.close_if_idle()
        return self

    @property
    def async_object(self) -> Any:
        """The async object behind this one (use it from async code, on the sync API's loop only
        through this object's methods)."""
        return self._obj

    def _needs_loop(self) -> bool:
        return False

    @staticmethod
    def _cleanup(obj: Any) -> Callable[[], Awaitable[Any]] | None:
        """What closes ``obj`` when its sync object is garbage-collected still open (None: nothing)."""
        return None

    # -- forwarding (used by the generated methods) ----------------------------------------------

    def _run(self, name: str, factory: Callable[[], Awaitable[T]]) -> T:
        return self._family.run(f"{type(self).__name__}.{name}", factory)

    def _wrap(self, value: Any) -> Any:
        """Async objects in a result become the sync objects of this family (the same one each time)."""
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        if isinstance(value, dict):
            return {k: self._wrap(v) for k, v in value.items()}
        if value is None or isinstance(value, SyncWrapper):
            return value
        with SyncWrapper._wrappers_lock:
            known = SyncWrapper._wrappers.get(id(value))
        if known is not None and known._obj is value:
            return known
        for cls in _SYNC_CLASSES:
            if isinstance(value, cls._async_class):
                return cls._from_async(value, self._family)
        return value

    def _iterate(self, name: str, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """An async iterator as a sync one; leaving the loop early closes it (and cancels its call)."""
        what = f"{type(self).__name__}.{name}"
        _refuse_in_loop(what)
        holder: list[AsyncIterator[T]] = []

        async def first() -> T:
            holder.append(make())
            return await holder[0].__anext__()

        def items() -> Iterator[T]:
            try:
                item = self._family.run(what, first)
                while True:
                    yield self._wrap(item)
                    item = self._family.run(what, lambda: holder[0].__anext__())
            except StopAsyncIteration:
                return
            finally:
                aclose = getattr(holder[0], "aclose", None) if holder else None
                if aclose is not None:
                    with contextlib.suppress(StopAsyncIteration, SyncInAsyncError):
                        self._family.run(what, aclose)

        return items()

    @contextlib.contextmanager
    def _context(self, name: str, make: Callable[[], contextlib.AbstractAsyncContextManager[Any]]) -> Iterator[Any]:
        """An async context manager as a sync one."""
        what = f"{type(self).__name__}.{name}"
        holder: list[contextlib.AbstractAsyncContextManager[Any]] = []

        async def enter() -> Any:
            holder.append(make())
            return await holder[0].__aenter__()

        value = self._wrap(self._family.run(what, enter))
        try:
            yield value
        except BaseException as exc:
            error = exc
            if not self._family.run(what, lambda: holder[0].__aexit__(type(error), error, error.__traceback__)):
                raise
        else:
            self._family.run(what, lambda: holder[0].__aexit__(None, None, None))

    # -- data attributes (sandbox_id, name, resource_limits, specs, …) -----------------------------

    def __getattr__(self, name: str) -> Any:
        """The async object's public data attributes, read through (methods are mirrored above)."""
        if name.startswith("_") or "_obj" not in self.__dict__:
            raise AttributeError(name)
        value = getattr(self._obj, name)
        if callable(value) and not isinstance(value, type):
            raise AttributeError(f"{type(self).__name__} has no method {name!r}")
        return self._wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        """Public attributes the async object has (``keep_workspace``, …) are set on it."""
        if not name.startswith("_") and "_obj" in self.__dict__ and hasattr(self._obj, name):
            setattr(self._obj, name, _unwrap(value))
        else:
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<sync {self._obj!r}>"


def _finalize_root(
    family: _Family, obj: Any, cleanup: Callable[[Any], Callable[[], Awaitable[Any]] | None], kind: str
) -> None:
    """A root sync object was garbage-collected (or the interpreter exits) while it still needed the
    loop: close it on the loop as leaving its ``with`` block would, then give the lease back. Nothing
    blocks here (a finalizer may run anywhere); at exit, :func:`_wait_at_exit` waits for it."""
    try:
        close = cleanup(obj)
    except Exception:  # a half-built object: nothing to close
        log.debug("no clean-up for a garbage-collected sync %s", kind, exc_info=True)
        close = None
    loop = family.leased_loop()
    if close is None or loop is None:
        family.close()
        return
    warnings.warn(
        f"sync {kind} {obj!r} was garbage-collected while open; closing it now (use 'with' or close it)",
        ResourceWarning,
        stacklevel=2,
    )

    async def run() -> None:
        try:
            await close()
        except Exception:
            log.warning("closing a garbage-collected sync %s failed", kind, exc_info=True)

    try:
        future = asyncio.run_coroutine_threadsafe(run(), loop)
    except RuntimeError:  # the loop is already closed
        family.close()
        return
    future.add_done_callback(lambda _f: family.close())


def _close_all_at_exit() -> None:
    """At interpreter exit, close the sync objects still open (as the garbage collector would) and
    wait, bounded, for that to finish. Runs from ``threading``'s exit hooks, which come before the
    thread pools stop taking work (a sandbox's clean-up needs the loop's executor); the later
    weakref finalizers then find nothing left to do."""
    with SyncWrapper._wrappers_lock:
        roots = [w for w in list(SyncWrapper._wrappers.values()) if w._root]
    for root in roots:
        _finalize_root(root._family, root._obj, type(root)._cleanup, type(root).__name__)
    _LOOP.join(EXIT_GRACE_SECONDS)


# threading's exit hooks run last-registered first; concurrent.futures.thread registers the one that
# stops its pools when it is first imported, so it is imported here, before ours is registered
# (atexit proper would run too late: the pools would already refuse work)
importlib.import_module("concurrent.futures.thread")
getattr(threading, "_register_atexit", atexit.register)(_close_all_at_exit)


def _family_of(*objs: Any) -> _Family | None:
    """The family of the first sync object among a constructor's arguments (None: a new root)."""
    for obj in objs:
        if isinstance(obj, SyncWrapper):
            return obj._family
    return None


def _unwrap(value: Any) -> Any:
    """The async object behind a sync one; an async object of a wrapped class is refused (it would
    run on another loop than the sync object's)."""
    if isinstance(value, SyncWrapper):
        return value._obj
    for cls in _SYNC_CLASSES:
        if isinstance(value, cls._async_class):
            raise TypeError(
                f"got the async {cls._async_class.__name__}; the sync API takes "
                f"alphora.sandbox.sync.{cls.__name__} objects (or use the async API throughout)"
            )
    return value


class SandboxBase(SyncWrapper):
    """A sandbox needs the loop while its backend may hold loop resources (starting … error)."""

    def _needs_loop(self) -> bool:
        return bool(self._obj.status in _BUSY)

    @staticmethod
    def _cleanup(obj: Any) -> Callable[[], Awaitable[Any]] | None:
        if obj.status not in _BUSY:
            return None
        return lambda: obj.__aexit__(None, None, None)  # what leaving ``with`` does: stop or destroy


class PoolBase(SyncWrapper):
    """A pool needs the loop from its start until its shutdown (its refill and maintenance tasks)."""

    def _needs_loop(self) -> bool:
        return not self._obj.closed  # the calls that use the loop (start, get, acquire, take) start it

    @staticmethod
    def _cleanup(obj: Any) -> Callable[[], Awaitable[Any]] | None:
        return None if obj.closed else obj.shutdown


class ManagerBase(SyncWrapper):
    """A manager needs the loop while it runs (its reaper) or holds a sandbox that is not stopped."""

    def _needs_loop(self) -> bool:
        return bool(self._obj.is_running) or any(s.status in _BUSY for s in self._obj.list_sandboxes())

    @staticmethod
    def _cleanup(obj: Any) -> Callable[[], Awaitable[Any]] | None:
        if not obj.is_running and not any(s.status in _BUSY for s in obj.list_sandboxes()):
            return None
        return lambda: obj.shutdown(force=True)


#: filled by the generated module: the sync classes, most specific first
_SYNC_CLASSES: list[type[SyncWrapper]] = []


def register(*classes: type[SyncWrapper]) -> None:
    _SYNC_CLASSES.extend(classes)
