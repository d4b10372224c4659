"""The asyncio protocol client: requests multiplexed over one runner connection.

:class:`RunnerClient` tags every request with an id, feeds the streamed frames of each to its
caller and returns the final one; an ``error`` frame becomes :class:`RunnerError`, the end of the
stream :class:`RunnerLost` for every request in flight. Frames are :mod:`.protocol`'s.

This module also keeps, for code written against earlier versions, the names that used to live
here: ``RunnerBackend`` (now :mod:`.backend`), ``RunnerSession`` (:mod:`.session`),
``RunnerConnection`` and ``ProcessConnection`` (:mod:`.transport`), ``entry_to_fileinfo`` and
``map_fs_error`` (:mod:`alphora.sandbox.backend`). New code imports them from those modules.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..backend import OutputCallback, OutputChunk, emit, entry_to_fileinfo, map_fs_error
from ..errors import BackendError
from ..types import Attachment
from . import source_frame
from .display import MAX_BUNDLE_TYPES, MAX_CELL_OUTPUTS, OutputBudget
from .protocol import (
    BIN,
    CHUNK,
    DISPLAY_STREAM,
    EV_DONE,
    EV_ERROR,
    EV_LOST,
    EV_OUT,
    HEADER,
    WINDOW,
    chunk_header,
    decode_body,
    encode,
    parse_header,
)
from .transport import ProcessConnection, RunnerConnection

if TYPE_CHECKING:
    from .backend import RunnerBackend
    from .session import RunnerSession

__all__ = [
    "OutputCollector",
    "ProcessConnection",
    "RunnerBackend",
    "RunnerClient",
    "RunnerConnection",
    "RunnerError",
    "RunnerLost",
    "RunnerSession",
    "entry_to_fileinfo",
    "map_fs_error",
]


class RunnerLost(BackendError):
    """The runner process ended (or its stream broke) while a request was in flight."""


class RunnerError(Exception):
    """An ``error`` frame: the runner refused a request (``etype`` names the exception kind)."""

    def __init__(self, ev: Mapping[str, Any]) -> None:
        super().__init__(ev.get("msg", ""))
        self.etype = str(ev.get("etype", "Error"))
        self.msg = str(ev.get("msg", ""))
        self.path = ev.get("path")


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

    async def start(
        self, hello: Mapping[str, Any], send_source: bool = True, same_interpreter: bool = False
    ) -> dict[str, Any]:
        self._reader_task = asyncio.ensure_future(self._read_loop())
        if send_source:
            self.conn.write(source_frame(same_interpreter))
        self.info = await self.request({"op": "hello", **hello}, watchdog=30.0)
        return self.info

    async def _read_loop(self) -> None:
        reader = self.conn.reader
        try:
            while True:
                size, binary = parse_header(await reader.readexactly(HEADER))
                msg = decode_body(await reader.readexactly(size), binary)
                rid = msg.get("id")
                queue = self._pending.get(rid) if isinstance(rid, int) else None
                if queue is not None:
                    queue.put_nowait(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            self.lost_reason = "" if isinstance(exc, asyncio.IncompleteReadError) else repr(exc)
        finally:
            self.alive = False
            for queue in self._pending.values():
                queue.put_nowait({"ev": EV_LOST})

    async def send(self, msg: Mapping[str, Any]) -> None:
        data = encode(dict(msg))
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
                if kind == EV_DONE:
                    return ev
                if kind == EV_ERROR:
                    raise RunnerError(ev)
                if kind == EV_LOST:
                    raise RunnerLost(self.lost_message())
                if on_event is not None:
                    await on_event(ev)
        finally:
            self._pending.pop(rid, None)

    async def upload(
        self, msg: Mapping[str, Any], chunks: AsyncIterable[bytes], chunk_size: int = CHUNK
    ) -> dict[str, Any]:
        """A ``put``: send ``msg``, then every chunk of ``chunks`` as binary frames (pieces of at
        most ``chunk_size`` bytes; each one drained before the next, so at most one is buffered
        here), then the empty frame that commits it; returns the final frame. An error frame stops
        the sending early (and raises :class:`RunnerError`); a failing or cancelled ``chunks``
        cancels the upload (the runner removes its temp file) and re-raises."""
        if not self.alive:
            raise RunnerLost(self.lost_message())
        rid = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[rid] = queue
        committed = False
        try:
            await self.send({**msg, "id": rid})
            async for chunk in chunks:
                view = memoryview(chunk).cast("B")
                for i in range(0, len(view), chunk_size):
                    if not queue.empty():  # refused (or lost) early: stop sending
                        return self._final(queue.get_nowait())
                    await self._send_chunk(rid, view[i : i + chunk_size])
            committed = True
            await self._send_chunk(rid, b"")
            while True:
                ev = await queue.get()
                if ev.get("ev") in (EV_DONE, EV_ERROR, EV_LOST):
                    return self._final(ev)
        finally:
            self._pending.pop(rid, None)
            if not committed and self.alive:
                await self._drop_remote(rid)

    async def download(
        self, msg: Mapping[str, Any], chunk_size: int = CHUNK, window: int = WINDOW
    ) -> AsyncIterator[bytes]:
        """A ``get``: yield the file's bytes as the runner sends them (each binary frame a piece of
        at most ``chunk_size`` bytes; at most ``window`` of them buffered here: a new one is granted
        as each is taken). Leaving the loop early cancels the transfer."""
        if not self.alive:
            raise RunnerLost(self.lost_message())
        rid = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[rid] = queue
        finished = False
        try:
            await self.send({**msg, "id": rid, "chunk": chunk_size, "window": window})
            while True:
                ev = await queue.get()
                data = ev.get(BIN)
                if data is not None:
                    if data:
                        yield data
                        await self.send({"op": "more", "target": rid, "n": 1})
                    continue
                kind = ev.get("ev")
                if kind == EV_OUT:
                    continue
                finished = True
                self._final(ev)
                return
        finally:
            self._pending.pop(rid, None)
            if not finished and self.alive:
                await self._drop_remote(rid)

    async def _send_chunk(self, rid: int, data: bytes | memoryview) -> None:
        head = chunk_header(rid, len(data))
        async with self._write_lock:
            try:
                self.conn.write(head)
                self.conn.write(data if isinstance(data, bytes) else bytes(data))
                # shielded: a frame cut in half by a cancellation would corrupt the stream
                await asyncio.shield(self.conn.drain())
            except (ConnectionError, OSError, RuntimeError) as exc:
                self.alive = False
                raise RunnerLost(f"cannot write to the runner: {exc!r}") from exc

    def _final(self, ev: dict[str, Any]) -> dict[str, Any]:
        kind = ev.get("ev")
        if kind == EV_ERROR:
            raise RunnerError(ev)
        if kind == EV_LOST:
            raise RunnerLost(self.lost_message())
        return ev

    async def _drop_remote(self, rid: int) -> None:
        """Tell the runner to forget a transfer (an unfinished upload's temp file is removed) before
        anything else is sent (shielded: it goes out even when the caller is being cancelled)."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(self.send({"op": "cancel", "target": rid, "id": next(self._ids)}))

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


def _b64decode(value: Any) -> bytes | None:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:  # the runner checks its frames; a broken one is dropped here too, not raised
        return None


class OutputCollector:
    """Accumulates streamed chunks (already capped by the runner) and forwards them. Rich outputs are
    capped again here (:class:`~.display.OutputBudget`): code in the sandbox can reach the caps of
    its interpreter and, on some backends, the runner's; the host's memory must not depend on them."""

    def __init__(self, on_output: OutputCallback | None) -> None:
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.attachments: list[Attachment] = []
        self.on_output = on_output
        self.budget = OutputBudget()

    def _shown(self, raw: Any) -> tuple[Attachment, ...]:
        items = [a for a in raw if isinstance(a, dict)][:MAX_BUNDLE_TYPES] if isinstance(raw, list) else []
        if self.budget.count >= MAX_CELL_OUTPUTS:
            items = []  # dropped: not even decoded
        decoded = [(a, _b64decode(a.get("data"))) for a in items]
        items = [a for a, data in decoded if data is not None]
        admitted = self.budget.admit([(str(a.get("mime_type")), data) for a, data in decoded if data is not None])
        if admitted is None:
            mark = self.budget.drop_mark()
            if mark is None:
                return ()
            return (Attachment(mime_type="text/plain", data=mark, name=OutputBudget.DROPPED, truncated=True),)
        return tuple(
            Attachment(
                mime_type=mime, data=data, name=str(a.get("name", ""))[:200], truncated=cut or bool(a.get("truncated"))
            )
            for (mime, data, cut), a in zip(admitted, items, strict=False)
        )

    async def __call__(self, ev: dict[str, Any]) -> None:
        if ev.get("ev") != EV_OUT:
            return
        if ev.get("s") == DISPLAY_STREAM:
            shown = self._shown(ev.get("a"))
            if not shown:
                return
            self.attachments.extend(shown)
            await emit(self.on_output, OutputChunk(stream="display", text="", attachments=shown))
            return
        stream: Literal["stdout", "stderr"] = "stderr" if ev.get("s") == "stderr" else "stdout"
        text = str(ev.get("d", ""))
        self.parts[stream].append(text)
        await emit(self.on_output, OutputChunk(stream=stream, text=text))

    def text(self, stream: str) -> str:
        return "".join(self.parts[stream])


#: the name before it became public
_RunnerError = RunnerError


def __getattr__(name: str) -> Any:
    """``RunnerBackend`` and ``RunnerSession``, still importable from here (imported lazily: those
    modules import this one)."""
    if name == "RunnerBackend":
        from .backend import RunnerBackend

        return RunnerBackend
    if name == "RunnerSession":
        from .session import RunnerSession

        return RunnerSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
