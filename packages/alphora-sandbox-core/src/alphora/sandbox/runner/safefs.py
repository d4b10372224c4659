"""Race-safe file operations inside a workspace directory (stdlib only, no alphora imports).

Every function takes ``root`` (an open directory fd, or a path that is opened as the root) and
``rel``, a workspace-relative POSIX path (``""`` or ``"."`` is the root itself). Each path
component is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the previous one's fd, so a
symlink planted anywhere in the path (even one swapped in concurrently) cannot redirect the
operation outside the workspace.

Public API::

    read(root, rel, max_size=None) -> bytes            # regular files only
    write(root, rel, data, max_size=None) -> None      # atomic: temp file in the same dir + rename
    stat(root, rel) -> dict | None                     # None when nothing is there
    listdir(root, rel="", recursive=False) -> list[dict]
    remove(root, rel) -> bool                          # files and trees; False if nothing was there
    copy(root, src, dst) -> None                       # files and trees
    move(root, src, dst) -> None
    mkdir(root, rel) -> None                           # with parents; existing dir is fine
    disk_usage(root) -> int                            # bytes of regular files under root

Entry dicts have ``name, path, size, is_dir, is_symlink, mtime, mode``.

Errors:

* :class:`PathEscape` (a ``ValueError``, ``.path`` names the offending path): NUL byte,
  absolute path, ``..`` component, a symlink in the path, a regular file with more than one
  hard link (it may be linked to a file outside the workspace), or a non-regular file (FIFO,
  device) where a regular file is needed.
* ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``FileExistsError``.
* :class:`TooLarge` (an ``OSError`` with ``errno.EFBIG``) when ``max_size`` is exceeded.

Symlinks are never followed. ``remove`` deletes a symlink itself (that cannot touch its
target); every other operation refuses a symlink anywhere in its path.
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from typing import Any, Union

__all__ = [
    "PathEscape",
    "TooLarge",
    "copy",
    "disk_usage",
    "listdir",
    "mkdir",
    "move",
    "read",
    "remove",
    "split",
    "stat",
    "write",
]

Root = Union[int, str, "os.PathLike[str]"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CHUNK = 1 << 20


class PathEscape(ValueError):
    """The path could reach outside the workspace; ``.path`` is the path as given."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason}: {path!r}")
        self.path = path
        self.reason = reason


class TooLarge(OSError):
    """The data is larger than the allowed maximum."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"file too large ({size} > {limit} bytes)", path)


def split(rel: str) -> list[str]:
    """Check ``rel`` lexically and return its components (``[]`` for the root)."""
    if not isinstance(rel, str):
        raise TypeError(f"path must be str, not {type(rel).__name__}")
    if "\x00" in rel:
        raise PathEscape(rel, "NUL byte in path")
    if rel.startswith("/"):
        raise PathEscape(rel, "absolute path")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathEscape(rel, "'..' in path")
    return parts


def _root_fd(root: Root) -> tuple[int, bool]:
    if isinstance(root, int):
        return root, False
    return os.open(os.fspath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), True


def _is_link(name: str, dfd: int) -> bool:
    try:
        return _stat.S_ISLNK(os.lstat(name, dir_fd=dfd).st_mode)
    except OSError:
        return False


def _open_dir(rootfd: int, parts: list[str], rel: str, create: bool = False) -> int:
    """Open the directory ``parts`` below ``rootfd`` without following any symlink."""
    fd = os.dup(rootfd)
    try:
        for part in parts:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such directory", rel) from None
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    if _is_link(part, fd):
                        raise PathEscape(rel, "symlink in path") from None
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", rel) from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


class _Parent:
    """Context manager: the parent directory fd of ``rel`` and its last component."""

    def __init__(self, root: Root, rel: str, create: bool = False) -> None:
        parts = split(rel)
        if not parts:
            raise PathEscape(rel, "the workspace root itself")
        self.name = parts[-1]
        self._parts = parts[:-1]
        self._root = root
        self._rel = rel
        self._create = create
        self.fd = -1

    def __enter__(self) -> _Parent:
        rfd, owned = _root_fd(self._root)
        try:
            self.fd = _open_dir(rfd, self._parts, self._rel, self._create)
        finally:
            if owned:
                os.close(rfd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_file(dfd: int, name: str, rel: str) -> int:
    """Open a regular, singly-linked file for reading (never a symlink, FIFO or device)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file", rel) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise PathEscape(rel, "symlink in path") from None
        raise
    try:
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", rel)
        if not _stat.S_ISREG(st.st_mode):
            raise PathEscape(rel, "not a regular file")
        if st.st_nlink > 1:
            raise PathEscape(rel, "file has more than one hard link")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read(root: Root, rel: str, max_size: int | None = None) -> bytes:
    """The content of a regular file."""
    with _Parent(root, rel) as p:
        fd = _open_file(p.fd, p.name, rel)
    try:
        size = os.fstat(fd).st_size
        if max_size is not None and size > max_size:
            raise TooLarge(rel, size, max_size)
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if max_size is not None and total > max_size:
                raise TooLarge(rel, total, max_size)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:_CHUNK])
        view = view[n:]


