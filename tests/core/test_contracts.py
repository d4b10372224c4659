"""The built-in local backend and local storage pass the shared contract suites."""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import FileType, Sandbox, hookimpl, hookspecs
from alphora.sandbox.backend import Backend, fileinfo_from_stat, map_os_error, minimal_env
from alphora.sandbox.builtin.isolated_backend import IsolatedLocalBackend
from alphora.sandbox.builtin.local_backend import LocalBackend
from alphora.sandbox.errors import BackendError, FileSystemError, PathTraversalError
from alphora.sandbox.errors import FileNotFoundError as SandboxFileNotFoundError
from alphora.sandbox.plugins import PluginRegistry, make_plugin_manager
from alphora.sandbox.runner import safefs
from alphora.sandbox.storage import LocalStorage, StorageConfig
from alphora.sandbox.testing import BackendContractTests, StorageContractTests
from alphora.sandbox.tools import SandboxTools


class TestLocalBackendContract(BackendContractTests):
    async def make_backend(self, workspace: Path) -> Backend:
        return LocalBackend(sandbox_id="contract", workspace_path=workspace)


class TestLocalStorageContract(StorageContractTests):
    async def make_storage(self, tmp_path: Path) -> LocalStorage:
        return LocalStorage(StorageConfig.local(str(tmp_path / "store")))


# -- the facade reads only what Backend declares ---------------------------------------------------


class DeclaredBackend(LocalBackend):
    """A backend under another name that sets every declared attribute differently from the defaults."""

    name = "declared"
    internal_paths = (".tmp", ".venv", "cache")
    scratch_paths = (".tmp", "cache")
    workspace_aliases = ("/declared-workspace",)
    pip_host_env = True

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        # stands in for pip: shows the environment the facade gives it
        return [sys.executable, "-c", "import os; print('index:', os.environ.get('PIP_INDEX_URL'))"], {}


class _Register:
    @hookimpl
    def sandbox_register_backends(self, register: hookspecs.RegisterBackend) -> None:
        register("declared", DeclaredBackend)


@pytest.fixture
async def declared(tmp_path: Path) -> AsyncIterator[Sandbox]:
    registry = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[_Register()]))
    async with Sandbox("declared", base_path=str(tmp_path), registry=registry) as sandbox:
        yield sandbox


def test_backend_declares_what_the_facade_reads() -> None:
    assert Backend.internal_paths == ()
    assert Backend.scratch_paths == ()
    assert Backend.workspace_aliases == ()
    assert Backend.pip_host_env is False
    assert (LocalBackend.pip_host_env, IsolatedLocalBackend.pip_host_env) == (True, False)
    assert LocalBackend.scratch_paths == (".tmp",)


async def test_host_pip_settings_follow_pip_host_env_not_the_backend_name(
    declared: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    result = await declared.install_package("six")
    assert result.stdout == "index: http://127.0.0.1:9/simple\n", result
    monkeypatch.setattr(DeclaredBackend, "pip_host_env", False)
    assert (await declared.install_package("six")).stdout == "index: None\n"


async def test_workspace_aliases_name_the_workspace(declared: Sandbox) -> None:
    await declared.write_file("a.txt", "via alias")
    assert await declared.read_file("/declared-workspace/a.txt") == "via alias"


async def test_internal_paths_are_hidden_unsaved_and_scratch_paths_emptied_on_reset(
    declared: Sandbox, tmp_path: Path
) -> None:
    await declared.write_file("cache/blob.bin", "internal")
    await declared.write_file("mine.txt", "user")
    async with SandboxTools(declared) as tools:
        listed = await tools.list_files("", recursive=True)
        assert [f["path"] for f in listed["files"]] == ["mine.txt"]
        storage = LocalStorage(StorageConfig.local(str(tmp_path / "store")))
        assert await declared.save_workspace(storage) == ["mine.txt"]
        reset = await tools.reset_sandbox()
        assert reset["files_deleted"] == 1, reset
    assert await declared.file_exists("cache")  # a scratch path is kept, emptied
    assert await declared.list_files("cache") == []


async def test_reset_empties_the_local_backends_tmpdir(tmp_path: Path) -> None:
    async with Sandbox("local", base_path=str(tmp_path)) as sandbox, SandboxTools(sandbox) as tools:
        made = await sandbox.run("import tempfile; tempfile.NamedTemporaryFile(delete=False).write(b'x')")
        assert made.success, made
        assert len(await sandbox.list_files(".tmp")) == 1
        await tools.reset_sandbox()
        assert await sandbox.list_files(".tmp") == []


# -- the public helpers of alphora.sandbox.backend ---------------------------------------------------


def test_map_os_error_gives_the_documented_errors() -> None:
    assert isinstance(map_os_error(builtins.FileNotFoundError(2, "gone"), "a"), SandboxFileNotFoundError)
    assert isinstance(map_os_error(safefs.PathEscape("a", "symlink in path"), "a"), PathTraversalError)
    other = map_os_error(BlockingIOError(11, "would block"), "a", "sid")
    assert type(other) is FileSystemError
    assert "would block" in str(other)
    assert type(map_os_error(RuntimeError("x"), "a")) is BackendError


def test_fileinfo_from_stat_and_minimal_env(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "r.json").write_text("{}")
    info = fileinfo_from_stat("d/r.json", os.lstat(tmp_path / "d" / "r.json"))
    assert (info.name, info.path, info.size, info.is_directory, info.file_type) == (
        "r.json",
        "d/r.json",
        2,
        False,
        FileType.JSON,
    )
    assert fileinfo_from_stat("d", os.lstat(tmp_path / "d")).is_directory
    env = minimal_env("/ws")
    assert env["HOME"] == "/ws"
    assert env["TMPDIR"] == "/ws/.tmp"
    assert "PIP_INDEX_URL" not in env
