"""Checkpoints: save a sandbox (files, installed packages, session variables) to a storage and resume
it elsewhere, on another backend if you like. Uploads are incremental.

Run: python examples/checkpoints.py                  (local -> local)
     python examples/checkpoints.py docker           (local -> Docker; needs an engine and the plugin)

The storage here is a local folder; an S3/MinIO bucket works the same (StorageFactory.minio(...)).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from alphora.sandbox import Sandbox
from alphora.sandbox.storage import StorageFactory


async def main(resume_on: str) -> None:
    with tempfile.TemporaryDirectory() as base:
        async with StorageFactory.local(f"{base}/checkpoints") as storage:
            async with Sandbox.create_local(base_path=f"{base}/a") as sandbox:
                for i in range(50):
                    await sandbox.write_file(f"data/part-{i}.csv", f"{i}," * 20_000)
                async with sandbox.session() as py:
                    await py.run("import json\nresults = {'best': 0.93, 'runs': [1, 2, 3]}\nsquare = lambda x: x * x")
                    first = await sandbox.checkpoint(storage, "experiment")
                    print(f"first: {first.files} files, {first.uploaded_bytes} bytes sent")
                    print("not saved:", dict(first.unpicklable["default"]))  # the lambda, and why

                    await sandbox.write_file("data/part-7.csv", "changed")
                    second = await sandbox.checkpoint(storage, "experiment")
                    print(f"after a one-file change: {second.uploaded_files} file, {second.uploaded_bytes} bytes sent")

            extra = {"docker_image": "python:3.11-slim"} if resume_on == "docker" else {}
            resumed = await Sandbox.resume(storage, "experiment", backend=resume_on, base_path=f"{base}/b", **extra)
            async with resumed:
                print("restored:", resumed.resume_report)
                async with resumed.session() as py:
                    print("results:", (await py.run("json.dumps(results)")).value)
                print("part-7:", await resumed.read_file("data/part-7.csv"))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "local"))
