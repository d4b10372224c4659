"""The runner's wire protocol, shared by both ends: the host client and the in-sandbox runner.

Stdlib only (it is shipped into the sandbox with the runner). Everything that knows how a frame
looks on the wire lives here, nowhere else:

* a frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON (``surrogatepass``, so
  lone surrogates in file names survive); a length above :data:`MAX_FRAME` means the stream is
  corrupt;
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
    "FrameBuffer",
    "decode_body",
    "encode",
    "frame_size",
    "header",
    "read_exact",
    "read_frame_blocking",
    "write_all",
]

#: bumped when a request or reply changes incompatibly; the runner reports it in its ``hello`` reply
#: (2: a session cell's rich outputs stream as ``out`` events on the ``display`` stream)
PROTOCOL_VERSION = 2
#: bytes of the length prefix
HEADER = 4
#: the largest frame either side accepts (a larger length prefix means the stream is corrupt)
MAX_FRAME = 1 << 30

#: the requests the runner serves
OPS = (
    "hello",
    "ping",
    "exec",
    "cancel",
    "fs",
    "usage",
    "session_open",
    "session_run",
    "session_close",
    "session_fork",
    "shutdown",
)
#: the ``fn`` of an ``fs`` request
FS_FUNCTIONS = ("read", "write", "stat", "list", "remove", "copy", "move", "mkdir")

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


def frame_size(head: bytes) -> int:
    """The body length announced by a frame header; ValueError if the stream is corrupt."""
    n = int.from_bytes(head, "big")
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes: the stream is corrupt")
    return n


def decode_body(body: bytes) -> dict[str, Any]:
    """The message in a frame's body."""
    msg: dict[str, Any] = json.loads(body.decode("utf-8", "surrogatepass"))
    return msg


class FrameBuffer:
    """Accumulates bytes and yields complete frames (for non-blocking readers)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER:
            n = frame_size(bytes(self.buf[:HEADER]))
            if len(self.buf) < HEADER + n:
                break
            body = bytes(self.buf[HEADER : HEADER + n])
            del self.buf[: HEADER + n]
            out.append(decode_body(body))
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
