"""The layer below :mod:`.safefs`: path limits, checked directory opening, and the iterative walk
and removal of directory trees (stdlib only, no alphora imports; shipped with the runner).

Every walk here holds one directory descriptor at a time whatever the depth: down by name with
``O_NOFOLLOW`` (checked by :func:`_open_subdir`, since gVisor follows a symlink despite it), up
through ``..`` checked against the device and inode it came from (:func:`_up`; a directory moved
away meanwhile stops the walk with ``ESTALE``). :func:`_walk` yields the entries below a directory
(``listdir(recursive=True)``, ``copy`` and ``disk_usage`` in :mod:`.safefs` use it);
:func:`_rmtree_at` removes a tree of any depth (``safefs.remove``) and :func:`rmtree` a host
directory (destroy's workspace). :mod:`.safefs` re-exports the public names (``PathEscape``,
``MAX_PATH_BYTES``, ``MAX_NAME_BYTES``, ``shorten``, ``length_problem``, ``rmtree``); its docstring
describes the API and the limits.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "PathEscape", "length_problem", "rmtree", "shorten"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_subdir(name: str, dfd: int) -> int:
    """``os.open(name, _DIR_FLAGS, dir_fd=dfd)``, checked: gVisor (runsc, at least Debian's 2022
    release) follows a symlink to a directory despite ``O_NOFOLLOW | O_DIRECTORY``, so the entry
    must be that very directory (same device and inode), else ELOOP as Linux would say."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        st, entry = os.fstat(fd), os.lstat(name, dir_fd=dfd)
    except BaseException:
        os.close(fd)
        raise
    if not _stat.S_ISDIR(entry.st_mode) or (st.st_dev, st.st_ino) != (entry.st_dev, entry.st_ino):
        os.close(fd)
        raise OSError(errno.ELOOP, "symlink in path (or the entry changed while opened)", name)
    return fd


#: the longest workspace-relative path, in bytes of UTF-8 (PATH_MAX is 4096 with the final NUL)
MAX_PATH_BYTES = 4095
#: the longest path component, in bytes (NAME_MAX)
MAX_NAME_BYTES = 255


