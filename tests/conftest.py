"""Suite-wide fixtures: every sandbox created by a test lives under a temporary base path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alphora.sandbox import Sandbox


@pytest.fixture(autouse=True, scope="session")
def _sandbox_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="alphora-test-") as home:
        old = os.environ.get("ALPHORA_SANDBOX_HOME")
        os.environ["ALPHORA_SANDBOX_HOME"] = home
        try:
            yield Path(home)
        finally:
            if old is None:
                os.environ.pop("ALPHORA_SANDBOX_HOME", None)
            else:
                os.environ["ALPHORA_SANDBOX_HOME"] = old


@pytest.fixture
async def local_sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A started local sandbox under tmp_path, destroyed afterwards."""
    sandbox = Sandbox.create_local(base_path=tmp_path / "sandboxes")
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.destroy()
