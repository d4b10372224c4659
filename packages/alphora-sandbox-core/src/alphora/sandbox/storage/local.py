"""LocalStorage: objects as files under a base directory, written atomically."""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import secrets
import stat as stat_mod
from pathlib import Path
from typing import Any

from ..backend import default_base_path
from ..errors import StorageError, StorageNotFoundError
from ..runner.safefs import shorten
from .base import ObjectInfo, Storage, StorageConfig, validate_key, validate_prefix

__all__ = ["LocalStorage"]

_TMP = ".alphora-tmp-"


def _makedirs(path: Path) -> None:
    """``path`` and its missing parents, mode 0700; iterative (``Path.mkdir(parents=True)`` and
    ``os.makedirs`` recurse once per missing level)."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise


def default_storage_path() -> Path:
    """Where LocalStorage keeps objects when no path is given.

    ``$ALPHORA_SANDBOX_STORAGE`` if set; else ``$ALPHORA_SANDBOX_HOME/.storage`` (a name no sandbox
    id can take); else ``storage`` next to the per-user sandboxes directory
    (``~/.local/share/alphora-sandbox/storage``).
    """
    env = os.environ.get("ALPHORA_SANDBOX_STORAGE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("ALPHORA_SANDBOX_HOME"):
        return default_base_path() / ".storage"
    return default_base_path().parent / "storage"


class LocalStorage(Storage):
    """Objects are files under ``config.base_path`` (+ ``config.prefix``); a key is a relative path.

    Writes go to a temporary file in the same directory and are renamed into place, so a reader
    sees the old or the new bytes, never half. Keys cannot leave the base directory (checked
    lexically, and symlinks below the base directory are not followed). A key cannot be both an
    object and a "folder" of other keys (``a`` and ``a/b``), unlike on S3.
    ``get_presigned_url`` returns a ``file://`` URL (there is no server to sign for).
    """

    name = "local"

    def __init__(self, config: StorageConfig | None = None) -> None:
        super().__init__(config if config is not None else StorageConfig.local())
        base = Path(self.config.base_path).expanduser() if self.config.base_path else default_storage_path()
        if self.config.prefix:
            base = base / validate_key(self.config.prefix)
        self.base_path = base.absolute()

    # -- helpers ----------------------------------------------------------------------------------

    def _path(self, key: str) -> tuple[str, Path]:
        norm = validate_key(key)
        if any(part.startswith(_TMP) for part in norm.split("/")):
            raise StorageError(f"invalid storage key {key!r}: {_TMP}* names are reserved", key=key)
        return norm, self.base_path / norm

    def _check_no_links(self, norm: str, *, upto_parent: bool = False) -> None:
        """Refuse keys whose path under the base directory goes through a symlink."""
        parts = norm.split("/")
        current = self.base_path
        for part in parts[:-1] if upto_parent else parts:
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                return
            if stat_mod.S_ISLNK(st.st_mode):
                raise StorageError(f"storage key {norm!r} goes through a symlink", key=norm)

    def _ensure_base(self) -> None:
        self.base_path.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def connect(self) -> None:
        await asyncio.to_thread(self._ensure_base)

    # -- objects ----------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StorageError(f"data must be bytes, got {type(data).__name__}", key=str(key))
        norm, path = self._path(key)
        await asyncio.to_thread(self._put_sync, norm, path, bytes(data))
        return norm

    def _put_sync(self, norm: str, path: Path, data: bytes) -> None:
        self._ensure_base()
        self._check_no_links(norm, upto_parent=True)
        try:
            _makedirs(path.parent)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError(f"cannot store {norm!r}: a parent of it is an object", key=norm) from exc
        except OSError as exc:  # e.g. ENAMETOOLONG: base path + key longer than the OS allows
            raise StorageError(f"cannot store {shorten(norm)!r}: {exc.strerror}", key=norm) from exc
        if path.is_dir() and not path.is_symlink():
            raise StorageError(f"cannot store {norm!r}: other keys live under it", key=norm)
        tmp = path.parent / f"{_TMP}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    async def get(self, key: str) -> bytes:
        norm, path = self._path(key)
        return await asyncio.to_thread(self._get_sync, norm, path)

    def _get_sync(self, norm: str, path: Path) -> bytes:
        self._check_no_links(norm)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, NotADirectoryError):
            raise StorageNotFoundError(f"no object stored under {norm!r}", key=norm) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StorageError(f"storage key {norm!r} is a symlink", key=norm) from exc
            raise StorageError(f"cannot read {norm!r}: {exc.strerror}", key=norm) from exc
        with os.fdopen(fd, "rb") as fh:
            if not stat_mod.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise StorageNotFoundError(f"no object stored under {norm!r}", key=norm)
            return fh.read()

    async def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list_sync, prefix, recursive)

    def _walk(self) -> builtins.list[str]:
        """Every key: files below the base path (symlinks and temporary files left out). Iterative,
        so a tree as deep as keys can be (about 2,000 levels) is no RecursionError (os.walk recurses
        before Python 3.13)."""
        keys: builtins.list[str] = []
        if not self.base_path.is_dir():
            return keys
        stack = [("", str(self.base_path))]
        while stack:
            rel, directory = stack.pop()
            try:
                it = os.scandir(directory)
            except OSError:
                continue  # vanished, or longer than the OS can name: nothing readable there
            with it:
                for entry in it:
                    key = f"{rel}/{entry.name}" if rel else entry.name
                    try:
                        if entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((key, entry.path))
                            continue
                    except OSError:
                        continue
                    if not entry.name.startswith(_TMP):
                        keys.append(key)
        return keys

    def _list_sync(self, prefix: str, recursive: bool) -> builtins.list[str]:
        keys = [k for k in self._walk() if k.startswith(prefix)]
        if not recursive:
            keys = [k for k in keys if "/" not in k[len(prefix) :]]
        return sorted(keys)

    async def delete(self, key: str) -> bool:
        norm, path = self._path(key)
        return await asyncio.to_thread(self._delete_sync, norm, path)

    def _delete_sync(self, norm: str, path: Path) -> bool:
        self._check_no_links(norm, upto_parent=True)
        try:
            if path.is_dir() and not path.is_symlink():
                return False
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        # drop now-empty parent folders so listings and put("a") stay clean
        parent = path.parent
        while parent != self.base_path and self.base_path in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    async def exists(self, key: str) -> bool:
        norm, path = self._path(key)

        def check() -> bool:
            try:
                self._check_no_links(norm, upto_parent=True)
                return stat_mod.S_ISREG(os.lstat(path).st_mode)
            except (OSError, StorageError):
                return False

        return await asyncio.to_thread(check)

    async def stat(self, key: str) -> ObjectInfo:
        norm, path = self._path(key)

        def do() -> ObjectInfo:
            self._check_no_links(norm, upto_parent=True)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                raise StorageNotFoundError(f"no object stored under {norm!r}", key=norm) from None
            if not stat_mod.S_ISREG(st.st_mode):
                raise StorageNotFoundError(f"no object stored under {norm!r}", key=norm)
            return ObjectInfo(key=norm, size=st.st_size, last_modified=st.st_mtime)

        return await asyncio.to_thread(do)

    async def get_presigned_url(self, key: str, expires_in: int = 3600, *, method: str = "get") -> str:
        norm, path = self._path(key)
        if method.lower() == "get" and not await self.exists(norm):
            raise StorageNotFoundError(f"no object stored under {norm!r}", key=norm)
        return path.as_uri()

    async def get_bucket_info(self) -> dict[str, Any]:
        def do() -> dict[str, Any]:
            keys = self._walk()
            total = 0
            for k in keys:
                try:
                    total += os.lstat(self.base_path / k).st_size
                except OSError:
                    pass
            return {
                "name": str(self.base_path),
                "type": self.name,
                "location": str(self.base_path),
                "object_count": len(keys),
                "total_size": total,
                "exists": self.base_path.is_dir(),
            }

        return await asyncio.to_thread(do)
