"""Workspace persistence: save a workspace to a storage, restore it into another sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import Sandbox, StorageNotFoundError
from alphora.sandbox.storage import StorageFactory


async def test_save_and_restore_workspace(tmp_path: Path) -> None:
    storage = StorageFactory.local(str(tmp_path / "store"))
    async with storage:
        async with Sandbox.create_local(base_path=tmp_path / "a") as first:
            await first.write_file("notes/today.md", "# hi")
            await first.run("open('result.bin', 'wb').write(bytes(range(256)))")
            saved = await first.save_workspace(storage, prefix="jobs/42")
            assert saved == ["notes/today.md", "result.bin"]
            await first.delete_file("notes")
            assert await first.save_workspace(storage, prefix="jobs/42") == ["result.bin"]  # replaces, no resurrection
            await first.write_file("notes/today.md", "# hi")
            await first.save_workspace(storage, prefix="jobs/42")
            await first.destroy()
        async with Sandbox.create_local(base_path=tmp_path / "b") as second:
            assert sorted(await second.restore_workspace(storage, prefix="jobs/42")) == ["notes/today.md", "result.bin"]
            assert await second.read_file("notes/today.md") == "# hi"
            r = await second.run("print(open('result.bin', 'rb').read() == bytes(range(256)))")
            assert r.stdout == "True\n"
            with pytest.raises(StorageNotFoundError):
                await second.restore_workspace(storage, prefix="never/saved")
            await second.destroy()
