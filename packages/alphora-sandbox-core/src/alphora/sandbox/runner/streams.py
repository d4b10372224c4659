"""Per-call plumbing of the runner: a call in flight and its capped, incrementally decoded output pipes.

Part of the runner program (stdlib only).
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from typing import Any

#: bytes read from (or written to) a call's pipe at a time
READ_SIZE = 65536


def required(req: dict[str, Any], key: str, kind: Callable[[Any], Any]) -> Any:
    """A field the client always sends (the client validated it; the runner has no defaults)."""
    if key not in req:
        raise ValueError(f"{req.get('op')} request without {key!r}")
    return kind(req[key])


class Stream:
    """One output pipe of a call or session: capped, decoded incrementally."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.eof = False
        self.reset(0)

    def reset(self, cap: int) -> None:
        self.cap = cap
        self.count = 0
        self.truncated = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def take(self, data: bytes) -> str:
        room = self.cap - self.count
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self.count += len(data)
        return self.decoder.decode(data) if data else ""

    def flush(self) -> str:
        return self.decoder.decode(b"", True)


class Call:
    """One ``exec`` request in flight: its process, pipes, deadline and outcome."""

    def __init__(self, rid: Any, pid: int, streams: list[Stream], timeout: float, stdin_fd: int, stdin: bytes) -> None:
        self.id = rid
        self.pid = pid
        self.streams = streams
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.status: int | None = None
        self.ended_at: float | None = None
        self.timed_out = False
        self.cancelled = False
        self.killed = 0
        self.stdin_fd = stdin_fd
        self.stdin = memoryview(stdin)
        #: False: kill whatever the call leaves running when it exits (see leftovers.py)
        self.keep_background = True
        self.judged = False  # the background-process rule was applied
        self.watch: Any = None  # leftovers.Watch while the leftover tree is judged
        self.leftover_killed = 0
        self.leftover_reason = ""
        #: a spare's job pipe, kept open until the call ends (see Runner._spare_never_started), or -1
        self.job_fd = -1
        #: the request, to run it again when its spare died before reading it
        self.request: dict[str, Any] | None = None
