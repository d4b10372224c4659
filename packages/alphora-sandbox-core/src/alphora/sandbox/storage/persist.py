"""Persist a sandbox workspace to a storage and restore it (same keys, another process or host).

Both go through the Sandbox file API, so the path guard applies to everything: a symlink that
sandbox code planted is skipped on save (never followed), and a hostile key in the storage cannot
write outside the workspace on restore.

Deep trees: the file API names paths up to 4095 bytes (see docs/limits-and-policy.md); sandbox
code can build deeper trees. Saving one fails with a :class:`FileSystemError` naming the first path
over the limit, before anything is stored, unless ``exclude`` skips the folder it lives in (the
walk then goes folder by folder, with an explicit stack, and never enters excluded folders).
Restoring checks every stored key against the same rule before it writes anything.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import FileSystemError, PathTraversalError, StorageNotFoundError
from ..pathguard import normalize
from ..runner.safefs import shorten
from .base import Storage, validate_key

__all__ = ["restore_workspace", "save_workspace", "workspace_files"]

log = logging.getLogger(__name__)


class _FileAPI(Protocol):
    sandbox_id: str

    async def list_files(self, path: str = ..., recursive: bool = ..., pattern: str | None = ...) -> Any: ...
    async def read_file_bytes(self, path: str) -> bytes: ...
    async def write_file_bytes(self, path: str, content: bytes) -> Any: ...


def _prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return validate_key(prefix) + "/" if prefix else ""


def _excluded(path: str, exclude: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(path, pat) or path == pat or path.startswith(pat.rstrip("/") + "/") for pat in exclude
    )


async def workspace_files(sandbox: _FileAPI, exclude: Sequence[str]) -> list[Any]:
    """The workspace's non-directory entries outside ``exclude``: one recursive listing; if that
    fails (a tree deeper than the path limit), a folder-by-folder walk that skips excluded
    folders, so excluding a too-deep folder is enough to save the rest."""
    try:
        listing = await sandbox.list_files("", recursive=True)
    except FileSystemError as exc:
        if isinstance(exc, PathTraversalError) or not exclude:
            raise _cannot_save(sandbox, exc) from exc
        listing = None
    if listing is not None:
        return [i for i in listing if not i.is_directory and not _excluded(i.path, exclude)]
    files: list[Any] = []
    stack = [""]
    while stack:
        folder = stack.pop()
        try:
            entries = await sandbox.list_files(folder)
        except FileSystemError as exc:
            raise _cannot_save(sandbox, exc) from exc
        for info in entries:
            if _excluded(info.path, exclude):
                continue
            if info.is_directory:
                stack.append(info.path)
            else:
                files.append(info)
    return files


def _cannot_save(sandbox: _FileAPI, exc: FileSystemError) -> FileSystemError:
    return FileSystemError(
        f"save_workspace stored nothing: {exc.message}; delete or move that tree, or skip it with exclude=[...]",
        path=exc.path,
        sandbox_id=sandbox.sandbox_id,
    )


async def save_workspace(sandbox: _FileAPI, storage: Storage, prefix: str, *, exclude: Sequence[str] = ()) -> list[str]:
    """Copy every regular file of the workspace to ``storage`` under ``prefix/``; return their paths.

    Paths matching ``exclude`` (glob or directory prefix, e.g. ``".venv"``) are skipped, and so are
    symlinks (the file API refuses to follow them). Keys under the prefix whose file no longer
    exists are deleted afterwards, so the stored copy mirrors the workspace.
    """
    base = _prefix(prefix)
    stored: list[str] = []
    for info in await workspace_files(sandbox, exclude):
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
    for key in keys:  # every key must be a path the workspace can hold, before anything is written
        try:
            normalize(key[len(base) :])
        except FileSystemError as exc:
            raise FileSystemError(
                f"restore_workspace wrote nothing: the stored key {shorten(key)!r} is not a "
                f"workspace path: {exc.message}",
                path=shorten(key),
                sandbox_id=sandbox.sandbox_id,
            ) from exc
    written: list[str] = []
    for key in keys:
        rel = key[len(base) :]
        if rel:
            await sandbox.write_file_bytes(rel, await storage.get(key))
            written.append(rel)
    return sorted(written)
