"""Plugin registration for alphora-sandbox-s3: S3Storage as ``s3`` and ``minio``."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterStorage
from alphora.sandbox.plugins import hookimpl


@hookimpl
def sandbox_register_storages(register: RegisterStorage) -> None:
    from .storage import S3Storage

    register("s3", S3Storage)
    register("minio", S3Storage)
