"""StorageFactory: build a storage from a config through the plugin registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Storage, StorageConfig

if TYPE_CHECKING:
    from ..plugins import PluginRegistry

__all__ = ["StorageFactory"]


class StorageFactory:
    """Named constructors for storages; the class comes from the plugin registry by type name."""

    @staticmethod
    def create(config: StorageConfig, *, registry: PluginRegistry | None = None) -> Storage:
        """The storage registered as ``config.storage_type``, built with ``config``.

        An unknown type raises ConfigurationError naming it (and the extra to install for
        ``s3``/``minio``).
        """
        from ..plugins import get_registry

        cls = (registry or get_registry()).storage(config.storage_type)
        return cls(config)

    @classmethod
    def local(cls, path: str | None = None, **kw: Any) -> Storage:
        return cls.create(StorageConfig.local(path, **kw))

    @classmethod
    def minio(cls, endpoint: str, access_key: str, secret_key: str, bucket: str, **kw: Any) -> Storage:
        return cls.create(StorageConfig.minio(endpoint, access_key, secret_key, bucket, **kw))

    @classmethod
    def s3(
        cls,
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str | None = None,
        region: str = "us-east-1",
        **kw: Any,
    ) -> Storage:
        return cls.create(StorageConfig.s3(access_key, secret_key, bucket, region, **kw))
