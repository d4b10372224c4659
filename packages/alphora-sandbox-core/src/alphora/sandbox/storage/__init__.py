"""Storage backends: a blob store with keys, used to persist workspaces and export artifacts.

``LocalStorage`` ships with core; ``S3Storage`` (S3 and MinIO) comes with the s3 plugin
(``pip install 'alphora-sandbox[s3]'``) and is imported lazily from here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import ObjectInfo, Storage, StorageConfig, validate_key
from .factory import StorageFactory
from .local import LocalStorage
from .persist import restore_workspace, save_workspace

if TYPE_CHECKING:
    from alphora.sandbox_s3 import S3Storage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "StorageConfig",
    "StorageFactory",
    "restore_workspace",
    "save_workspace",
    "validate_key",
]


def __getattr__(name: str) -> Any:
    if name == "S3Storage":
        try:
            mod = importlib.import_module("alphora.sandbox_s3")
        except ImportError as exc:
            raise ImportError(
                "S3Storage needs the s3 plugin: pip install 'alphora-sandbox[s3]'", name=name
            ) from exc
        return mod.S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
