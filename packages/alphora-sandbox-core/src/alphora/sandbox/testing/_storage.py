"""StorageContractTests: what every storage backend must do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ..errors import StorageError, StorageNotFoundError


def _key(item: Any) -> str:
    return str(getattr(item, "key", item))


class StorageContractTests:
    """Subclass and implement :meth:`make_storage` (return an un-entered storage)."""

    async def make_storage(self, tmp_path: Path) -> Any:
        raise NotImplementedError("subclass StorageContractTests and implement make_storage()")

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[Any]:
        storage = await self.make_storage(tmp_path)
        async with storage:
            yield storage

    async def test_put_get_roundtrip(self, storage: Any) -> None:
        data = bytes(range(256)) * 100
        await storage.put("dir/blob.bin", data)
        assert await storage.get("dir/blob.bin") == data
        assert await storage.exists("dir/blob.bin")

    async def test_overwrite(self, storage: Any) -> None:
        await storage.put("k.txt", b"one")
        await storage.put("k.txt", b"two")
        assert await storage.get("k.txt") == b"two"

    async def test_missing_key(self, storage: Any) -> None:
        assert not await storage.exists("nope/none.txt")
        with pytest.raises(StorageNotFoundError):
            await storage.get("nope/none.txt")

    async def test_list_by_prefix(self, storage: Any) -> None:
        for key in ("my/a.txt", "my/b/c.txt", "myfile.txt", "other.txt"):
            await storage.put(key, key.encode())
        keys = sorted(_key(i) for i in await storage.list(prefix="my"))
        assert keys == ["my/a.txt", "my/b/c.txt", "myfile.txt"]

    async def test_delete(self, storage: Any) -> None:
        await storage.put("gone.txt", b"x")
        await storage.delete("gone.txt")
        assert not await storage.exists("gone.txt")

    async def test_hostile_keys_refused(self, storage: Any) -> None:
        for key in ("../escape.txt", "a/../../escape.txt", "nul\0byte"):
            with pytest.raises((StorageError, ValueError)):
                await storage.put(key, b"x")
