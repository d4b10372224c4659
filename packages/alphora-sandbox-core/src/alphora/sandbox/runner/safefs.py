"""Race-safe file operations inside a workspace directory (stdlib only, no alphora imports).

Every function takes ``root`` (an open directory fd, or a path that is opened as the root) and
``rel``, a workspace-relative POSIX path (``""`` or ``"."`` is the root itself). Each path
component is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the previous one's fd, so a
symlink planted anywhere in the path (even one swapped in concurrently) cannot redirect the
operation outside the workspace.

Public API::

    read(root, rel, max_size=None) -> bytes            # regular files only
    open_read(root, rel) -> int                        # a blocking fd of the file, for chunked reads
    write(root, rel, data, max_size=None) -> None      # atomic: temp file in the same dir + rename
    Writer(root, rel, max_size=None)                   # the same, fed in chunks: write(), commit(), abort()
    stat(root, rel) -> dict | None                     # None when nothing is there
    listdir(root, rel="", recursive=False) -> list[dict]
    remove(root, rel) -> bool                          # files and trees; False if nothing was there
    copy(root, src, dst) -> None                       # files and trees
    move(root, src, dst) -> None
    mkdir(root, rel) -> None                           # with parents; existing dir is fine
    disk_usage(root) -> int                            # bytes of regular files under root
    rmtree(path) -> bool                               # a host directory tree (destroy's workspace)
    length_problem(rel) -> str | None                  # why a path is over the limits below
    shorten(path) -> str                               # a path cut in the middle, for messages

Entry dicts have ``name, path, size, is_dir, is_symlink, mtime, mode``.

Limits: a path is at most :data:`MAX_PATH_BYTES` (4095, PATH_MAX less its NUL) bytes of UTF-8 and
each component at most :data:`MAX_NAME_BYTES` (255, NAME_MAX); longer paths are refused
(``OSError`` ``ENAMETOOLONG``) before anything is touched. So the file API names at most 2048
levels. Sandbox code can still build deeper trees (by ``chdir``-ing down); every walk here is
iterative and holds one directory descriptor at a time whatever the depth (down by name with
``O_NOFOLLOW``, up through ``..`` checked against the device and inode it came from), so:
``remove``/``rmtree`` delete trees of any depth; ``listdir(recursive=True)``, ``copy`` and
``disk_usage`` walk them, and the first two raise ``ENAMETOOLONG`` naming the first path over the
limit (``copy`` before it writes anything). A directory moved away while a walk is inside it stops
the walk with ``ESTALE`` rather than continuing somewhere else.

Errors:

* :class:`PathEscape` (a ``ValueError``, ``.path`` names the offending path): NUL byte,
  absolute path, ``..`` component, a symlink in the path, a regular file with more than one
  hard link (it may be linked to a file outside the workspace), or a non-regular file (FIFO,
  device) where a regular file is needed.
* ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``FileExistsError``.
* :class:`TooLarge` (an ``OSError`` with ``errno.EFBIG``) when ``max_size`` is exceeded.
* ``OSError`` ``ENAMETOOLONG`` for a path over the limits, ``ESTALE`` for a walk whose directory
  was moved away (the message says which; the path in it is cut in the middle by :func:`shorten`).

Symlinks are never followed. ``remove`` deletes a symlink itself (that cannot touch its
target); every other operation refuses a symlink anywhere in its path.

The limits, :class:`PathEscape`, the iterative walk and the tree removal (``rmtree``) live in
:mod:`.fswalk`, shipped beside this module; they are re-exported here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as _stat
from typing import Any, Union

from .fswalk import (
    _DIR,
    _FILE,
    _LEAVE,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    PathEscape,
    _check_length,
    _entries,
    _ident,
    _join,
    _open_subdir,
    _rmtree_at,
    _up,
    _walk,
    length_problem,
    rmtree,
    shorten,
)

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "PathEscape",
    "TooLarge",
    "Writer",
    "copy",
    "disk_usage",
    "length_problem",
    "listdir",
    "mkdir",
    "move",
    "open_read",
    "read",
    "remove",
    "rmtree",
    "shorten",
    "split",
    "stat",
    "write",
]

Root = Union[int, str, "os.PathLike[str]"]

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CHUNK = 1 << 20


class TooLarge(OSError):
    """The data is larger than the allowed maximum."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"file too large ({size} > {limit} bytes)", path)


