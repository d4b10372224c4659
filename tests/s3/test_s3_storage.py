"""S3Storage against a real S3 server (SeaweedFS on loopback): the spec's examples and the contract."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import Sandbox, SandboxConfig, StorageError, StorageNotFoundError
from alphora.sandbox.storage import S3Storage, StorageConfig, StorageFactory, restore_workspace, save_workspace
from alphora.sandbox.testing import StorageContractTests

pytestmark = pytest.mark.s3

#: the s3_server fixture's value (tests/s3/conftest.py S3Server)
S3Server = Any


def _bucket() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


@pytest.fixture
async def storage(s3_server: S3Server) -> AsyncIterator[S3Storage]:
    s = StorageFactory.minio(
        endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, bucket=_bucket()
    )
    assert isinstance(s, S3Storage)
    async with s:
        yield s


class TestS3StorageContract(StorageContractTests):
    @pytest.fixture(autouse=True)
    def _server(self, s3_server: S3Server) -> None:
        self.server = s3_server

    async def make_storage(self, tmp_path: Path) -> S3Storage:
        return S3Storage(
            StorageConfig.minio(self.server.endpoint, self.server.access_key, self.server.secret_key, _bucket())
        )


async def test_spec_minio_example(s3_server: S3Server) -> None:
    """The spec's S3/MinIO block, with the test server's endpoint and credentials."""
    bucket = _bucket()
    config = StorageConfig.minio(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=bucket,
    )
    assert config.storage_type == "minio"

    storage = StorageFactory.minio(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=bucket,
    )

    async with storage:
        await storage.put("data/file.txt", b"content")

        url = await storage.get_presigned_url("data/file.txt", expires_in=3600)

        info = await storage.get_bucket_info()

    # the presigned URL works for anyone, without credentials
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    assert body == b"content"
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=3600" in url
    assert info["name"] == bucket
    assert info["object_count"] == 1
    assert info["total_size"] == len(b"content")
    assert info["endpoint"] == s3_server.endpoint
    # and the same object through the S3Storage class directly
    async with S3Storage(config) as again:
        assert await again.get("data/file.txt") == b"content"


async def test_factory_endpoint_without_scheme(s3_server: S3Server) -> None:
    # the spec's factory example passes "localhost:9000": no scheme means http unless secure=True
    storage = StorageFactory.minio(
        endpoint=s3_server.host_port, access_key=s3_server.access_key, secret_key=s3_server.secret_key, bucket=_bucket()
    )
    async with storage:
        await storage.put("k", b"v")
        assert await storage.get("k") == b"v"


async def test_unsigned_access_is_refused(storage: S3Storage, s3_server: S3Server) -> None:
    await storage.put("private.txt", b"secret")
    plain = f"{s3_server.endpoint}/{storage.bucket}/private.txt"
    with pytest.raises(urllib.error.HTTPError) as info:
        await asyncio.to_thread(lambda: urllib.request.urlopen(plain, timeout=10).read())
    assert info.value.code == 403


async def test_presigned_url_expires(storage: S3Storage) -> None:
    await storage.put("short.txt", b"brief")
    url = await storage.get_presigned_url("short.txt", expires_in=1)
    await asyncio.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as info:
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    assert info.value.code == 403


async def test_presigned_put(storage: S3Storage) -> None:
    url = await storage.get_presigned_url("upload.bin", expires_in=600, method="put")
    req = urllib.request.Request(url, data=b"uploaded by a client", method="PUT")
    await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=10).read())
    assert await storage.get("upload.bin") == b"uploaded by a client"
    with pytest.raises(StorageError, match="'get' or 'put'"):
        await storage.get_presigned_url("upload.bin", method="delete")
    with pytest.raises(StorageError, match="expires_in"):
        await storage.get_presigned_url("upload.bin", expires_in=0)


async def test_listing_stat_and_delete(storage: S3Storage) -> None:
    for key in ("a/b/c.txt", "a/d.txt", "e.txt"):
        await storage.put(key, key.encode(), content_type="text/plain")
    assert await storage.list() == ["a/b/c.txt", "a/d.txt", "e.txt"]
    assert await storage.list("a/", recursive=False) == ["a/d.txt"]
    st = await storage.stat("a/d.txt")
    assert st.size == len(b"a/d.txt")
    assert st.content_type == "text/plain"
    assert st.last_modified is not None
    assert await storage.delete("e.txt") is True
    assert await storage.delete("e.txt") is False
    with pytest.raises(StorageNotFoundError) as info:
        await storage.get("e.txt")
    assert info.value.key == "e.txt"
    assert isinstance(info.value, KeyError)


async def test_prefix_isolates_keys(s3_server: S3Server) -> None:
    bucket = _bucket()

    def make(prefix: str) -> S3Storage:
        return S3Storage(
            StorageConfig.minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket, prefix=prefix)
        )

    async with make("tenant-a") as a, make("tenant-b") as b:
        await a.put("x.txt", b"a")
        await b.put("x.txt", b"b")
        assert await a.get("x.txt") == b"a"
        assert await a.list() == ["x.txt"]
        assert (await a.get_bucket_info())["object_count"] == 1


async def test_wrong_secret_is_a_storage_error(s3_server: S3Server) -> None:
    storage = StorageFactory.minio(
        endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key="not-the-secret", bucket=_bucket()
    )
    with pytest.raises(StorageError) as info:
        async with storage:
            await storage.put("k", b"v")
    assert not isinstance(info.value, StorageNotFoundError)


async def test_invalid_bucket_name_is_refused_by_the_server(s3_server: S3Server) -> None:
    storage = StorageFactory.minio(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket="Not_A_Valid_Bucket",
    )
    with pytest.raises(StorageError):
        async with storage:
            await storage.put("k", b"v")


async def test_unreachable_endpoint_is_a_storage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = StorageFactory.minio(
        endpoint=f"127.0.0.1:{port}",
        access_key="a",
        secret_key="b",
        bucket="bkt",
        options={"max_attempts": 1, "connect_timeout": 2},
    )
    with pytest.raises(StorageError, match="bkt"):
        async with storage:
            pass


async def test_missing_bucket_without_create(s3_server: S3Server) -> None:
    storage = StorageFactory.minio(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=_bucket(),
        create_bucket=False,
    )
    async with storage:
        with pytest.raises(StorageError, match="does not exist"):
            await storage.get_bucket_info()


async def test_hostile_keys_never_reach_the_server(storage: S3Storage) -> None:
    for key in ("../escape", "/abs", "a//b", "nul\x00", "..\\x", ""):
        with pytest.raises(StorageError):
            await storage.put(key, b"x")
    assert await storage.list() == []


async def test_sandbox_config_minio_storage_and_workspace_round_trip(s3_server: S3Server, tmp_path: Path) -> None:
    config = SandboxConfig.minio(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=_bucket(),
        base_path=str(tmp_path / "sandboxes"),
    )
    assert config.storage is not None
    storage = StorageFactory.create(config.storage)
    assert isinstance(storage, S3Storage)
    async with storage:
        async with Sandbox.from_config(config) as first:
            await first.write_file("report/summary.md", "# done")
            await first.run("open('numbers.bin', 'wb').write(bytes(range(256)))")
            assert await save_workspace(first, storage, f"ws/{first.sandbox_id}") == [
                "numbers.bin",
                "report/summary.md",
            ]
            prefix = f"ws/{first.sandbox_id}"
            await first.destroy()
        async with Sandbox.from_config(config) as second:
            assert await restore_workspace(second, storage, prefix) == ["numbers.bin", "report/summary.md"]
            result = await second.run("print(open('numbers.bin','rb').read() == bytes(range(256)))")
            assert result.stdout.strip() == "True"
            assert await second.read_file("report/summary.md") == "# done"
            await second.destroy()


async def test_same_sandbox_id_elsewhere_restores_from_s3(storage: S3Storage, tmp_path: Path) -> None:
    """The Sandbox methods on S3: same sandbox id, another base path (as another host would have)."""
    async with Sandbox.create_local(base_path=tmp_path / "host-a", sandbox_id="job-7") as first:
        await first.write_file("model/weights.txt", "0.1 0.2")
        await first.run("import os; os.makedirs('__pycache__', exist_ok=True); open('__pycache__/x.pyc','w')")
        await first.execute_shell(f"ln -s {tmp_path} escape")
        assert await first.save_workspace(storage) == ["model/weights.txt"]
        await first.destroy()
    assert await storage.list() == ["sandboxes/job-7/model/weights.txt"]
    async with Sandbox.create_local(base_path=tmp_path / "host-b", sandbox_id="job-7") as second:
        assert await second.restore_workspace(storage) == ["model/weights.txt"]
        assert await second.read_file("model/weights.txt") == "0.1 0.2"
        await second.destroy()


async def test_lazy_connect_close_and_bad_data(s3_server: S3Server) -> None:
    storage = S3Storage(StorageConfig.minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, _bucket()))
    await storage.put("k", b"v")  # no async with: connects on first use
    assert await storage.exists("k")
    await storage.close()
    await storage.close()  # idempotent
    assert await storage.get("k") == b"v"  # reconnects
    with pytest.raises(StorageError, match="bytes"):
        await storage.put("k", "text")  # type: ignore[arg-type]
    await storage.close()
    with pytest.raises(StorageError, match="bucket"):
        S3Storage(StorageConfig.s3(access_key="a", secret_key="b"))


def test_spec_storage_factory_block_builds_the_right_storages(tmp_path: Path) -> None:
    """The spec's 存储工厂 block as written (nothing connects until first use)."""
    from alphora.sandbox.storage import LocalStorage

    # 本地存储
    storage = StorageFactory.local(str(tmp_path / "storage"))
    assert isinstance(storage, LocalStorage)

    # MinIO 存储
    storage = StorageFactory.minio(
        endpoint="localhost:9000", access_key="admin", secret_key="password", bucket="sandboxes"
    )
    assert isinstance(storage, S3Storage)
    assert storage.config.endpoint_url == "http://localhost:9000"
    assert storage.config.storage_type == "minio"

    # S3 存储
    storage = StorageFactory.s3(
        access_key="AKIAXXXXXXXXXX", secret_key="xxxxxxxxxxxxx", bucket="my-bucket", region="us-west-2"
    )
    assert isinstance(storage, S3Storage)
    assert storage.config.endpoint_url is None
    assert storage.config.region == "us-west-2"
    assert "xxxxxxxxxxxxx" not in repr(storage)
