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
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, TypeVar

from ..errors import SandboxError
from ..types import SandboxStatus

__all__ = ["ManagerBase", "SandboxBase", "SyncInAsyncError", "SyncWrapper", "loop_thread_alive", "register"]

log = logging.getLogger("alphora.sandbox.sync")

T = TypeVar("T")

THREAD_NAME = "alphora-sandbox-sync"


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
        "(SandboxManager, SandboxTools) and `await` its methods (`async with`, `async for`)."
    )


class _Family:
    """The sync objects that share one root; holds a lease on the loop while the root needs it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leased = False
        self._in_flight = 0
        self.needs_loop: Callable[[], bool] = lambda: False

    def run(self, what: str, factory: Callable[[], Awaitable[T]]) -> T:
        _refuse_in_loop(what)
        with self._lock:
            if not self._leased:
                self._loop = _LOOP.acquire()
                self._leased = True
            self._in_flight += 1
            loop = self._loop

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
        try:
            return self.needs_loop()
        except Exception:  # a broken predicate must not leak the thread's lease forever
            log.debug("needs_loop predicate failed", exc_info=True)
            return False

    def close(self) -> None:
        """Give the lease back (the root was garbage-collected)."""
        with self._lock:
            leased, self._leased = self._leased, False
        if leased:
            _LOOP.release()


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

    def _bind(self, obj: Any, family: _Family | None) -> None:
        self._obj = obj
        if family is None:  # a root: it decides when the loop is needed
            family = _Family()
            ref = weakref.ref(self)
            family.needs_loop = lambda: (lambda me: me is not None and me._needs_loop())(ref())
            weakref.finalize(self, family.close)
        self._family = family
        with SyncWrapper._wrappers_lock:
            SyncWrapper._wrappers[id(obj)] = self

    @classmethod
    def _from_async(cls: type[W], obj: Any, family: _Family | None = None) -> W:
        self = cls.__new__(cls)
        self._bind(obj, family)
        return self

    @property
    def async_object(self) -> Any:
        """The async object behind this one (use it from async code, on the sync API's loop only
        through this object's methods)."""
        return self._obj

    def _needs_loop(self) -> bool:
        return False

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


class ManagerBase(SyncWrapper):
    """A manager needs the loop while it runs (its reaper) or holds a sandbox that is not stopped."""

    def _needs_loop(self) -> bool:
        return bool(self._obj.is_running) or any(s.status in _BUSY for s in self._obj.list_sandboxes())


#: filled by the generated module: the sync classes, most specific first
_SYNC_CLASSES: list[type[SyncWrapper]] = []


def register(*classes: type[SyncWrapper]) -> None:
    _SYNC_CLASSES.extend(classes)
