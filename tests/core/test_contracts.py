"""The built-in local backend and local storage pass the shared contract suites."""

from __future__ import annotations

from pathlib import Path

from alphora.sandbox.backend import Backend
from alphora.sandbox.builtin.local_backend import LocalBackend
from alphora.sandbox.storage import LocalStorage, StorageConfig
from alphora.sandbox.testing import BackendContractTests, StorageContractTests


class TestLocalBackendContract(BackendContractTests):
    async def make_backend(self, workspace: Path) -> Backend:
        return LocalBackend(sandbox_id="contract", workspace_path=workspace)


class TestLocalStorageContract(StorageContractTests):
    async def make_storage(self, tmp_path: Path) -> LocalStorage:
        return LocalStorage(StorageConfig.local(str(tmp_path / "store")))
