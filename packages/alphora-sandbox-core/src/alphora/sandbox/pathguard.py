"""The lexical path guard: every path a caller gives the file API goes through :func:`normalize`.

:func:`normalize` turns a caller's path into a workspace-relative POSIX path that cannot name
anything outside the workspace *lexically*: no NUL byte, no ``..`` that climbs above the root,
no absolute path (unless it lies under one of the workspace's own absolute names, e.g. the host
workspace directory or ``/workspace`` inside a container, which are mapped back to relative), no
backslash, no empty component, no ``~`` home reference, no drive letter. It never touches the
filesystem, so it cannot see symlinks: the second half of the guarantee, refusing symlinks and
hard links planted by sandbox code, race-safely, at open time, is
:mod:`alphora.sandbox.runner.safefs`, which every first-party backend uses.

Both halves together: no file API call reads or writes outside the workspace.

Length limits (the rule and its numbers live in :mod:`~alphora.sandbox.runner.safefs`, which
enforces them again inside the sandbox): a normalised path is at most
:data:`~alphora.sandbox.runner.safefs.MAX_PATH_BYTES` (4095) bytes of UTF-8 and each component at
most :data:`~alphora.sandbox.runner.safefs.MAX_NAME_BYTES` (255); a longer one is a
:class:`~alphora.sandbox.errors.FileSystemError` that names the limit, raised before the backend is
asked.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Sequence

from .errors import FileSystemError, PathTraversalError, SecurityViolationError
from .runner.safefs import MAX_NAME_BYTES, MAX_PATH_BYTES, length_problem, shorten

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "blocked_by", "check_blocked", "is_within", "normalize"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def _reject(path: object, reason: str) -> PathTraversalError:
    return PathTraversalError(f"path {shorten(str(path))!r} is not allowed: {reason}", path=str(path))


def _as_str(path: str | os.PathLike[str]) -> str:
    try:
        raw = os.fspath(path)
    except TypeError:
        raise PathTraversalError(
            f"path must be a str or os.PathLike, got {type(path).__name__}", path=repr(path)
        ) from None
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if not isinstance(raw, str):  # pragma: no cover - os.fspath guarantees str or bytes
        raise PathTraversalError(f"path must be a str, got {type(raw).__name__}", path=repr(path))
    return raw


def _alias_remainder(path: str, aliases: Sequence[str]) -> str | None:
    """If absolute ``path`` lies under one of ``aliases`` return the part below it, else None."""
    for alias in aliases:
        a = posixpath.normpath(os.fspath(alias).replace(os.sep, "/"))
        if not a.startswith("/"):
            continue
        if a == "/":  # an alias of "/" would map everything: refuse to honour it
            continue
        if path == a:
            return ""
        if path.startswith(a + "/"):
            return path[len(a) + 1 :]
    return None


def normalize(path: str | os.PathLike[str], *, workspace_aliases: Sequence[str] = ()) -> str:
    """Check ``path`` lexically and return it as a normalised workspace-relative POSIX path.

    ``""``, ``"."`` and ``"./"`` are the workspace root (returned as ``""``). A single trailing
    ``/`` is accepted (``"out/"`` → ``"out"``); ``.`` components are dropped; ``..`` is resolved
    lexically and refused when it would climb above the root. An absolute path is accepted only
    when it equals or lies under one of ``workspace_aliases`` (absolute POSIX names of the
    workspace itself), and is then mapped to relative.

    Raises :class:`~alphora.sandbox.errors.PathTraversalError` (``.path`` is the offending path),
    or :class:`~alphora.sandbox.errors.FileSystemError` when the result is longer than the limits.
    """
    raw = _as_str(path)
    if "\x00" in raw:
        raise _reject(raw, "it contains a NUL byte")
    if "\\" in raw:
        raise _reject(raw, "backslashes are not path separators here; use '/'")
    rel = raw
    if rel.startswith("/"):
        # collapse "//x" and "/a/./b" before comparing with the aliases; ".." must not be
        # collapsed here (normpath("/ws/../etc") would hide an escape), so check it first
        if any(part == ".." for part in rel.split("/")):
            remainder = None
        else:
            remainder = _alias_remainder(posixpath.normpath(rel), workspace_aliases)
        if remainder is None:
            raise _reject(raw, "absolute paths outside the workspace are refused; use a workspace-relative path")
        rel = remainder
    if rel.endswith("/") and rel not in ("", "/"):
        rel = rel[:-1]
    if rel in ("", "."):
        return ""
    parts = rel.split("/")
    stack: list[str] = []
    for part in parts:
        if part == "":
            raise _reject(raw, "it has an empty path component ('//')")
        if part == ".":
            continue
        if part == "..":
            if not stack:
                raise _reject(raw, "'..' climbs out of the workspace")
            stack.pop()
            continue
        if not stack and part.startswith("~"):
            raise _reject(raw, "'~' home references are refused")
        if not stack and _DRIVE.match(part):
            raise _reject(raw, "drive letters are refused")
        stack.append(part)
    rel = "/".join(stack)
    problem = length_problem(rel)
    if problem is not None:
        raise FileSystemError(f"path {shorten(rel)!r} is not allowed: {problem}", path=shorten(rel))
    return rel


def is_within(rel: str) -> bool:
    """True when ``rel`` (as returned by :func:`normalize`) cannot name anything outside the root."""
    if rel == "":
        return True
    if "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def blocked_by(path: str, blocked_paths: Sequence[str], *, rel: str | None = None) -> str | None:
    """Return the first pattern of ``blocked_paths`` that ``path`` falls under, else None.

    Absolute patterns (``/etc``) are compared with ``path`` as given; relative ones (``secrets``,
    ``*.key``) with the normalised workspace-relative path ``rel``. A pattern matches the path
    itself and everything below it; glob characters (``*?[``) are honoured.
    """
    candidates = [posixpath.normpath(path)] if path.startswith("/") else []
    if rel is not None:
        candidates.append(rel)
    for pattern in blocked_paths:
        pat = pattern.rstrip("/") or "/"
        for cand in candidates:
            if cand.startswith("/") != pat.startswith("/"):
                continue
            if cand == pat or cand.startswith(pat.rstrip("/") + "/"):
                return pattern
            if any(ch in pat for ch in "*?[") and (
                fnmatch.fnmatchcase(cand, pat) or fnmatch.fnmatchcase(cand, pat + "/*")
            ):
                return pattern
    return None


def check_blocked(path: str, blocked_paths: Sequence[str], *, rel: str | None = None) -> None:
    """Raise :class:`SecurityViolationError` when ``path`` falls under a blocked pattern."""
    pattern = blocked_by(path, blocked_paths, rel=rel)
    if pattern is not None:
        raise SecurityViolationError(
            f"path {path!r} is blocked by the security policy (blocked_paths: {pattern!r})",
            violations=[f"blocked path {pattern!r}"],
            path=path,
        )
