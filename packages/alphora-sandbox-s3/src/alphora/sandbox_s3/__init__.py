"""alphora-sandbox-s3: S3 and MinIO storage for alphora-sandbox (registered as ``s3`` and ``minio``)."""

from __future__ import annotations

from .storage import S3Storage, map_s3_errors

__all__ = ["S3Storage", "map_s3_errors"]
