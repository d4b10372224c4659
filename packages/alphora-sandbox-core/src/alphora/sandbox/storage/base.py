"""The storage contract: a blob store with keys, and its configuration.

A :class:`Storage` persists bytes under POSIX-like keys (``data/file.txt``). Keys are checked by
:func:`validate_key` (no NUL, no ``..`` escape, no absolute key, no empty component), so one key
means the same object on every storage. Implementations register with the
``sandbox_register_storages`` hook; :class:`~alphora.sandbox.storage.StorageFactory` builds them
from a :class:`StorageConfig`.
"""

from __future__ import annotations

import abc
import re
from types import TracebackType
from typing import Any

import attrs
from attrs import validators as v

from ..errors import FileSystemError, StorageError
from ..pathguard import normalize
from ..rules import name_key
from ..types import StorageType

__all__ = ["ObjectInfo", "Storage", "StorageConfig", "validate_key", "validate_prefix"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _valid_name(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"{attribute.name} must be a plugin name like 'local' or 's3', got {value!r}")


def _hidden(value: object) -> str:
    return "None" if value is None else "'***'"


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@attrs.frozen(kw_only=True)
class StorageConfig:
    """Where and how a storage keeps its objects.

    ``storage_type`` is a registered storage name (``local``, ``s3``, ``minio`` or a plugin's).
    ``local`` uses ``base_path``; ``s3``/``minio`` use ``endpoint`` (None: AWS), credentials,
    ``bucket`` and ``region``. An ``endpoint`` without a scheme gets ``https://`` when ``secure``
    else ``http://``. ``prefix`` is prepended to every key (a folder inside the bucket/base path).
    ``options`` go to the storage class untouched (e.g. ``{"addressing_style": "path"}``).
    """

    storage_type: str = attrs.field(default="local", converter=name_key, validator=_valid_name)
    base_path: str | None = attrs.field(default=None, converter=_opt_str)
    endpoint: str | None = None
    access_key: str | None = attrs.field(default=None, repr=_hidden)
    secret_key: str | None = attrs.field(default=None, repr=_hidden)
    bucket: str | None = None
    region: str = "us-east-1"
    secure: bool = attrs.field(default=True, validator=v.instance_of(bool))
    prefix: str = ""
    create_bucket: bool = attrs.field(default=True, validator=v.instance_of(bool))
    options: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def local(cls, path: str | None = None, **kw: Any) -> StorageConfig:
        """Files under ``path`` (default: ``$ALPHORA_SANDBOX_HOME/../storage``)."""
        return cls(storage_type=StorageType.LOCAL.value, base_path=path, **kw)

    @classmethod
    def minio(
        cls,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        **kw: Any,
    ) -> StorageConfig:
        """A MinIO (or any S3-compatible) server; ``endpoint`` like ``http://localhost:9000``."""
        return cls(
            storage_type=StorageType.MINIO.value,
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            bucket=bucket,
            secure=secure,
            region=region,
            **kw,
        )

    @classmethod
    def s3(
        cls,
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str | None = None,
        region: str = "us-east-1",
        *,
        endpoint: str | None = None,
        **kw: Any,
    ) -> StorageConfig:
        """Amazon S3 (``endpoint=None``) or another S3 service. Keys None: the AWS default chain."""
        return cls(
            storage_type=StorageType.S3.value,
            access_key=access_key,
            secret_key=secret_key,
            bucket=bucket,
            region=region,
            endpoint=endpoint,
            **kw,
        )

    @property
    def endpoint_url(self) -> str | None:
        """``endpoint`` with a scheme (``localhost:9000`` → ``http://localhost:9000`` when not secure)."""
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint.rstrip("/")
        return f"{'https' if self.secure else 'http'}://{self.endpoint.rstrip('/')}"

    def evolve(self, **changes: Any) -> StorageConfig:
        return attrs.evolve(self, **changes)


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Normalise a storage key (``./a//b`` is refused, ``a/./b`` → ``a/b``) or raise StorageError."""
    if not isinstance(key, str):
        raise StorageError(f"storage key must be a str, got {type(key).__name__}", key=repr(key))
    try:
        norm = normalize(key)
    except FileSystemError as exc:  # PathTraversalError, or a key over the path length limits
        raise StorageError(f"invalid storage key {key!r}: {exc.message}", key=key) from exc
    if not norm and not allow_empty:
        raise StorageError(f"invalid storage key {key!r}: it is empty", key=key)
    return norm


def validate_prefix(prefix: str) -> str:
    """A listing prefix: any string a key may start with (``"my"`` matches ``myfile.txt``)."""
    if not isinstance(prefix, str):
        raise StorageError(f"storage prefix must be a str, got {type(prefix).__name__}", key=repr(prefix))
    parts = prefix.split("/")
    if (
        "\x00" in prefix
        or "\\" in prefix
        or prefix.startswith("/")
        or any(p in (".", "..") for p in parts)
        or any(p == "" for p in parts[:-1])
    ):
        raise StorageError(f"invalid storage prefix {prefix!r}", key=prefix)
    return prefix


@attrs.frozen(kw_only=True)
class ObjectInfo:
    """One stored object as :meth:`Storage.stat` sees it."""

    key: str
    size: int
    last_modified: float | None = None
    etag: str | None = None
    content_type: str | None = None


class Storage(abc.ABC):
    """Base class of storages. Subclass it, implement the abstract methods, register the class
    with the ``sandbox_register_storages`` hook and run
    :class:`alphora.sandbox.testing.StorageContractTests` against it.

    Use it as ``async with storage: ...`` (connects on enter, closes on exit); every method also
    works without it, connecting on first use.
    """

    #: the registry name (``local``, ``s3``, …)
    name: str = ""

    def __init__(self, config: StorageConfig | None = None) -> None:
        self.config = config if config is not None else StorageConfig()
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open connections / create the base directory or bucket. Idempotent."""
        self._closed = False

    async def close(self) -> None:
        """Release connections. Idempotent."""
        self._closed = True

    async def __aenter__(self) -> Storage:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- objects ----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        """Store ``data`` under ``key`` (replacing it atomically); return the normalised key."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; StorageNotFoundError when there are none."""

    @abc.abstractmethod
    async def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        """Sorted keys that start with ``prefix`` (a plain string prefix, like S3)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """True when an object is stored under ``key``."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size and metadata of ``key``; StorageNotFoundError when there is none."""

    @abc.abstractmethod
    async def get_presigned_url(self, key: str, expires_in: int = 3600, *, method: str = "get") -> str:
        """A URL that grants ``method`` (get/put) on ``key`` for ``expires_in`` seconds."""

    @abc.abstractmethod
    async def get_bucket_info(self) -> dict[str, Any]:
        """What the storage holds: name/location, object count, total bytes, type."""

    # -- conveniences built on the primitives -----------------------------------------------------

    async def put_text(self, key: str, text: str, *, encoding: str = "utf-8") -> str:
        return await self.put(key, text.encode(encoding), content_type="text/plain; charset=" + encoding)

    async def get_text(self, key: str, *, encoding: str = "utf-8") -> str:
        return (await self.get(key)).decode(encoding)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many were removed."""
        count = 0
        for key in await self.list(prefix):
            if await self.delete(key):
                count += 1
        return count

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
