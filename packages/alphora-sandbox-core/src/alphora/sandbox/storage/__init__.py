"""Storage backends: a blob store with keys, used to persist workspaces and export artifacts.

``LocalStorage`` ships with core; ``S3Storage`` (S3 and MinIO) comes with the s3 plugin
(``pip install 'alphora-sandbox[s3]'``) and is imported lazily from here. ``from
alphora.sandbox.storage import *`` exports it only when the plugin is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..plugins import plugin_attr, plugin_installed
from .base import ObjectInfo, Storage, StorageConfig, validate_key
from .factory import StorageFactory
from .local import LocalStorage
from .persist import restore_workspace, save_workspace

if TYPE_CHECKING:
    from alphora.sandbox_s3 import S3Storage

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "Storage",
    "StorageConfig",
    "StorageFactory",
    "restore_workspace",
    "save_workspace",
    "validate_key",
]
# a star import resolves every name listed here: S3Storage only when its plugin is installed
if plugin_installed("alphora.sandbox_s3"):
    __all__ += ["S3Storage"]


def __getattr__(name: str) -> Any:
    if name == "S3Storage":
        return plugin_attr("alphora.sandbox_s3", name, "s3")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
