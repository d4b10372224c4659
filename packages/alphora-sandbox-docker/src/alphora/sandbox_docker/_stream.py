"""The runner's byte stream over an attached container socket.

With ``tty=False`` the engine multiplexes the container's stdout and stderr on the attach socket,
each piece prefixed by an 8-byte header (stream id, 3 zero bytes, big-endian length). The
connection demultiplexes it: stdout feeds the runner protocol's ``StreamReader``; stderr (the
runner's own complaints, never user output) is kept as a short tail for diagnostics.

Plain sockets (unix, tcp) are driven by the event loop; other socket objects (TLS to a remote
engine) by a reader thread and writes in worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from alphora.sandbox.runner.transport import RunnerConnection

__all__ = ["Demux", "DockerConnection", "raw_socket"]

log = logging.getLogger(__name__)


class Demux:
    """Incremental parser of the engine's multiplexed stream."""

    def __init__(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self._buf = bytearray()
        self._on = {1: on_stdout, 2: on_stderr}

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 8:
            size = int.from_bytes(buf[4:8], "big")
            if len(buf) < 8 + size:
                return
            stream = buf[0]
            payload = bytes(buf[8 : 8 + size])
            del buf[: 8 + size]
            handler = self._on.get(stream)
            if handler is not None and payload:
                handler(payload)


def raw_socket(sock: Any) -> Any:
    """The socket object under docker-py's attach_socket() result."""
    return getattr(sock, "_sock", sock)


class DockerConnection(RunnerConnection):
    """A RunnerConnection over ``attach_socket(stdin, stdout, stderr, stream)``."""

    def __init__(self, sock: Any, on_close: Callable[[], Any] | None = None) -> None:
        self.sock = raw_socket(sock)
        self._holder = sock  # keeps docker-py's response object (and the socket) alive
        self.reader = asyncio.StreamReader(limit=1 << 26)
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._on_close = on_close
        self.exit_info = ""
        self._native = type(self.sock) is socket.socket
        self._pending = bytearray()
        self._send_lock = asyncio.Lock()
        self._demux = Demux(self.reader.feed_data, self._stderr_data)
        if self._native:
            self.sock.setblocking(False)
            self._task: asyncio.Future[None] | None = asyncio.ensure_future(self._read_native())
            self._thread: threading.Thread | None = None
        else:
            self.sock.settimeout(None)
            self._task = None
            self._thread = threading.Thread(target=self._read_thread, name="alphora-docker-attach", daemon=True)
            self._thread.start()

    # -- reading ---------------------------------------------------------------------------------

    def _stderr_data(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._stderr.append(line.rstrip())
                log.debug("runner stderr: %s", line.rstrip())

    async def _read_native(self) -> None:
        try:
            while True:
                data = await self._loop.sock_recv(self.sock, 1 << 18)
                if not data:
                    break
                self._demux.feed(data)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.reader.feed_eof()

    def _read_thread(self) -> None:
        try:
            while True:
                data = self.sock.recv(1 << 18)
                if not data:
                    break
                self._loop.call_soon_threadsafe(self._demux.feed, data)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.reader.feed_eof)

    # -- writing ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("the container's stream is closed")
        self._pending += data

    async def drain(self) -> None:
        async with self._send_lock:
            if not self._pending:
                return
            data, self._pending = bytes(self._pending), bytearray()
            if self._native:
                await self._loop.sock_sendall(self.sock, data)
            else:
                await asyncio.to_thread(self.sock.sendall, data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        # close docker-py's HTTP response first (it flushes through the socket wrapper), then the
        # wrapper and the socket; the other order leaves a response whose close() fails when collected
        response = getattr(self._holder, "_response", None)
        for closeable in (response, self._holder, self.sock):
            if closeable is not None:
                with contextlib.suppress(OSError, ValueError):
                    closeable.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                res = self._on_close()
                if asyncio.iscoroutine(res):
                    await res

    def stderr_lines(self) -> list[str]:
        """The last lines the container wrote to stderr (the runner's or the setup step's own)."""
        return list(self._stderr)

    def diagnostics(self) -> str:
        parts = [self.exit_info] if self.exit_info else []
        tail = [line for line in self._stderr if line][-5:]
        if tail:
            parts.append("stderr: " + " | ".join(tail))
        return "; ".join(parts)
