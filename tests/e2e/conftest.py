"""End-to-end fixtures: a started local sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = Sandbox.create_local(base_path=tmp_path / "sandboxes")
    await box.start()
    try:
        yield box
    finally:
        await box.destroy()
