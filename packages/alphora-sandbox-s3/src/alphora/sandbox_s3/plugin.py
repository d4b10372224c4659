"""Plugin registration for alphora-sandbox-s3: S3Storage as ``s3`` and ``minio``."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterStorage
from alphora.sandbox.plugins import hookimpl


@hookimpl
def sandbox_register_storages(register: RegisterStorage) -> None:
    # by reference: boto is imported when "s3" or "minio" is first looked up
    register("s3", "alphora.sandbox_s3.storage:S3Storage")
    register("minio", "alphora.sandbox_s3.storage:S3Storage")
