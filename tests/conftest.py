"""Suite-wide fixtures: every sandbox created by a test lives under a temporary base path."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alphora.sandbox import Sandbox
from alphora.sandbox.runner import safefs

#: deeper than this, pytest's own clean-up of earlier runs' tmp dirs (shutil.rmtree, recursive) may fail
_DEEP = 500


def _too_deep(top: Path) -> bool:
    stack = [(str(top), 0)]
    while stack:
        path, depth = stack.pop()
        if depth > _DEEP:
            return True
        with contextlib.suppress(OSError), os.scandir(path) as entries:
            stack.extend((e.path, depth + 1) for e in entries if e.is_dir(follow_symlinks=False))
    return False


@pytest.fixture(autouse=True, scope="session")
def _sandbox_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tempfile.mkdtemp(prefix="alphora-test-")
    old = os.environ.get("ALPHORA_SANDBOX_HOME")
    os.environ["ALPHORA_SANDBOX_HOME"] = home
    try:
        yield Path(home)
    finally:
        if old is None:
            os.environ.pop("ALPHORA_SANDBOX_HOME", None)
        else:
            os.environ["ALPHORA_SANDBOX_HOME"] = old
        # hostile tests build trees thousands of levels deep: remove them without recursion, here
        # and in pytest's tmp dirs (which a later run's clean-up would otherwise choke on)
        safefs.rmtree(home)
        base = tmp_path_factory.getbasetemp()
        for top in base.iterdir() if base.is_dir() else ():
            if top.is_dir() and not top.is_symlink() and _too_deep(top):
                safefs.rmtree(top)


@pytest.fixture
async def local_sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A started local sandbox under tmp_path, destroyed afterwards."""
    sandbox = Sandbox.create_local(base_path=tmp_path / "sandboxes")
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.destroy()
