"""Stateful Python sessions: the interface a backend's session implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from .backend import OutputCallback, OutputChunk, iterate_output
from .errors import ConfigurationError
from .runner.display import FIGURE_FORMATS
from .types import ExecutionResult

__all__ = ["PythonSession", "check_figure_formats"]


def check_figure_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The figure formats a session renders matplotlib figures in (``"png"``, ``"svg"``), checked."""
    if isinstance(formats, str):
        formats = (formats,)
    got = tuple(dict.fromkeys(str(f).lower() for f in formats))
    unknown = [f for f in got if f not in FIGURE_FORMATS]
    if unknown or not got:
        raise ConfigurationError(
            f"figure_formats must name one or more of {', '.join(FIGURE_FORMATS)}; got {tuple(formats)!r}",
            field="figure_formats",
            value=formats,
        )
    return got


class PythonSession(abc.ABC):
    """A long-lived Python interpreter in the sandbox; variables, imports and the working directory
    persist between calls like a notebook kernel. The trailing expression's repr comes back as
    ``result.value``; rich outputs (``display(obj)``, a trailing DataFrame, SVG, Markdown …, and
    matplotlib figures, as PNG, plus SVG when ``figure_formats`` asks for it) come back in order as
    ``result.attachments`` (docs/rich-outputs.md).
    A timeout (validated like ``run()``'s by :func:`alphora.sandbox.rules.resolve_timeout`) kills
    every process the cell started and interrupts the cell with KeyboardInterrupt; the state is
    kept. If the interpreter does not recover within a grace period it is killed and restarted and
    ``result.state_lost`` is True. Processes started by earlier, completed cells keep running."""

    name: str = "default"
    #: the formats matplotlib figures are rendered in, of ``("png", "svg")``; set it with
    #: ``sandbox.session(figure_formats=...)`` (a backend's session reads it for each cell)
    figure_formats: tuple[str, ...] = ("png",)

    @abc.abstractmethod
    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult: ...

    def stream(self, code: str, timeout: float | None = None) -> AsyncIterator[OutputChunk | ExecutionResult]:
        """Run a cell and yield its output as it comes: ``OutputChunk`` s of ``stdout``, ``stderr``
        and ``display`` (rich outputs, in ``chunk.attachments``), then the ``ExecutionResult``::

            async for item in py.stream("display(df)\nprint('done')"):
                print(item)
        """
        return iterate_output(lambda on_output: self.run(code, timeout, on_output=on_output))

    async def fork(self, name: str | None = None, *, copy_workspace: bool = False) -> PythonSession:
        """A new session whose interpreter is a copy-on-write copy of this one (variables, imports,
        working directory), made in milliseconds; the two then diverge independently. The workspace
        is shared unless ``copy_workspace`` is True: the fork then works in its own copy of it,
        ``.forks/<name>/`` (its working directory). Threads and processes of this session are not
        copied. The fork is closed by its own ``close()`` (or ``async with``). See docs/fork.md."""
        raise NotImplementedError(f"{type(self).__name__} cannot fork a session")

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