def _atomic_write(dfd: int, name: str, data: bytes, rel: str, mode: int = 0o644) -> None:
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        st = None
    if st is not None:
        if _stat.S_ISLNK(st.st_mode):
            raise PathEscape(rel, "symlink in path")
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", rel)
    tmp = f".{name[:200]}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise


def write(root: Root, rel: str, data: bytes, max_size: int | None = None) -> None:
    """Write ``data`` atomically, creating parent directories."""
    if max_size is not None and len(data) > max_size:
        raise TooLarge(rel, len(data), max_size)
    with _Parent(root, rel, create=True) as p:
        _atomic_write(p.fd, p.name, bytes(data), rel)


def _entry(st: os.stat_result, name: str, path: str) -> dict[str, Any]:
    is_dir = _stat.S_ISDIR(st.st_mode)
    return {
        "name": name,
        "path": path,
        "size": 0 if is_dir else st.st_size,
        "is_dir": is_dir,
        "is_symlink": _stat.S_ISLNK(st.st_mode),
        "mtime": st.st_mtime,
        "mode": _stat.S_IMODE(st.st_mode),
    }


def stat(root: Root, rel: str) -> dict[str, Any] | None:
    """An entry dict for ``rel`` (the root itself for ``""``), or None if nothing is there."""
    parts = split(rel)
    if not parts:
        rfd, owned = _root_fd(root)
        try:
            return _entry(os.fstat(rfd), "", "")
        finally:
            if owned:
                os.close(rfd)
    try:
        with _Parent(root, rel) as p:
            try:
                st = os.lstat(p.name, dir_fd=p.fd)
            except FileNotFoundError:
                return None
    except (FileNotFoundError, NotADirectoryError):
        return None
    if _stat.S_ISLNK(st.st_mode):
        raise PathEscape(rel, "symlink in path")
    return _entry(st, parts[-1], "/".join(parts))


def _scan(dfd: int, prefix: str, recursive: bool, out: list[dict[str, Any]]) -> None:
    with os.scandir(dfd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        path = f"{prefix}/{e.name}" if prefix else e.name
        out.append(_entry(st, e.name, path))
        if recursive and _stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(e.name, _DIR_FLAGS, dir_fd=dfd)
            except OSError:
                continue  # replaced by a symlink or removed meanwhile: skip it
            try:
                _scan(sub, path, recursive, out)
            finally:
                os.close(sub)


def listdir(root: Root, rel: str = "", recursive: bool = False) -> list[dict[str, Any]]:
    """Entries of a directory (sorted by name; recursive walks depth-first, never into symlinks)."""
    parts = split(rel)
    rfd, owned = _root_fd(root)
    try:
        dfd = _open_dir(rfd, parts, rel)
    finally:
        if owned:
            os.close(rfd)
    try:
        out: list[dict[str, Any]] = []
        _scan(dfd, "/".join(parts), recursive, out)
        return out
    finally:
        os.close(dfd)


def _rmtree_at(dfd: int, name: str) -> None:
    try:
        sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            os.unlink(name, dir_fd=dfd)
            return
        raise
    try:
        with os.scandir(sub) as it:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in names:
            if is_dir:
                _rmtree_at(sub, child)
            else:
                try:
                    os.unlink(child, dir_fd=sub)
                except IsADirectoryError:
                    _rmtree_at(sub, child)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dfd)


