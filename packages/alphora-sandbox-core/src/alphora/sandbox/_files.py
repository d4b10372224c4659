"""The facade's file API and workspace persistence (:class:`FileMethods`, a part of
:class:`~alphora.sandbox.Sandbox`): every path goes through the path guard and the policy checks
before the backend's file primitives see it."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import pathguard
from .errors import FileNotFoundError, FileSystemError
from .types import FileInfo

if TYPE_CHECKING:
    from .backend import Backend
    from .storage.base import Storage

__all__ = ["DEFAULT_PERSIST_EXCLUDE", "FileMethods"]

#: workspace paths save_workspace skips by default, besides the backend's ``internal_paths``
DEFAULT_PERSIST_EXCLUDE: tuple[str, ...] = ("__pycache__/*", "*/__pycache__/*")


class FileMethods:
    """Files of the workspace; mixed into :class:`~alphora.sandbox.Sandbox`, which provides the
    attributes and helpers declared below."""

    sandbox_id: str
    backend: Backend

    if TYPE_CHECKING:  # provided by Sandbox

        @property
        def workspace_path(self) -> Path: ...
        def _require_running(self) -> None: ...
        def _touch(self) -> None: ...
        def _audit(self, action: str, **details: Any) -> None: ...
        async def _check(self, kind: Any, content: str = "", path: str = "", size: int = 0) -> None: ...

    # -- files -----------------------------------------------------------------------------------

    def _path(self, path: str | os.PathLike[str]) -> str:
        aliases = [str(self.workspace_path), *self.backend.workspace_aliases]
        return pathguard.normalize(path, workspace_aliases=aliases)

    async def read_file(self, path: str, encoding: str = "utf-8") -> str:
        """Read a text file of the workspace (undecodable bytes become U+FFFD)."""
        return (await self.read_file_bytes(path)).decode(encoding, "replace")

    async def read_file_bytes(self, path: str) -> bytes:
        self._require_running()
        rel = self._path(path)
        await self._check("read", path=rel)
        self._touch()
        return await self.backend.read_bytes(rel)

    async def write_file(self, path: str, content: str, encoding: str = "utf-8") -> FileInfo:
        """Write a text file (atomically; parent directories are created)."""
        return await self.write_file_bytes(path, content.encode(encoding))

    async def write_file_bytes(self, path: str, content: bytes) -> FileInfo:
        self._require_running()
        if not isinstance(content, bytes | bytearray | memoryview):
            raise TypeError(f"content must be bytes, got {type(content).__name__}")
        rel = self._path(path)
        if not rel:
            raise FileSystemError("cannot write to the workspace root", path=str(path), sandbox_id=self.sandbox_id)
        await self._check("write", path=rel, size=len(content))
        self._touch()
        self._audit("write_file", path=rel, size=len(content))
        await self.backend.write_bytes(rel, bytes(content))
        return await self._stat_after(rel)

    async def _stat_after(self, rel: str) -> FileInfo:
        """FileInfo of a path just written; code running in the sandbox may have removed or swapped it."""
        info = await self.backend.stat(rel)
        if info is None:
            raise FileSystemError(
                f"{rel} was removed by code running in the sandbox right after it was written",
                path=rel,
                sandbox_id=self.sandbox_id,
            )
        return info

    async def save_file(self, path: str, content: str | bytes) -> FileInfo:
        """Write text or bytes and return the new file's :class:`FileInfo`."""
        if isinstance(content, str):
            return await self.write_file(path, content)
        return await self.write_file_bytes(path, content)

    async def delete_file(self, path: str) -> bool:
        """Delete a file or directory tree; False when nothing was there."""
        self._require_running()
        rel = self._path(path)
        if not rel:
            raise FileSystemError("refusing to delete the workspace root", path=str(path), sandbox_id=self.sandbox_id)
        await self._check("delete", path=rel)
        self._touch()
        self._audit("delete_file", path=rel)
        return await self.backend.remove(rel)

    async def file_exists(self, path: str) -> bool:
        self._require_running()
        return await self.backend.stat(self._path(path)) is not None

    async def get_file_info(self, path: str) -> FileInfo:
        self._require_running()
        info = await self.backend.stat(self._path(path))
        if info is None:
            raise FileNotFoundError(
                f"no such file in the workspace: {path}", path=str(path), sandbox_id=self.sandbox_id
            )
        return info

    async def copy_file(self, source: str, dest: str) -> FileInfo:
        self._require_running()
        src, dst = self._path(source), self._path(dest)
        if not dst:
            raise FileSystemError("destination is the workspace root", path=str(dest), sandbox_id=self.sandbox_id)
        info = await self.backend.stat(src)
        await self._check("write", path=dst, size=info.size if info else 0)
        self._touch()
        await self.backend.copy(src, dst)
        return await self._stat_after(dst)

    async def move_file(self, source: str, dest: str) -> FileInfo:
        self._require_running()
        src, dst = self._path(source), self._path(dest)
        if not src or not dst:
            raise FileSystemError("cannot move the workspace root", path=str(source), sandbox_id=self.sandbox_id)
        await self._check("delete", path=src)
        await self._check("write", path=dst)
        self._touch()
        await self.backend.move(src, dst)
        return await self._stat_after(dst)

    async def download_file(self, path: str) -> bytes:
        """The file's bytes (to hand to a user or an object store)."""
        return await self.read_file_bytes(path)

    async def make_dir(self, path: str) -> None:
        self._require_running()
        rel = self._path(path)
        await self._check("write", path=rel)
        await self.backend.mkdir(rel)

    async def list_files(self, path: str = "", recursive: bool = False, pattern: str | None = None) -> list[FileInfo]:
        """Files under ``path`` (workspace root by default), optionally recursive and filtered by a
        glob ``pattern`` matched against the file name (``"*.py"``). The backend's own entries
        (its ``internal_paths``, e.g. the local backend's ``.tmp`` and ``.venv``) are left out unless
        ``path`` names them."""
        self._require_running()
        rel = self._path(path)
        self._touch()
        entries = await self.backend.list_dir(rel, recursive)
        hidden = [p for p in self.backend.internal_paths if not (rel == p or rel.startswith(p + "/"))]
        if hidden:
            entries = [e for e in entries if not any(e.path == h or e.path.startswith(h + "/") for h in hidden)]
        if pattern:
            entries = [e for e in entries if fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.path, pattern)]
        return sorted(entries, key=lambda e: e.path)

    # -- workspace persistence ------------------------------------------------------------------

    async def save_workspace(
        self, storage: Storage, prefix: str | None = None, *, exclude: Sequence[str] | None = None
    ) -> list[str]:
        """Mirror the workspace into ``storage`` under ``prefix`` (default ``sandboxes/<id>``) and
        return the saved paths. Planted symlinks are skipped; ``exclude`` globs are skipped (by default
        the backend's ``internal_paths``, e.g. the local backends' ``.venv``: rebuild it with
        install_requirements, and ``__pycache__``)."""
        from .storage.persist import save_workspace

        self._require_running()
        if exclude is None:
            internal = self.backend.internal_paths
            exclude = (*internal, *(f"{p}/*" for p in internal), *DEFAULT_PERSIST_EXCLUDE)
        saved = await save_workspace(self, storage, self._persist_prefix(prefix), exclude=exclude)
        self._audit("save_workspace", prefix=self._persist_prefix(prefix), files=len(saved))
        return saved

    async def restore_workspace(self, storage: Storage, prefix: str | None = None) -> list[str]:
        """Write what was saved under ``prefix`` (by this or another process or host) back into the
        workspace; StorageNotFoundError when nothing was saved there."""
        from .storage.persist import restore_workspace

        self._require_running()
        restored = await restore_workspace(self, storage, self._persist_prefix(prefix))
        self._audit("restore_workspace", prefix=self._persist_prefix(prefix), files=len(restored))
        return restored

    def _persist_prefix(self, prefix: str | None) -> str:
        return f"sandboxes/{self.sandbox_id}" if prefix is None else prefix
