"""The byte streams the proxy relays between: asyncio streams, or TLS over them (``tls.py``)."""

from __future__ import annotations

import asyncio

__all__ = ["ByteStream", "PrefixedStream", "SocketStream"]


class ByteStream:
    """The three operations the proxy needs of a connection."""

    async def read(self, n: int = 65536) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    async def write(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def write_eof(self) -> None:
        """Half-close (tunnels pass an EOF on); streams that cannot, close."""
        await self.close()


class SocketStream(ByteStream):
    """An asyncio reader/writer pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int = 65536) -> bytes:
        return await self.reader.read(n)

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            try:
                self.writer.write_eof()
                return
            except OSError:
                pass
        await self.close()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class PrefixedStream(ByteStream):
    """``inner`` with ``prefix`` read first (bytes a parser already took off the wire)."""

    def __init__(self, inner: ByteStream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def read(self, n: int = 65536) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self._inner.read(n)

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    async def write_eof(self) -> None:
        await self._inner.write_eof()

    async def close(self) -> None:
        await self._inner.close()
