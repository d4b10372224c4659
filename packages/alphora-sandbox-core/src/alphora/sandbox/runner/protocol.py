"""The runner's wire protocol, shared by both ends: the host client and the in-sandbox runner.

Stdlib only (it is shipped into the sandbox with the runner). Everything that knows how a frame
looks on the wire lives here, nowhere else:

* a frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON (``surrogatepass``, so
  lone surrogates in file names survive); a length above :data:`MAX_FRAME` means the stream is
  corrupt;
* a *binary* frame (file bytes) has the top bit of the length set (:data:`BINARY`): its body is the
  4-byte big-endian id of the request it belongs to, then raw bytes (at most :data:`CHUNK_MAX`); an
  empty one ends that request's byte stream. No base64, no JSON for payloads;
* requests carry ``op`` (one of :data:`OPS`) and an ``id``; replies carry the same ``id`` and
  ``ev``: ``out`` (streamed output), ``done`` (final), ``error`` (final, with ``etype``, ``msg``,
  ``path``, ``errno``); the client adds ``lost`` locally when the stream ends.

See docs/runner.md for the table of requests and replies.
"""

from __future__ import annotations

import json
import os
import select
from typing import Any

__all__ = [
    "BIN",
    "BINARY",
    "CHUNK",
    "CHUNK_MAX",
    "DISPLAY_STREAM",
    "EV_DISPLAY",
    "EV_DONE",
    "EV_ERROR",
    "EV_FORKED",
    "EV_LOST",
    "EV_OUT",
    "EV_STARTED",
    "FS_FUNCTIONS",
    "HEADER",
    "MAX_FRAME",
    "OPS",
    "PATH_ESCAPE",
    "PROTOCOL_VERSION",
    "WINDOW",
    "FrameBuffer",
    "chunk_header",
    "decode_body",
    "encode",
    "frame_size",
    "header",
    "parse_header",
    "read_exact",
    "read_frame_blocking",
    "write_all",
]

#: bumped when a request or reply changes incompatibly; the runner reports it in its ``hello`` reply
#: (2: a session cell's rich outputs stream as ``out`` events on the ``display`` stream)
#: (3: file contents travel as binary frames of ``put``/``get`` requests, not base64 in ``fs``)
PROTOCOL_VERSION = 3
#: bytes of the length prefix
HEADER = 4
#: the largest frame either side accepts (a larger length prefix means the stream is corrupt)
MAX_FRAME = 1 << 30
#: flag bit of a binary frame's length prefix
BINARY = 1 << 31
#: default bytes per binary frame of a file transfer, and the most either side sends in one
CHUNK = 1 << 19
CHUNK_MAX = 1 << 24
#: binary frames of a ``get`` the runner may send before the host grants more (``more``)
WINDOW = 4
#: the key of a decoded binary frame's bytes (``{"id": rid, BIN: data}``)
BIN = "bin"

#: the requests the runner serves
OPS = (
    "hello",
    "ping",
    "exec",
    "cancel",
    "fs",
    "put",
    "get",
    "more",
    "usage",
    "session_open",
    "session_run",
    "session_close",
    "session_fork",
    "shutdown",
)
#: the ``fn`` of an ``fs`` request (file *contents* travel by ``put``/``get`` in binary frames)
FS_FUNCTIONS = ("stat", "list", "remove", "copy", "move", "mkdir")

#: reply kinds (``ev``)
EV_OUT = "out"
EV_DONE = "done"
EV_ERROR = "error"
#: not on the wire: what the client's reader hands to waiting requests when the stream ends
EV_LOST = "lost"
#: session interpreter -> runner: the cell began (with the children it had before)
EV_STARTED = "started"
#: session interpreter -> runner: a rich output of the cell (``a``: its MIME types, see runner/display.py)
EV_DISPLAY = "display"
#: the ``s`` of an ``out`` event that carries rich outputs (``a``) instead of text (``d``)
DISPLAY_STREAM = "display"
#: new session interpreter -> runner, on its own reply pipe: the fork is ready (``pid``, ``cwd``) or failed (``error``)
EV_FORKED = "forked"

#: ``etype`` of an error frame for a path that leaves the workspace (safefs.PathEscape); other
#: error frames carry the exception's class name (``FileNotFoundError``, ``TooLarge`` …)
PATH_ESCAPE = "PathEscape"


def header(size: int) -> bytes:
    """The length prefix of a frame whose body has ``size`` bytes."""
    return size.to_bytes(HEADER, "big")


def encode(msg: dict[str, Any]) -> bytes:
    """One frame: length prefix + JSON body."""
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return header(len(body)) + body


def chunk_header(rid: int, size: int) -> bytes:
    """The length prefix and request id of a binary frame carrying ``size`` bytes (they follow)."""
    if size > CHUNK_MAX:
        raise ValueError(f"binary frame of {size} bytes: at most {CHUNK_MAX}")
    return (BINARY | (size + 4)).to_bytes(HEADER, "big") + rid.to_bytes(4, "big")


def parse_header(head: bytes) -> tuple[int, bool]:
    """(body length, is binary) of a frame header; ValueError if the stream is corrupt."""
    n = int.from_bytes(head, "big")
    binary = bool(n & BINARY)
    n &= ~BINARY
    if n > (CHUNK_MAX + 4 if binary else MAX_FRAME) or (binary and n < 4):
        raise ValueError(f"{'binary ' if binary else ''}frame of {n} bytes: the stream is corrupt")
    return n, binary


def frame_size(head: bytes) -> int:
    """The body length announced by a JSON frame header; ValueError if the stream is corrupt (or
    the frame is binary: use :func:`parse_header` where binary frames may come)."""
    n, binary = parse_header(head)
    if binary:
        raise ValueError("unexpected binary frame: the stream is corrupt")
    return n


def decode_body(body: bytes, binary: bool = False) -> dict[str, Any]:
    """The message in a frame's body (a binary frame: ``{"id": rid, BIN: data}``)."""
    if binary:
        return {"id": int.from_bytes(body[:4], "big"), BIN: body[4:]}
    msg: dict[str, Any] = json.loads(body.decode("utf-8", "surrogatepass"))
    return msg


class FrameBuffer:
    """Accumulates bytes and yields complete frames (for non-blocking readers). Binary frames are
    accepted only when ``binary`` is True (the runner's request stream); elsewhere they mean the
    stream is corrupt."""

    def __init__(self, binary: bool = False) -> None:
        self.buf = bytearray()
        self.binary = binary

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER:
            n, binary = parse_header(bytes(self.buf[:HEADER]))
            if binary and not self.binary:
                raise ValueError("unexpected binary frame: the stream is corrupt")
            if len(self.buf) < HEADER + n:
                break
            with memoryview(self.buf) as view:
                if binary:
                    msg = {
                        "id": int.from_bytes(view[HEADER : HEADER + 4], "big"),
                        BIN: bytes(view[HEADER + 4 : HEADER + n]),
                    }
                else:
                    msg = decode_body(bytes(view[HEADER : HEADER + n]))
            del self.buf[: HEADER + n]
            out.append(msg)
        return out


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (which may be non-blocking)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


def read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from a blocking ``fd``, or None at EOF."""
    b = b""
    while len(b) < n:
        c = os.read(fd, n - len(b))
        if not c:
            return None
        b += c
    return b


def read_frame_blocking(fd: int) -> dict[str, Any] | None:
    """The next frame from a blocking ``fd``, or None at EOF."""
    head = read_exact(fd, HEADER)
    if head is None:
        return None
    body = read_exact(fd, frame_size(head))
    if body is None:
        return None
    return decode_body(body)
