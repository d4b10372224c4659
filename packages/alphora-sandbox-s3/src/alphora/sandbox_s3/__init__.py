"""alphora-sandbox-s3: S3 and MinIO storage for alphora-sandbox (registered as ``s3`` and ``minio``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .storage import S3Storage, map_s3_errors

__all__ = ["S3Storage", "map_s3_errors"]


def __getattr__(name: str) -> Any:
    """``S3Storage`` and ``map_s3_errors``, imported on first access (PEP 562): the plugin entry point
    imports this package, and boto costs ~0.2 s to import."""
    if name in __all__:
        value = getattr(importlib.import_module(".storage", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
