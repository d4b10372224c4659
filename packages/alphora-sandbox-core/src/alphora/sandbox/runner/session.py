"""RunnerSession: a stateful Python session living in the runner, the host's side.

The runner keeps the session as a long-lived forked interpreter (its side is :mod:`.sessions` and
:mod:`.kernel`); this object sends it cells and turns the replies into ``ExecutionResult``.
Obtained with ``RunnerBackend.open_session()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..backend import OutputCallback
from ..errors import BackendError, FileSystemError
from ..pathguard import normalize
from ..rules import resolve_timeout
from ..session import PythonSession
from ..types import ExecutionResult, ExecutionStatus
from .client import OutputCollector, RunnerError, RunnerLost

if TYPE_CHECKING:
    from .backend import RunnerBackend

__all__ = ["RunnerSession"]


class RunnerSession(PythonSession):
    """A stateful Python session living in the runner (a long-lived forked interpreter)."""

    def __init__(
        self, backend: RunnerBackend, name: str = "default", *, env: Mapping[str, str] | None = None, cwd: str = ""
    ) -> None:
        self.backend = backend
        self.name = name
        self.env = dict(env or {})
        self.cwd = cwd
        self._generation = -1
        self._closed = False
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        client = await self.backend._ready()
        await client.request({"op": "session_open", "name": self.name, "env": self.env, "cwd": self.cwd}, watchdog=30.0)
        self._generation = self.backend._generation

    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        timeout = resolve_timeout(timeout, self.backend.resource_limits)
        if self._closed:
            raise BackendError(f"session {self.name!r} is closed", sandbox_id=self.backend.sandbox_id)
        async with self._lock:
            lost = False
            client = await self.backend._ready()
            if self._generation != self.backend._generation:  # the runner was restarted meanwhile
                await self.open()
                lost = True
            out = OutputCollector(on_output)
            msg = {
                "op": "session_run",
                "name": self.name,
                "code": code,
                "timeout": timeout,
                "max_output": self.backend.resource_limits.max_output_size,
                "grace": self.backend.session_grace,
                "display": {"figure_formats": list(self.figure_formats)},
            }
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                done = await client.request(msg, out, watchdog=timeout + self.backend.session_grace + 10.0)
            except RunnerLost as exc:
                return ExecutionResult(
                    status=ExecutionStatus.FAILED,
                    stdout=out.text("stdout"),
                    stderr=out.text("stderr"),
                    return_code=None,
                    state_lost=True,
                    attachments=tuple(out.attachments),
                    error=f"{exc} during the call; the session's state was lost",
                    execution_time=loop.time() - started,
                )
            except asyncio.TimeoutError:
                await self.backend._abandon(client)
                return ExecutionResult(
                    status=ExecutionStatus.TIMEOUT,
                    stdout=out.text("stdout"),
                    stderr=out.text("stderr"),
                    return_code=None,
                    state_lost=True,
                    attachments=tuple(out.attachments),
                    error="the sandbox runner stopped answering; it was restarted",
                    execution_time=loop.time() - started,
                )
            except RunnerError as exc:
                raise BackendError(f"session {self.name!r}: {exc.msg}", sandbox_id=self.backend.sandbox_id) from None
        state_lost = lost or bool(done.get("state_lost"))
        error = str(done.get("error") or "")
        if done.get("timed_out"):
            status = ExecutionStatus.TIMEOUT
            killed = int(done.get("killed") or 0)
            if done.get("state_lost"):  # the runner says why: the cell ignored the interrupt, or it died
                error = f"execution timed out after {timeout:g}s; {error}"
            else:
                ended = f" after killing the {killed} process{'es' if killed > 1 else ''} it started" if killed else ""
                error = (
                    f"execution timed out after {timeout:g}s (interrupted with KeyboardInterrupt{ended}; "
                    "the session's state is kept)"
                )
        elif done.get("ok"):
            status = ExecutionStatus.SUCCESS
        else:
            status = ExecutionStatus.FAILED
        if lost and not error:
            error = "the sandbox runner was restarted before this call; the session's earlier state was lost"
        rc = done.get("rc")
        return ExecutionResult(
            status=status,
            stdout=out.text("stdout"),
            stderr=out.text("stderr"),
            return_code=(0 if status is ExecutionStatus.SUCCESS else (rc if rc is not None else 1)),
            execution_time=float(done.get("time", 0.0)),
            error=error,
            value=done.get("value"),
            attachments=tuple(out.attachments),
            state_lost=state_lost,
            stdout_truncated=bool(done.get("stdout_truncated")),
            stderr_truncated=bool(done.get("stderr_truncated")),
            oom_killed=error.startswith("MemoryError"),
        )

    async def fork(self, name: str | None = None, *, copy_workspace: bool = False) -> RunnerSession:
        if self._closed:
            raise BackendError(f"session {self.name!r} is closed", sandbox_id=self.backend.sandbox_id)
        new = name if name is not None else f"{self.name}-fork-{secrets.token_hex(4)}"
        if copy_workspace:  # its copy goes to .forks/<new>: the name must be one folder name
            try:
                ok = "/" not in new and normalize(f".forks/{new}") == f".forks/{new}"
            except FileSystemError:
                ok = False
            if not ok:
                raise ValueError(f"fork name {new!r} cannot name the folder .forks/{new}; use a plain folder name")
        async with self._lock:
            client = await self.backend._ready()
            if self._generation != self.backend._generation:
                raise BackendError(
                    f"session {self.name!r} lost its state (the sandbox runner was restarted); nothing to fork",
                    sandbox_id=self.backend.sandbox_id,
                )
            msg = {
                "op": "session_fork",
                "name": self.name,
                "new": new,
                "copy": copy_workspace,
                "skip": list(self.backend.internal_paths),  # its venv, its scratch: not the user's files
            }
            try:
                done = await client.request(msg, watchdog=None if copy_workspace else 60.0)
            except RunnerError as exc:
                raise BackendError(f"session {self.name!r}: {exc.msg}", sandbox_id=self.backend.sandbox_id) from None
        child = RunnerSession(self.backend, new, env=self.env, cwd=str(done.get("cwd") or ""))
        child._generation = self._generation
        return child

    async def reset(self) -> None:
        async with self._lock:
            client = await self.backend._ready()
            await client.request({"op": "session_close", "name": self.name}, watchdog=30.0)
            await self.open()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self.backend._client
        if client is not None and client.alive:
            with contextlib.suppress(Exception):
                await client.request({"op": "session_close", "name": self.name}, watchdog=30.0)

    def __repr__(self) -> str:
        return f"<RunnerSession {self.name!r} of {self.backend!r}>"
