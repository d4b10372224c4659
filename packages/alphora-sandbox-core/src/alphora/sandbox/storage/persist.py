"""Persist a sandbox workspace to a storage and restore it (same keys, another process or host).

Both go through the Sandbox file API, so the path guard applies to everything restored: a
hostile key in the storage cannot write outside the workspace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .base import Storage, validate_key

if TYPE_CHECKING:
    from ..types import FileInfo

__all__ = ["restore_workspace", "save_workspace"]


class _FileAPI(Protocol):
    async def list_files(self, path: str = ..., recursive: bool = ..., pattern: str | None = ...) -> Any: ...
    async def read_file_bytes(self, path: str) -> bytes: ...
    async def write_file_bytes(self, path: str, content: bytes) -> Any: ...


def _prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return validate_key(prefix) + "/" if prefix else ""


async def save_workspace(sandbox: _FileAPI, storage: Storage, prefix: str) -> list[str]:
    """Copy every file of the sandbox workspace to ``storage`` under ``prefix/``.

    Keys under the prefix that no longer exist in the workspace are removed, so the stored copy
    mirrors the workspace. Returns the stored keys.
    """
    base = _prefix(prefix)
    files: list[FileInfo] = list(await sandbox.list_files("", recursive=True))
    stored: list[str] = []
    for info in files:
        if info.is_directory:
            continue
        data = await sandbox.read_file_bytes(info.path)
        stored.append(await storage.put(base + info.path, data))
    keep = set(stored)
    for key in await storage.list(base):
        if key not in keep:
            await storage.delete(key)
    return sorted(stored)


async def restore_workspace(sandbox: _FileAPI, storage: Storage, prefix: str) -> list[str]:
    """Write every object under ``prefix/`` into the sandbox workspace; returns the paths written."""
    base = _prefix(prefix)
    written: list[str] = []
    for key in await storage.list(base):
        rel = key[len(base):]
        if not rel:
            continue
        await sandbox.write_file_bytes(rel, await storage.get(key))
        written.append(rel)
    return sorted(written)
