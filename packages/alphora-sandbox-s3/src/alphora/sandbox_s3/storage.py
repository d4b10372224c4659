"""S3Storage: objects in an S3 bucket (Amazon S3, MinIO, SeaweedFS, …) through aioboto3."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from alphora.sandbox.errors import StorageError, StorageNotFoundError
from alphora.sandbox.storage.base import ObjectInfo, Storage, StorageConfig, validate_key, validate_prefix

__all__ = ["S3Storage", "map_s3_errors"]

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


@contextlib.contextmanager
def map_s3_errors(action: str, key: str | None = None, *, bucket: str | None = None) -> Iterator[None]:
    """Turn botocore errors into StorageNotFoundError / StorageError naming the key and bucket."""
    where = f"{key!r} in bucket {bucket!r}" if key is not None else f"bucket {bucket!r}"
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        msg = err.get("Message") or str(exc)
        if code in _NOT_FOUND and key is not None:
            raise StorageNotFoundError(f"no object stored under {key!r} in bucket {bucket!r}", key=key) from exc
        if code == "NoSuchBucket" or (code in _NOT_FOUND and key is None):
            raise StorageError(f"cannot {action} {where}: the bucket does not exist", key=key) from exc
        raise StorageError(f"cannot {action} {where}: {code} {msg}", key=key, code=code) from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot {action} {where}: {exc}", key=key) from exc


class S3Storage(Storage):
    """Objects in ``config.bucket`` under ``config.prefix``; registered as ``s3`` and ``minio``.

    ``async with storage:`` opens one client (and creates the bucket when it is missing and
    ``create_bucket`` is true); methods called outside it open the client on first use, and
    :meth:`close` releases it. With a custom ``endpoint`` path-style addressing is used (what
    MinIO and SeaweedFS expect); ``options`` may override it (``{"addressing_style": "virtual"}``).
    """

    name = "s3"

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config if config is not None else StorageConfig.s3())
        if not self.config.bucket:
            raise StorageError("S3Storage needs a bucket (StorageConfig.bucket)")
        self.bucket: str = self.config.bucket
        self._prefix = validate_key(self.config.prefix) + "/" if self.config.prefix.strip("/") else ""
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    # -- lifecycle --------------------------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        """aioboto3 client arguments; ``options`` may set botocore Config values
        (``addressing_style``, ``max_attempts``, ``connect_timeout``, ``read_timeout``,
        ``max_pool_connections``) or client arguments (``verify``, ``use_ssl``)."""
        opts = dict(self.config.options)
        addressing = opts.pop("addressing_style", "path" if self.config.endpoint else "auto")
        boto_kw: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 60}
        for name in ("connect_timeout", "read_timeout", "max_pool_connections"):
            if name in opts:
                boto_kw[name] = opts.pop(name)
        kw: dict[str, Any] = {
            "region_name": self.config.region,
            "config": BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": addressing},
                retries={"max_attempts": int(opts.pop("max_attempts", 3)), "mode": "standard"},
                **boto_kw,
            ),
        }
        if self.config.endpoint_url:
            kw["endpoint_url"] = self.config.endpoint_url
        if self.config.access_key is not None:
            kw["aws_access_key_id"] = self.config.access_key
            kw["aws_secret_access_key"] = self.config.secret_key
        kw.update(opts)
        return kw

    async def connect(self) -> None:
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        with map_s3_errors("connect to", bucket=self.bucket):
            client = await stack.enter_async_context(aioboto3.Session().client("s3", **self._client_kwargs()))
        self._stack, self._client, self._closed = stack, client, False
        if self.config.create_bucket:
            try:
                with map_s3_errors("open", bucket=self.bucket):
                    await self._ensure_bucket()
            except BaseException:
                await self.close()
                raise

    async def _ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                with map_s3_errors("open", bucket=self.bucket):
                    raise
        kw: dict[str, Any] = {"Bucket": self.bucket}
        if self.config.region and self.config.region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
        try:
            await self._client.create_bucket(**kw)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                with map_s3_errors("create", bucket=self.bucket):
                    raise

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        self._closed = True
        if stack is not None:
            await stack.aclose()

    async def _c(self) -> Any:
        if self._client is None:
            await self.connect()
        return self._client

    def _key(self, key: str) -> tuple[str, str]:
        norm = validate_key(key)
        return norm, self._prefix + norm

    # -- objects ----------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StorageError(f"data must be bytes, got {type(data).__name__}", key=str(key))
        norm, full = self._key(key)
        client = await self._c()
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": bytes(data)}
        if content_type:
            kw["ContentType"] = content_type
        with map_s3_errors("store", norm, bucket=self.bucket):
            await client.put_object(**kw)
        return norm

    async def get(self, key: str) -> bytes:
        norm, full = self._key(key)
        client = await self._c()
        with map_s3_errors("read", norm, bucket=self.bucket):
            resp = await client.get_object(Bucket=self.bucket, Key=full)
            async with resp["Body"] as body:
                data: bytes = await body.read()
        return data

    async def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        validate_prefix(prefix)
        client = await self._c()
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._prefix + prefix}
        if not recursive:
            kw["Delimiter"] = "/"
        keys: list[str] = []
        with map_s3_errors("list", bucket=self.bucket):
            async for page in client.get_paginator("list_objects_v2").paginate(**kw):
                keys.extend(obj["Key"][len(self._prefix) :] for obj in page.get("Contents", ()))
        return sorted(k for k in keys if k and not k.endswith("/"))

    async def delete(self, key: str) -> bool:
        if not await self.exists(key):
            return False
        norm, full = self._key(key)
        client = await self._c()
        with map_s3_errors("delete", norm, bucket=self.bucket):
            await client.delete_object(Bucket=self.bucket, Key=full)
        return True

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except StorageNotFoundError:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        norm, full = self._key(key)
        client = await self._c()
        with map_s3_errors("stat", norm, bucket=self.bucket):
            head = await client.head_object(Bucket=self.bucket, Key=full)
        modified = head.get("LastModified")
        return ObjectInfo(
            key=norm,
            size=int(head.get("ContentLength", 0)),
            last_modified=modified.timestamp() if modified is not None else None,
            etag=str(head.get("ETag", "")).strip('"') or None,
            content_type=head.get("ContentType"),
        )

    async def get_presigned_url(self, key: str, expires_in: int = 3600, *, method: str = "get") -> str:
        norm, full = self._key(key)
        op = {"get": "get_object", "put": "put_object"}.get(method.lower())
        if op is None:
            raise StorageError(f"presigned URL method must be 'get' or 'put', got {method!r}", key=norm)
        if not isinstance(expires_in, int) or expires_in <= 0 or expires_in > 7 * 24 * 3600:
            raise StorageError(f"expires_in must be 1..604800 seconds, got {expires_in!r}", key=norm)
        client = await self._c()
        with map_s3_errors("sign", norm, bucket=self.bucket):
            url: str = await client.generate_presigned_url(
                op, Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires_in
            )
        return url

    async def get_bucket_info(self) -> dict[str, Any]:
        client = await self._c()
        count = 0
        total = 0
        with map_s3_errors("inspect", bucket=self.bucket):
            await client.head_bucket(Bucket=self.bucket)
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._prefix):
                for obj in page.get("Contents", ()):
                    count += 1
                    total += int(obj.get("Size", 0))
        return {
            "name": self.bucket,
            "type": self.config.storage_type,
            "endpoint": self.config.endpoint_url,
            "region": self.config.region,
            "prefix": self._prefix,
            "object_count": count,
            "total_size": total,
        }
