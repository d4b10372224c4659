"""Deep directory trees through the runner in a container: list, copy, delete, save and restore.

Sandbox code builds the trees (``mkdir`` + ``chdir`` in a loop). The container's ``nofile`` limit
is set low (64) on purpose: the runner's walks hold one directory descriptor at a time, so neither
recursion nor descriptors run out. Removing the workspace volume is the engine's job (``destroy``);
deleting a tree through the file API is the runner's. See tests/core/test_deep_trees.py for local
and isolated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import FileSystemError, ResourceLimits, Sandbox
from alphora.sandbox.rules import DEFAULT_IMAGE
from alphora.sandbox.runner import safefs
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox.storage.local import LocalStorage

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = f"{safefs.MAX_PATH_BYTES} bytes"


def build(levels: int, top: str) -> str:
    return (
        "import os\n"
        f"os.mkdir({top!r}); os.chdir({top!r})\n"
        f"for _ in range({levels} - 1):\n"
        "    os.mkdir('d'); os.chdir('d')\n"
        "open('leaf.txt', 'w').write('leaf')\n"
        "print('built')\n"
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def box(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> AsyncIterator[Sandbox]:
    """A container with nofile 64 (``docker_client`` applies the engine gate: skip, or fail under CI)."""
    sandbox = Sandbox.create_docker(
        base_path=tmp_path_factory.mktemp("docker-deep"),
        docker_image=DEFAULT_IMAGE,
        resource_limits=ResourceLimits(timeout_seconds=120, memory_mb=256, max_open_files=64),
    )
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.destroy()


async def _build(box: Sandbox, levels: int, top: str) -> None:
    result = await box.run(build(levels, top))
    assert result.success, result.stderr[-2000:]
    assert result.stdout == "built\n"


async def test_1500_levels_list_copy_save_and_restore(box: Sandbox, tmp_path: Path) -> None:
    await _build(box, 1_500, "deep1500")
    leaf = "deep1500/" + "/".join(["d"] * 1_499) + "/leaf.txt"
    listed = [f.path for f in await box.list_files("deep1500", recursive=True)]
    assert len(listed) == 1_500
    assert listed[-1] == leaf

    await box.copy_file("deep1500", "copy1500")
    assert await box.read_file("copy1500" + leaf[len("deep1500") :]) == "leaf"

    storage = LocalStorage(StorageConfig.local(str(tmp_path / "storage")))
    saved = await box.save_workspace(storage, "deep")
    assert leaf in saved
    assert await box.delete_file("deep1500") is True
    assert await box.delete_file("copy1500") is True
    assert leaf in await box.restore_workspace(storage, "deep")
    assert await box.read_file(leaf) == "leaf"
    assert await box.delete_file("deep1500") is True


async def test_10000_levels_fail_list_copy_save_clearly_and_delete_works(box: Sandbox, tmp_path: Path) -> None:
    await _build(box, 10_000, "deep10k")
    with pytest.raises(FileSystemError, match=LIMIT):
        await box.list_files("", recursive=True)
    with pytest.raises(FileSystemError, match=LIMIT):
        await box.copy_file("deep10k", "copy10k")
    assert not await box.file_exists("copy10k"), "a failed copy left a partial copy"

    storage = LocalStorage(StorageConfig.local(str(tmp_path / "storage")))
    with pytest.raises(FileSystemError, match=f"save_workspace stored nothing: .*{LIMIT}"):
        await box.save_workspace(storage, "deep")
    assert await storage.list("") == []

    assert await box.delete_file("deep10k") is True
    assert not await box.file_exists("deep10k")
    assert (await box.run("print('still works')")).stdout == "still works\n"


async def test_make_dir_over_the_limit_is_refused(box: Sandbox) -> None:
    with pytest.raises(FileSystemError, match=f"5999 bytes in 3000 levels.*{LIMIT}"):
        await box.make_dir("a/" * 3000)
    assert not await box.file_exists("a")
