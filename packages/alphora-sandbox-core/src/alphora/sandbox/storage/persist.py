"""Persist a sandbox workspace to a storage and restore it (same keys, another process or host).

Both go through the Sandbox file API, so the path guard applies to everything: a symlink that
sandbox code planted is skipped on save (never followed), and a hostile key in the storage cannot
write outside the workspace on restore.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import PathTraversalError, StorageNotFoundError
from .base import Storage, validate_key

__all__ = ["restore_workspace", "save_workspace"]

log = logging.getLogger(__name__)


class _FileAPI(Protocol):
    async def list_files(self, path: str = ..., recursive: bool = ..., pattern: str | None = ...) -> Any: ...
    async def read_file_bytes(self, path: str) -> bytes: ...
    async def write_file_bytes(self, path: str, content: bytes) -> Any: ...


def _prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return validate_key(prefix) + "/" if prefix else ""


def _excluded(path: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pat) or path == pat or path.startswith(pat.rstrip("/") + "/")
               for pat in exclude)


async def save_workspace(sandbox: _FileAPI, storage: Storage, prefix: str, *,
                         exclude: Sequence[str] = ()) -> list[str]:
    """Copy every regular file of the workspace to ``storage`` under ``prefix/``; return their paths.

    Paths matching ``exclude`` (glob or directory prefix, e.g. ``".venv"``) are skipped, and so are
    symlinks (the file API refuses to follow them). Keys under the prefix whose file no longer
    exists are deleted afterwards, so the stored copy mirrors the workspace.
    """
    base = _prefix(prefix)
    stored: list[str] = []
    for info in await sandbox.list_files("", recursive=True):
        if info.is_directory or _excluded(info.path, exclude):
            continue
        try:
            data = await sandbox.read_file_bytes(info.path)
        except PathTraversalError:
            log.warning("save_workspace: skipping %r (a link out of the workspace)", info.path)
            continue
        await storage.put(base + info.path, data)
        stored.append(info.path)
    keep = {base + p for p in stored}
    for key in await storage.list(base):
        if key not in keep:
            await storage.delete(key)
    return sorted(stored)


async def restore_workspace(sandbox: _FileAPI, storage: Storage, prefix: str) -> list[str]:
    """Write every object under ``prefix/`` into the workspace; return the paths written.

    StorageNotFoundError when nothing is stored under the prefix.
    """
    base = _prefix(prefix)
    keys = await storage.list(base)
    if not keys:
        raise StorageNotFoundError(f"no workspace saved under {prefix!r}", key=prefix)
    written: list[str] = []
    for key in keys:
        rel = key[len(base):]
        if rel:
            await sandbox.write_file_bytes(rel, await storage.get(key))
            written.append(rel)
    return sorted(written)
