"""Storage: the spec's local-storage example, persisting a workspace, and S3/MinIO when configured.

Run: python examples/storage_example.py
S3/MinIO part: set S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY (and optionally S3_BUCKET), e.g. a
local SeaweedFS started with `weed server -s3 -s3.config=s3.json` or a MinIO server.
"""

import asyncio
import os
import shutil
import tempfile
import urllib.request

from alphora.sandbox import Sandbox
from alphora.sandbox.storage import LocalStorage, StorageConfig, StorageFactory, restore_workspace, save_workspace

ROOT = tempfile.mkdtemp(prefix="alphora-storage-")


async def local_storage() -> None:
    config = StorageConfig.local(os.path.join(ROOT, "storage"))

    async with LocalStorage(config) as storage:
        # 存储文件
        await storage.put("myfile.txt", b"Hello World")

        # 读取文件
        data = await storage.get("myfile.txt")

        # 列出文件
        files = await storage.list(prefix="my")

        # 删除文件
        await storage.delete("myfile.txt")

    print("local:", data, files)


async def persist_workspace() -> None:
    storage = StorageFactory.local(os.path.join(ROOT, "workspaces"))
    async with storage:
        async with Sandbox.create_local(base_path=os.path.join(ROOT, "a")) as first:
            await first.run("open('result.txt', 'w').write('42')")
            saved = await save_workspace(first, storage, "jobs/42", exclude=[".venv"])
            await first.destroy()
        async with Sandbox.create_local(base_path=os.path.join(ROOT, "b")) as second:
            restored = await restore_workspace(second, storage, "jobs/42")
            print("persisted:", saved, "restored:", restored, "->", await second.read_file("result.txt"))
            await second.destroy()


async def s3_storage() -> None:
    endpoint = os.environ.get("S3_ENDPOINT")
    if not endpoint:
        print("s3: set S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY to run the MinIO/S3 part")
        return
    storage = StorageFactory.minio(
        endpoint=endpoint,
        access_key=os.environ["S3_ACCESS_KEY"],
        secret_key=os.environ["S3_SECRET_KEY"],
        bucket=os.environ.get("S3_BUCKET", "sandboxes"),
    )

    async with storage:
        await storage.put("data/file.txt", b"content")

        # 生成预签名 URL
        url = await storage.get_presigned_url("data/file.txt", expires_in=3600)

        # 获取存储桶信息
        info = await storage.get_bucket_info()

    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    print("s3:", body, info)


async def main() -> None:
    try:
        await local_storage()
        await persist_workspace()
        await s3_storage()
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)  # the temporary root: leave nothing in /tmp


if __name__ == "__main__":
    asyncio.run(main())
