"""Byte streams to a started runner (the transport under the protocol client).

A backend's :meth:`~.backend.RunnerBackend.spawn_runner` returns a :class:`RunnerConnection`:
``reader`` yields the runner's stdout, ``write``/``drain`` feed its stdin. :class:`ProcessConnection`
wraps a local subprocess; for anything else (an attached container socket …) subclass
:class:`RunnerConnection` (the Docker plugin's ``_stream.py`` is an example).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import signal

__all__ = ["ProcessConnection", "RunnerConnection"]


class RunnerConnection(abc.ABC):
    """A byte stream to one started runner."""

    #: bytes from the runner's stdout
    reader: asyncio.StreamReader

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue bytes for the runner's stdin."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until queued bytes are handed to the stream."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the runner (closing its stdin makes it shut down; kill it if it lingers)."""

    def diagnostics(self) -> str:
        """Something useful when the runner died (its exit status, stderr tail)."""
        return ""


class ProcessConnection(RunnerConnection):
    """A runner that is a local subprocess (``asyncio.create_subprocess_exec`` with pipes)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.proc = proc
        self.reader = proc.stdout
        self._stdin = proc.stdin
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_task = asyncio.ensure_future(self._pump_stderr()) if proc.stderr is not None else None

    async def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(Exception):
            async for line in self.proc.stderr:
                self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def write(self, data: bytes) -> None:
        self._stdin.write(data)

    async def drain(self) -> None:
        await self._stdin.drain()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 3.0)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._stderr_task, 1.0)

    def diagnostics(self) -> str:
        rc = self.proc.returncode
        parts = []
        if rc is not None:
            parts.append(f"runner exited with {'signal ' + signal.Signals(-rc).name if rc < 0 else rc}")
        tail = [line for line in self._stderr_tail if line][-5:]
        if tail:
            parts.append("stderr: " + " | ".join(tail))
        return "; ".join(parts)