def split(rel: str) -> list[str]:
    """Check ``rel`` lexically (and against the length limits) and return its components."""
    if not isinstance(rel, str):
        raise TypeError(f"path must be str, not {type(rel).__name__}")
    if "\x00" in rel:
        raise PathEscape(shorten(rel), "NUL byte in path")
    if rel.startswith("/"):
        raise PathEscape(shorten(rel), "absolute path")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathEscape(shorten(rel), "'..' in path")
    _check_length("/".join(parts))
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
                nfd = _open_subdir(part, fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such directory", rel) from None
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = _open_subdir(part, fd)
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


def open_read(root: Root, rel: str) -> int:
    """A blocking, close-on-exec fd of a regular, singly-linked file (the caller closes it): the
    checks of :func:`read`, for a caller that reads in chunks."""
    with _Parent(root, rel) as p:
        return _open_file(p.fd, p.name, rel)


def read(root: Root, rel: str, max_size: int | None = None) -> bytes:
    """The content of a regular file."""
    fd = open_read(root, rel)
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


def _temp_file(dfd: int, name: str, rel: str, mode: int = 0o644) -> tuple[int, str]:
    """A new temp file beside ``name`` in ``dfd`` (refused if ``name`` is a symlink or a directory)."""
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
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(tmp, flags, mode, dir_fd=dfd), tmp


def _atomic_write(dfd: int, name: str, data: bytes, rel: str, mode: int = 0o644) -> None:
    fd, tmp = _temp_file(dfd, name, rel, mode)
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


class Writer:
    """An atomic write fed in chunks: the parent directories are made and a temp file beside the
    target is opened at construction (with every check of :func:`write`), :meth:`write` appends,
    :meth:`commit` renames it over the target, :meth:`abort` (or a failed write/commit) removes it.
    Holds one directory fd and one file fd until committed or aborted; never more than a chunk."""

    def __init__(self, root: Root, rel: str, max_size: int | None = None) -> None:
        self.rel = rel
        self.max_size = max_size
        self.size = 0
        self._parent = _Parent(root, rel, create=True).__enter__()
        try:
            self._fd, self._tmp = _temp_file(self._parent.fd, self._parent.name, rel)
        except BaseException:
            self._parent.__exit__()
            raise

    @property
    def open(self) -> bool:
        return self._fd >= 0

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            raise ValueError(f"write to a finished upload of {self.rel}")
        try:
            self.size += len(data)
            if self.max_size is not None and self.size > self.max_size:
                raise TooLarge(self.rel, self.size, self.max_size)
            _write_all(self._fd, data)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        if self._fd < 0:
            raise ValueError(f"commit of a finished upload of {self.rel}")
        try:
            os.close(self._fd)
            self._fd = -1
            os.rename(self._tmp, self._parent.name, src_dir_fd=self._parent.fd, dst_dir_fd=self._parent.fd)
        except BaseException:
            self.abort()
            raise
        self._parent.__exit__()

    def abort(self) -> None:
        """Drop the temp file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._parent.fd >= 0:
            try:
                os.unlink(self._tmp, dir_fd=self._parent.fd)
            except OSError:
                pass
            self._parent.__exit__()


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
        base = "/".join(parts)
        if not recursive:
            out = []
            for name, st in _entries(dfd):
                path = _join(base, name)
                _check_length(path)
                out.append(_entry(st, name, path))
            return out
        with contextlib.closing(_walk(dfd, base, strict=False)) as walk:
            return [_entry(st, name, path) for kind, path, name, st, _ in walk if kind != _LEAVE]
    finally:
        os.close(dfd)


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


def _refuse_in_copy(path: str, st: os.stat_result) -> None:
    """What a tree copy would refuse half-way, refused before it writes anything."""
    if _stat.S_ISLNK(st.st_mode):
        raise PathEscape(shorten(path), "symlink in path")
    if not _stat.S_ISDIR(st.st_mode):
        if not _stat.S_ISREG(st.st_mode):
            raise PathEscape(shorten(path), "not a regular file")
        if st.st_nlink > 1:
            raise PathEscape(shorten(path), "file has more than one hard link")


def _copy_tree(sdfd: int, sname: str, ddfd: int, dname: str, src: str, dst: str) -> None:
    src, dst = "/".join(split(src)), "/".join(split(dst))
    s = _open_dir(sdfd, [sname], src)
    try:
        # first a dry walk: symlinks, FIFOs, hard links and paths over the limit (the source's
        # or the copy's) fail the copy before anything is written
        with contextlib.closing(_walk(s, src, strict=False)) as walk:
            for kind, path, _name, st, _fd in walk:
                if kind != _LEAVE:
                    _refuse_in_copy(path, st)
                    _check_length(dst + path[len(src) :])
        try:
            os.mkdir(dname, 0o755, dir_fd=ddfd)
        except FileExistsError:
            if not _stat.S_ISDIR(os.lstat(dname, dir_fd=ddfd).st_mode):
                raise
        d = _open_dir(ddfd, [dname], dst)
        try:
            above: list[tuple[int, int]] = []  # (dev, ino) of the destination directories above d
            with contextlib.closing(_walk(s, src, strict=True)) as walk:
                for kind, path, name, st, sfd in walk:
                    target = dst + path[len(src) :]
                    if kind == _LEAVE:
                        fd, d = d, -1
                        d = _up(fd, above.pop(), target)
                    elif kind == _DIR:
                        _refuse_in_copy(path, st)
                        try:
                            os.mkdir(name, 0o755, dir_fd=d)
                        except FileExistsError:
                            pass
                        nd = _open_dir(d, [name], target)
                        above.append(_ident(os.fstat(d)))
                        os.close(d)
                        d = nd
                    else:
                        _refuse_in_copy(path, st)
                        _copy_file(sfd, name, d, name, path, target)
        finally:
            if d >= 0:
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
    """Total size in bytes of the regular files below ``root`` (symlinks not followed; a walk
    disturbed by sandbox code moving directories returns what it counted until then)."""
    rfd, owned = _root_fd(root)
    total = 0
    try:
        with contextlib.closing(_walk(rfd, "", strict=False, paths=False)) as walk:
            for kind, _path, _name, st, _fd in walk:
                if kind == _FILE and _stat.S_ISREG(st.st_mode):
                    total += st.st_blocks * 512 if st.st_blocks else st.st_size
    except OSError as exc:
        if exc.errno != errno.ESTALE:
            raise
    finally:
        if owned:
            os.close(rfd)
    return total