def remove(root: Root, rel: str) -> bool:
    """Delete a file, a symlink (not its target) or a directory tree. False if nothing was there."""
    try:
        with _Parent(root, rel) as p:
            try:
                st = os.lstat(p.name, dir_fd=p.fd)
            except FileNotFoundError:
                return False
            if _stat.S_ISDIR(st.st_mode):
                _rmtree_at(p.fd, p.name)
            else:
                os.unlink(p.name, dir_fd=p.fd)
            return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def _copy_file(sdfd: int, sname: str, ddfd: int, dname: str, src: str, dst: str) -> None:
    fd = _open_file(sdfd, sname, src)
    try:
        mode = _stat.S_IMODE(os.fstat(fd).st_mode)
        chunks = []
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    _atomic_write(ddfd, dname, b"".join(chunks), dst, mode)


def _copy_tree(sdfd: int, sname: str, ddfd: int, dname: str, src: str, dst: str) -> None:
    try:
        os.mkdir(dname, 0o755, dir_fd=ddfd)
    except FileExistsError:
        if not _stat.S_ISDIR(os.lstat(dname, dir_fd=ddfd).st_mode):
            raise
    s = _open_dir(sdfd, [sname], src)
    try:
        d = _open_dir(ddfd, [dname], dst)
        try:
            with os.scandir(s) as it:
                entries = sorted((e.name, e.stat(follow_symlinks=False).st_mode) for e in it)
            for name, mode in entries:
                if _stat.S_ISLNK(mode):
                    raise PathEscape(f"{src}/{name}", "symlink in path")
                if _stat.S_ISDIR(mode):
                    _copy_tree(s, name, d, name, f"{src}/{name}", f"{dst}/{name}")
                else:
                    _copy_file(s, name, d, name, f"{src}/{name}", f"{dst}/{name}")
        finally:
            os.close(d)
    finally:
        os.close(s)


def _lstat_source(parent: _Parent, src: str) -> os.stat_result:
    """lstat the source of a copy or move: missing is ENOENT, a symlink is refused."""
    try:
        st = os.lstat(parent.name, dir_fd=parent.fd)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file", src) from None
    if _stat.S_ISLNK(st.st_mode):
        raise PathEscape(src, "symlink in path")
    return st


def copy(root: Root, src: str, dst: str) -> None:
    """Copy a file or a directory tree (refuses symlinks inside it)."""
    with _Parent(root, src) as s, _Parent(root, dst, create=True) as d:
        st = _lstat_source(s, src)
        if _stat.S_ISDIR(st.st_mode):
            if dst.strip("/") == src.strip("/") or (dst.strip("/") + "/").startswith(src.strip("/") + "/"):
                raise OSError(errno.EINVAL, "cannot copy a directory into itself", dst)
            _copy_tree(s.fd, s.name, d.fd, d.name, src, dst)
        else:
            _copy_file(s.fd, s.name, d.fd, d.name, src, dst)


def move(root: Root, src: str, dst: str) -> None:
    """Rename a file or directory (creating the destination's parents)."""
    with _Parent(root, src) as s, _Parent(root, dst, create=True) as d:
        _lstat_source(s, src)
        try:
            dst_st = os.lstat(d.name, dir_fd=d.fd)
        except FileNotFoundError:
            dst_st = None
        if dst_st is not None and _stat.S_ISLNK(dst_st.st_mode):
            raise PathEscape(dst, "symlink in path")
        os.rename(s.name, d.name, src_dir_fd=s.fd, dst_dir_fd=d.fd)


def mkdir(root: Root, rel: str) -> None:
    """Create a directory and its parents; an existing directory is fine."""
    parts = split(rel)
    rfd, owned = _root_fd(root)
    try:
        os.close(_open_dir(rfd, parts, rel, create=True))
    except NotADirectoryError:
        raise FileExistsError(errno.EEXIST, "a file is in the way", rel) from None
    finally:
        if owned:
            os.close(rfd)


def disk_usage(root: Root) -> int:
    """Total size in bytes of the regular files below ``root`` (symlinks not followed)."""
    rfd, owned = _root_fd(root)
    total = 0
    try:
        stack = [os.dup(rfd)]
        while stack:
            dfd = stack.pop()
            try:
                with os.scandir(dfd) as it:
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if _stat.S_ISDIR(st.st_mode):
                            try:
                                stack.append(os.open(e.name, _DIR_FLAGS, dir_fd=dfd))
                            except OSError:
                                pass
                        elif _stat.S_ISREG(st.st_mode):
                            total += st.st_blocks * 512 if st.st_blocks else st.st_size
            finally:
                os.close(dfd)
    finally:
        if owned:
            os.close(rfd)
    return total