class PathEscape(ValueError):
    """The path could reach outside the workspace; ``.path`` is the path as given."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason}: {path!r}")
        self.path = path
        self.reason = reason


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def shorten(path: str, keep: int = 48) -> str:
    """``path`` cut in the middle for messages (a path over the limit may be megabytes long)."""
    return path if len(path) <= 2 * keep + 1 else f"{path[:keep]}\u2026{path[-keep:]}"


def length_problem(rel: str) -> str | None:
    """Why the workspace-relative path ``rel`` is longer than the file API allows, or None."""
    size = _nbytes(rel)
    if size > MAX_PATH_BYTES:
        return (
            f"path too long: {size} bytes in {rel.count('/') + 1} levels, the file API's limit is "
            f"{MAX_PATH_BYTES} bytes per path (PATH_MAX)"
        )
    for part in rel.split("/"):
        if _nbytes(part) > MAX_NAME_BYTES:
            return (
                f"path component too long: {_nbytes(part)} bytes, the limit is {MAX_NAME_BYTES} bytes "
                "per file or folder name (NAME_MAX)"
            )
    return None


def _check_length(rel: str) -> None:
    problem = length_problem(rel)
    if problem is not None:
        raise OSError(errno.ENAMETOOLONG, problem, shorten(rel))


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _up(fd: int, expected: tuple[int, int], where: str) -> int:
    """The parent of directory ``fd`` (which is closed) through ``..``, checked to be the directory
    the walk came down from: if sandbox code moved ``fd``'s directory meanwhile, ``..`` is some
    other directory and the walk stops (ESTALE) instead of continuing there."""
    try:
        parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        same = _ident(os.fstat(parent)) == expected
    except BaseException:
        os.close(parent)
        raise
    if not same:
        os.close(parent)
        raise OSError(errno.ESTALE, "a directory was moved while it was being walked; try again", shorten(where))
    return parent


def _entries(dfd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of the entries of ``dfd``, sorted by name; entries gone meanwhile are left out."""
    out = []
    with os.scandir(dfd) as it:
        for e in it:
            try:
                out.append((e.name, e.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
    out.sort(key=lambda item: item[0])
    return out


_FILE, _DIR, _LEAVE = "file", "dir", "leave"
if TYPE_CHECKING:  # (not evaluated at run time: the runner may run on an older python3)
    _Step = tuple[str, str, str, os.stat_result, int]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _walk(start: int, base: str, *, strict: bool, paths: bool = True) -> Generator[_Step, None, None]:
    """Every entry below the directory ``start`` (left open), depth-first, sorted by name, holding
    one descriptor whatever the depth, never following a symlink.

    Yields ``(kind, path, name, lstat, parent_fd)``: ``_FILE`` for anything but a directory;
    ``_DIR`` for a directory, then its entries, then ``_LEAVE`` for it (``parent_fd`` is then the
    directory's parent again). ``parent_fd`` is valid only until the next step. ``path`` is
    ``base`` + the path below ``start``, checked against the length limits (ENAMETOOLONG), unless
    ``paths`` is false (then it is ``""``). A directory that cannot be entered (removed or swapped
    for a symlink meanwhile) is skipped, or raised with ``strict``."""
    cur = os.dup(start)
    try:
        # a frame: [entries, next index, (dev, ino) of the directory, its path, its (name, lstat)]
        frames: list[list[Any]] = [[_entries(cur), 0, _ident(os.fstat(cur)), base, None]]
        while frames:
            frame = frames[-1]
            if frame[1] == len(frame[0]):
                frames.pop()
                if frames:
                    fd, cur = cur, -1
                    cur = _up(fd, frames[-1][2], frame[3])
                    yield _LEAVE, frame[3], frame[4][0], frame[4][1], cur
                continue
            name, st = frame[0][frame[1]]
            frame[1] += 1
            path = ""
            if paths:
                path = _join(frame[3], name)
                _check_length(path)
            if not _stat.S_ISDIR(st.st_mode):
                yield _FILE, path, name, st, cur
                continue
            yield _DIR, path, name, st, cur
            try:
                sub = _open_subdir(name, cur)
            except OSError as exc:
                if not strict:
                    continue
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise PathEscape(shorten(path), "symlink in path") from None
                raise
            os.close(cur)
            cur = sub
            frames.append([_entries(cur), 0, _ident(os.fstat(cur)), path, (name, st)])
    finally:
        if cur >= 0:
            os.close(cur)


def _chmod_dir(dfd: int, name: str) -> None:
    """Give the owner rwx on directory ``name`` that cannot be opened (sandbox code may chmod 000
    its own directories): through an O_PATH descriptor, so a symlink swapped in is never followed."""
    o_path = getattr(os, "O_PATH", 0)
    if not o_path:
        raise PermissionError(errno.EACCES, "permission denied", name)
    pfd = os.open(name, o_path | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        os.chmod(f"/proc/self/fd/{pfd}", 0o700)
    finally:
        os.close(pfd)


def _open_for_removal(dfd: int, name: str) -> int:
    """Open directory ``name`` to empty it: made readable and writable for its owner if need be."""
    try:
        fd = _open_subdir(name, dfd)
    except PermissionError:
        _chmod_dir(dfd, name)
        fd = _open_subdir(name, dfd)
    mode = os.fstat(fd).st_mode
    if mode & 0o700 != 0o700:
        try:
            os.fchmod(fd, _stat.S_IMODE(mode) | 0o700)
        except OSError:
            pass  # not ours: the unlinks below say why
    return fd


def _clear(fd: int) -> list[str]:
    """Unlink everything in directory ``fd`` except directories; return the directories' names."""
    subdirs = []
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if is_dir:
            subdirs.append(name)
            continue
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # replaced by a directory meanwhile
            subdirs.append(name)
    return subdirs


#: how often a removal empties a directory again when files keep appearing in it
_RMDIR_RETRIES = 5


def _rmtree_at(dfd: int, name: str) -> None:
    """Remove directory ``name`` of ``dfd`` and everything below it: iterative, one descriptor
    at a time whatever the depth (up through ``..``, checked), never following a symlink."""
    try:
        cur = _open_for_removal(dfd, name)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            os.unlink(name, dir_fd=dfd)  # a symlink or file swapped in: remove that, not its target
            return
        raise
    retries = 0
    try:
        # a frame: [name in its parent, (dev, ino), subdirectories still to remove]
        frames: list[list[Any]] = [[name, _ident(os.fstat(cur)), _clear(cur)]]
        while frames:
            frame = frames[-1]
            if frame[2]:
                sub = frame[2].pop()
                try:
                    nfd = _open_for_removal(cur, sub)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    os.unlink(sub, dir_fd=cur)
                    continue
                os.close(cur)
                cur = nfd
                frames.append([sub, _ident(os.fstat(cur)), _clear(cur)])
                continue
            frames.pop()
            fd, cur = cur, -1
            if frames:
                cur = _up(fd, frames[-1][1], frame[0])
                parent = cur
            else:
                os.close(fd)
                parent = dfd
            try:
                os.rmdir(frame[0], dir_fd=parent)
            except FileNotFoundError:
                pass
            except OSError as exc:
                retries += 1
                if exc.errno != errno.ENOTEMPTY or retries > _RMDIR_RETRIES:
                    raise
                # something was created in it meanwhile: empty it again
                if frames:
                    frames[-1][2].append(frame[0])
                else:
                    cur = _open_for_removal(dfd, frame[0])
                    frames.append([frame[0], _ident(os.fstat(cur)), _clear(cur)])
    finally:
        if cur >= 0:
            os.close(cur)


def rmtree(path: str | os.PathLike[str]) -> bool:
    """Remove the host directory ``path`` and everything below it, whatever its depth (destroy
    removes a workspace with this). A symlink at ``path`` is removed, not followed. Directories
    sandbox code made unreadable are made readable first. False if nothing was there."""
    full = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(full.rstrip("/"))
    if not name:
        raise OSError(errno.EINVAL, "refusing to remove the root directory", full)
    try:
        pfd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        try:
            st = os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return False
        if _stat.S_ISDIR(st.st_mode):
            _rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        return True
    finally:
        os.close(pfd)
