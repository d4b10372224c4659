"""Stateful Python sessions: the interface a backend's session implements."""

from __future__ import annotations

import abc
from types import TracebackType

from .backend import OutputCallback
from .types import ExecutionResult

__all__ = ["PythonSession"]


class PythonSession(abc.ABC):
    """A long-lived Python interpreter in the sandbox; variables, imports and the working directory
    persist between calls like a notebook kernel. The trailing expression's repr comes back as
    ``result.value``; matplotlib figures shown during a call come back as PNG ``attachments``.
    A timeout (validated like ``run()``'s by :func:`alphora.sandbox.rules.resolve_timeout`) kills
    every process the cell started and interrupts the cell with KeyboardInterrupt; the state is
    kept. If the interpreter does not recover within a grace period it is killed and restarted and
    ``result.state_lost`` is True. Processes started by earlier, completed cells keep running."""

    name: str = "default"

    @abc.abstractmethod
    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult: ...

    @abc.abstractmethod
    async def reset(self) -> None:
        """Forget all state (restart the interpreter)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the session; idempotent."""

    async def __aenter__(self) -> PythonSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
