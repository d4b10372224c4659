"""A failed start raises the start's own error. Cleaning up after it never replaces that error;
a cleanup failure that says something new is attached as a note and logged in one line (no
traceback above DEBUG), and one that repeats the same cause is not repeated."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from alphora.sandbox import BackendError, Sandbox, SandboxStatus
from alphora.sandbox.builtin.local_backend import LocalBackend


class _CleanupFails(LocalBackend):
    """A backend (as a third party might write one) whose environment cannot be removed."""

    cleanup_error = "the environment could not be removed"

    async def _stop_environment(self) -> None:
        raise BackendError(self.cleanup_error, sandbox_id=self.sandbox_id)


class _EngineGone(LocalBackend):
    """Start and cleanup both fail for one cause (as with an unreachable engine)."""

    async def _spawn_runner(self):  # type: ignore[no-untyped-def]
        raise BackendError("the engine is gone", sandbox_id=self.sandbox_id)

    async def _stop_environment(self) -> None:
        raise BackendError("the engine is gone", sandbox_id=self.sandbox_id)


def _sandbox(cls: type[LocalBackend], tmp_path: Path, **options: str) -> Sandbox:
    backend = cls("sb1", tmp_path / "sb1", options=options)
    return Sandbox("local", sandbox_id="sb1", base_path=tmp_path, backend=backend)


def _loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_start_error_wins_and_a_different_cleanup_error_is_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox = _sandbox(_CleanupFails, tmp_path, python=str(tmp_path / "no-such-python"))
    with pytest.raises(BackendError) as info:
        await sandbox.start()
    assert str(info.value).startswith("cannot start"), str(info.value)
    assert sandbox.status is SandboxStatus.ERROR
    loud = _loud(caplog)
    assert len(loud) == 1
    assert loud[0].levelno == logging.WARNING
    assert _CleanupFails.cleanup_error in loud[0].getMessage()
    assert loud[0].exc_info is None  # one line, no traceback
    if sys.version_info >= (3, 11):
        assert any(_CleanupFails.cleanup_error in note for note in info.value.__notes__)
    # the traceback of the cleanup failure is still there for whoever asks for DEBUG
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)


async def test_cleanup_failing_for_the_same_cause_adds_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox = _sandbox(_EngineGone, tmp_path)
    with pytest.raises(BackendError, match=r"^the engine is gone$") as info:
        await sandbox.start()
    assert _loud(caplog) == []
    assert getattr(info.value, "__notes__", []) == []
