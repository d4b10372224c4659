"""LocalStorage, StorageConfig, StorageFactory and the workspace persistence helpers."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphora.sandbox import ConfigurationError, Sandbox, StorageError, StorageNotFoundError
from alphora.sandbox.plugins import PluginRegistry, make_plugin_manager
from alphora.sandbox.storage import (
    LocalStorage,
    StorageConfig,
    StorageFactory,
    restore_workspace,
    save_workspace,
)
from alphora.sandbox.testing import StorageContractTests


class TestLocalStorageContract(StorageContractTests):
    async def make_storage(self, tmp_path: Path) -> LocalStorage:
        return LocalStorage(StorageConfig.local(str(tmp_path / "store")))


async def test_spec_local_storage_example(tmp_path: Path) -> None:
    # the spec's 本地存储 example, with a temporary directory for "/data/storage"
    config = StorageConfig.local(str(tmp_path / "storage"))

    async with LocalStorage(config) as storage:
        await storage.put("myfile.txt", b"Hello World")
        data = await storage.get("myfile.txt")
        files = await storage.list(prefix="my")
        await storage.delete("myfile.txt")

    assert data == b"Hello World"
    assert files == ["myfile.txt"]
    assert not (tmp_path / "storage" / "myfile.txt").exists()


def test_storage_factory_local_and_create(tmp_path: Path) -> None:
    storage = StorageFactory.local(str(tmp_path))
    assert isinstance(storage, LocalStorage)
    assert storage.base_path == tmp_path
    assert isinstance(StorageFactory.create(StorageConfig.local(str(tmp_path))), LocalStorage)


def test_storage_factory_unknown_type_names_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        StorageFactory.create(StorageConfig(storage_type="ftp"))
    assert info.value.field == "storage_type"
    assert info.value.value == "ftp"


def test_storage_factory_without_s3_plugin_says_what_to_install() -> None:
    registry = PluginRegistry(make_plugin_manager(autoload=False))
    with pytest.raises(ConfigurationError, match=r"pip install 'alphora-sandbox\[s3\]'"):
        StorageFactory.create(StorageConfig.minio("localhost:9000", "a", "b", "bkt"), registry=registry)


def test_s3storage_lazy_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import alphora.sandbox.storage as storage_mod

    monkeypatch.setitem(sys.modules, "alphora.sandbox_s3", None)  # as if the plugin were not installed
    with pytest.raises(ImportError, match=r"pip install 'alphora-sandbox\[s3\]'"):
        _ = storage_mod.S3Storage


def test_default_local_storage_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ALPHORA_SANDBOX_STORAGE", raising=False)
    monkeypatch.setenv("ALPHORA_SANDBOX_HOME", str(tmp_path / "home"))
    assert LocalStorage().base_path == tmp_path / "home" / ".storage"
    monkeypatch.setenv("ALPHORA_SANDBOX_STORAGE", str(tmp_path / "store"))
    assert LocalStorage().base_path == tmp_path / "store"
    monkeypatch.delenv("ALPHORA_SANDBOX_STORAGE")
    monkeypatch.delenv("ALPHORA_SANDBOX_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert LocalStorage().base_path == tmp_path / "xdg" / "alphora-sandbox" / "storage"
    assert (
        LocalStorage(StorageConfig.local(str(tmp_path / "s"), prefix="tenant")).base_path == tmp_path / "s" / "tenant"
    )


def test_storage_config_constructors() -> None:
    minio = StorageConfig.minio(
        endpoint="localhost:9000", access_key="admin", secret_key="password", bucket="sandboxes"
    )
    assert minio.endpoint_url == "http://localhost:9000"
    assert "password" not in repr(minio)
    s3 = StorageConfig.s3(
        access_key="AKIAXXXXXXXXXX", secret_key="xxxxxxxxxxxxx", bucket="my-bucket", region="us-west-2"
    )
    assert s3.storage_type == "s3"
    assert s3.endpoint_url is None
    assert s3.region == "us-west-2"
    with pytest.raises(ValueError, match="storage_type"):
        StorageConfig(storage_type="No Such!")


async def test_nested_keys_listing_and_cleanup(tmp_path: Path) -> None:
    async with LocalStorage(StorageConfig.local(str(tmp_path))) as storage:
        for key in ("a/b/c.txt", "a/d.txt", "e.txt"):
            assert await storage.put(key, key.encode()) == key
        assert await storage.list() == ["a/b/c.txt", "a/d.txt", "e.txt"]
        assert await storage.list("a/", recursive=False) == ["a/d.txt"]
        assert await storage.list("", recursive=False) == ["e.txt"]
        assert await storage.put("./x/./y.txt", b"y") == "x/y.txt"
        assert (await storage.stat("x/y.txt")).size == 1
        assert await storage.delete("a/b/c.txt") is True
        assert await storage.delete("a/b/c.txt") is False
        assert not (tmp_path / "a" / "b").exists()  # empty folders go with their last key
        with pytest.raises(StorageError, match="parent of it is an object"):
            await storage.put("e.txt/under", b"x")
        with pytest.raises(StorageError, match="other keys live under it"):
            await storage.put("a", b"x")
        info = await storage.get_bucket_info()
        assert info["object_count"] == 3
        assert info["total_size"] == len(b"a/d.txt") + len(b"e.txt") + 1
        url = await storage.get_presigned_url("e.txt", expires_in=60)
        assert url == (tmp_path / "e.txt").as_uri()
        with pytest.raises(StorageNotFoundError):
            await storage.get_presigned_url("nope.txt")
        with pytest.raises(StorageNotFoundError):
            await storage.stat("nope.txt")
        assert await storage.delete_prefix("a/") == 1


async def test_put_is_atomic_under_concurrent_readers(tmp_path: Path) -> None:
    """A reader sees the old or the new bytes, never a mix or a partial file."""
    storage = LocalStorage(StorageConfig.local(str(tmp_path)))
    old, new = b"A" * 2_000_000, b"B" * 3_000_000
    await storage.put("big.bin", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        path = tmp_path / "big.bin"
        while not stop.is_set():
            data = path.read_bytes()
            seen.add(data[:1] + bytes([len(data) == len(old)]) + bytes([len(set(data)) == 1]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20):
            await storage.put("big.bin", new if i % 2 == 0 else old)
    finally:
        stop.set()
        thread.join()
    assert seen <= {b"A\x01\x01", b"B\x00\x01"}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".alphora-tmp-")]


async def test_symlinks_inside_the_base_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    base = tmp_path / "store"
    base.mkdir()
    os.symlink(outside, base / "link")
    os.symlink(outside / "secret.txt", base / "file-link")
    async with LocalStorage(StorageConfig.local(str(base))) as storage:
        with pytest.raises(StorageError):
            await storage.get("link/secret.txt")
        with pytest.raises(StorageError):
            await storage.get("file-link")
        with pytest.raises(StorageError):
            await storage.put("link/new.txt", b"x")
        assert await storage.exists("link/secret.txt") is False
        assert await storage.list() == []
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"


_hostile_key = st.one_of(
    st.sampled_from(
        ["../x", "a/../../x", "/etc/passwd", "a\x00b", "..\\x", "~/x", "a//b", "", ".", "..", ".alphora-tmp-1"]
    ),
    st.lists(st.sampled_from(["..", ".", "", "a", "b", "\x00", "~", "c:"]), min_size=1, max_size=6).map("/".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_hostile_key)
def test_hostile_keys_never_leave_the_base(tmp_path: Path, key: str) -> None:
    base = tmp_path / "hk" / "store"
    base.mkdir(parents=True, exist_ok=True)
    sentinel = tmp_path / "hk" / "sentinel"
    storage = LocalStorage(StorageConfig.local(str(base)))

    async def attempt() -> None:
        try:
            stored = await storage.put(key, b"payload")
        except StorageError:
            return
        # accepted: it must have landed inside the base, under its normalised name
        assert (base / stored).resolve().is_relative_to(base.resolve())
        assert await storage.get(stored) == b"payload"
        await storage.delete(stored)

    asyncio.run(attempt())
    assert not sentinel.exists()
    assert sorted(os.listdir(tmp_path / "hk")) == ["store"]


# -- workspace persistence ----------------------------------------------------------------------


async def test_save_and_restore_workspace_helpers(tmp_path: Path) -> None:
    storage = LocalStorage(StorageConfig.local(str(tmp_path / "store")))
    async with Sandbox.create_local(base_path=tmp_path / "a") as first:
        await first.write_file("notes/today.md", "# hi")
        await first.write_file_bytes("data.bin", bytes(range(256)))
        await first.write_file(".venv/ignored.txt", "x")
        outside = tmp_path / "outside.txt"
        outside.write_text("host secret")
        await first.execute_shell(f"ln -s {outside} loot")
        saved = await save_workspace(first, storage, "jobs/42", exclude=[".venv"])
        assert saved == ["data.bin", "notes/today.md"]  # the planted symlink was skipped, .venv excluded
        await first.delete_file("notes")
        assert await save_workspace(first, storage, "jobs/42", exclude=[".venv"]) == ["data.bin"]
        assert await storage.list("jobs/42/") == ["jobs/42/data.bin"]
        await first.destroy()
    async with Sandbox.create_local(base_path=tmp_path / "b") as second:
        assert await restore_workspace(second, storage, "jobs/42") == ["data.bin"]
        assert await second.read_file_bytes("data.bin") == bytes(range(256))
        with pytest.raises(StorageNotFoundError):
            await restore_workspace(second, storage, "never/saved")
        await second.destroy()
