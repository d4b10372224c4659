"""One checkpoint round trip through S3 (SeaweedFS from tests/s3/conftest.py): the blobs and the
manifest go to the bucket, a second checkpoint after a one-file change sends only that file."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from alphora.sandbox import Sandbox
from alphora.sandbox.storage import StorageFactory


async def test_checkpoint_round_trip_through_s3(s3_server: Any, tmp_path: Path) -> None:
    storage = StorageFactory.minio(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"t-{uuid.uuid4().hex[:20]}",
    )
    async with storage, Sandbox.create_local(base_path=tmp_path / "a") as sandbox:
        await sandbox.write_file("data/big.bin", "x" * 50_000)
        await sandbox.write_file("data/small.txt", "v1")
        async with sandbox.session() as py:
            await py.run("state = {'step': 1}")
            first = await sandbox.checkpoint(storage, "s3-run")
            await sandbox.write_file("data/small.txt", "v2")
            second = await sandbox.checkpoint(storage, "s3-run")
        assert (first.uploaded_files, second.uploaded_files) == (2, 1)
        assert second.uploaded_bytes < 5_000 < first.uploaded_bytes
        assert any(k.startswith("checkpoints/blobs/") for k in await storage.list("checkpoints/"))
        resumed = await Sandbox.resume(storage, "s3-run", backend="local", base_path=tmp_path / "b")
        async with resumed:
            assert await resumed.read_file("data/small.txt") == "v2"
            assert await resumed.read_file("data/big.bin") == "x" * 50_000
            async with resumed.session() as py:
                assert (await py.run("state")).value == "{'step': 1}"
