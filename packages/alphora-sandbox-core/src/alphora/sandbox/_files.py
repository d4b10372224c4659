"""The facade's file API and workspace persistence (:class:`FileMethods`, a part of
:class:`~alphora.sandbox.Sandbox`): every path goes through the path guard and the policy checks
before the backend's file primitives see it."""

from __future__ import annotations

import asyncio
import builtins
import errno
import fnmatch
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias

from . import pathguard
from .backend import FILE_CHUNK
from .errors import FileNotFoundError, FileSystemError
from .runner.protocol import CHUNK_MAX
from .types import FileInfo, SecurityPolicy

if TYPE_CHECKING:
    from .backend import Backend
    from .storage.base import Storage

__all__ = ["DEFAULT_PERSIST_EXCLUDE", "FILE_CHUNK", "ByteSource", "FileMethods"]

#: what :meth:`FileMethods.write_file_stream` takes: bytes, an async or sync iterable of bytes, or a
#: binary file object (anything with ``read(n)`` returning bytes)
ByteSource: TypeAlias = bytes | bytearray | memoryview | AsyncIterable[bytes] | Iterable[bytes] | IO[bytes]

#: workspace paths save_workspace skips by default, besides the backend's ``internal_paths``
DEFAULT_PERSIST_EXCLUDE: tuple[str, ...] = ("__pycache__/*", "*/__pycache__/*")


class FileMethods:
    """Files of the workspace; mixed into :class:`~alphora.sandbox.Sandbox`, which provides the
    attributes and helpers declared below."""

    sandbox_id: str
    backend: Backend
    security_policy: SecurityPolicy

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

    async def download_to_file(self, path: str, local_path: str | os.PathLike[str]) -> Path:
        """Stream a workspace file into the host file ``local_path`` (memory stays bounded whatever
        its size; a failed download leaves no partial file) and return its path."""
        target = Path(local_path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
        try:
            try:
                out = await asyncio.to_thread(open, tmp, "xb")
            except builtins.FileNotFoundError:  # the host's; else the error names the hidden temp file
                raise builtins.FileNotFoundError(
                    errno.ENOENT, f"cannot download to {target}: its directory {target.parent} does not exist"
                ) from None
            with out:
                async for part in self.read_file_stream(path):
                    await asyncio.to_thread(out.write, part)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    async def upload_file(self, local_path: str | os.PathLike[str], path: str | None = None) -> FileInfo:
        """Stream a host file into the workspace (at ``path``, by default its name at the workspace
        root) with bounded memory; returns the new file's :class:`FileInfo`."""
        source = Path(local_path)
        f = await asyncio.to_thread(open, source, "rb")
        with f:
            return await self.write_file_stream(source.name if path is None else path, f)

    async def read_file_stream(self, path: str, chunk_size: int = FILE_CHUNK) -> AsyncIterator[bytes]:
        """The file's bytes in pieces of at most ``chunk_size`` bytes, read as they are consumed:
        memory stays bounded (a few pieces) whatever the file's size. The path and policy checks of
        :meth:`read_file_bytes` apply; their errors are raised when the iteration starts.
        Leaving the loop early stops the transfer."""
        _check_chunk_size(chunk_size)
        self._require_running()
        rel = self._path(path)
        await self._check("read", path=rel)
        self._touch()
        async for part in self.backend.read_stream(rel, chunk_size):
            yield part
        self._touch()

    async def write_file_stream(self, path: str, source: ByteSource) -> FileInfo:
        """Write a file from ``source`` without holding all of it in memory: ``bytes``, an async
        iterable of bytes (an async generator …), a sync iterable of bytes, or a binary file object
        (read in pieces in a worker thread). Atomic like :meth:`write_file_bytes`: nothing is
        visible until the last byte is written, and if ``source`` fails (or the policy's
        ``max_file_size_mb`` is passed) the old file is left as it was. Returns the new file's
        :class:`FileInfo`."""
        self._require_running()
        chunks = _byte_chunks(source)
        rel = self._path(path)
        if not rel:
            raise FileSystemError("cannot write to the workspace root", path=str(path), sandbox_id=self.sandbox_id)
        known = len(source) if isinstance(source, (bytes, bytearray, memoryview)) else 0
        await self._check("write", path=rel, size=known)
        self._touch()
        total = 0
        limit = self.security_policy.max_file_size_bytes

        async def counted() -> AsyncIterator[bytes]:
            nonlocal total
            async for chunk in chunks:
                total += len(chunk)
                if total > limit:  # the size rule is the write check's: ask it with the size so far
                    await self._check("write", path=rel, size=total)
                yield chunk

        await self.backend.write_stream(rel, counted())
        self._audit("write_file", path=rel, size=total, streamed=True)
        return await self._stat_after(rel)

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


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 0 < chunk_size <= CHUNK_MAX:
        raise ValueError(f"chunk_size must be an int between 1 and {CHUNK_MAX} bytes, got {chunk_size!r}")


def _as_bytes(chunk: Any, source: Any) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(
        f"write_file_stream needs bytes from its source, but {type(source).__name__} gave "
        f"{type(chunk).__name__} (open files in binary mode; encode text)"
    )


def _byte_chunks(source: Any) -> AsyncIterator[bytes]:
    """The pieces of a :data:`ByteSource`; a TypeError now for a source of the wrong kind, and on
    the first piece that is not bytes (naming what came instead)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_iterable((source,), source)
    if hasattr(source, "__aiter__"):
        return _from_async(source)
    if callable(getattr(source, "read", None)):
        return _from_file(source)
    if isinstance(source, str):
        raise TypeError("write_file_stream takes bytes, not str: use write_file for text")
    if isinstance(source, Iterable):
        return _from_iterable(source, source)
    raise TypeError(
        "write_file_stream takes bytes, an (async) iterable of bytes or a binary file object, "
        f"not {type(source).__name__}"
    )


async def _from_async(source: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    async for chunk in source:
        yield _as_bytes(chunk, source)


async def _from_iterable(items: Iterable[Any], source: Any) -> AsyncIterator[bytes]:
    for chunk in items:
        yield _as_bytes(chunk, source)


async def _from_file(source: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(source.read, FILE_CHUNK)
        if chunk is None or chunk == b"":
            return
        yield _as_bytes(chunk, source)
