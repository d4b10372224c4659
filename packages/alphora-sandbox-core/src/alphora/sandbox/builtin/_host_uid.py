"""Host uids for isolated sandboxes started by root: one unprivileged uid per live sandbox.

Root's processes ignore ``RLIMIT_NPROC`` and a user namespace made by root maps its users onto
host root; so, as root, the isolated tier runs each sandbox as a host uid of its own, taken from a
range that holds no real users (default ``100000``–``165535``, backend option
``uid_range=(start, count)``). Two live sandboxes never share one, even across processes on the
same host: a uid is taken by holding an exclusive ``flock`` on ``<RUN_DIR>/uids/<uid>.lock`` for
the sandbox's lifetime (the kernel drops it when the holder dies, so a crashed host leaves no
stale lease). A sandbox first tries the uid its id hashes to, so a restarted sandbox usually gets
its previous uid back (and its workspace needs no re-chown).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import BackendError, ConfigurationError
from ..runner import fswalk

__all__ = ["DEFAULT_UID_RANGE", "RUN_DIR", "UidLease", "chown_tree", "parse_uid_range"]

#: root-owned runtime directory of the isolated tier (lock files, staging mounts)
RUN_DIR = Path("/run/alphora-sandbox")
#: 65,536 uids above the usual ranges of real users (1000–60000) and of nobody (65534)
DEFAULT_UID_RANGE = (100000, 65536)


def parse_uid_range(value: object) -> tuple[int, int]:
    """``(start, count)`` from a backend option; ConfigurationError naming the problem otherwise."""
    if value is None:
        return DEFAULT_UID_RANGE
    if (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        start, count = int(value[0]), int(value[1])
        if start >= 1000 and count >= 1 and start + count <= 2**32 - 2:
            return start, count
    raise ConfigurationError(
        f"backend option uid_range must be (start, count) with start >= 1000 and count >= 1 (a range of host "
        f"uids no real user has), got {value!r}",
        field="uid_range",
        value=value,
    )


class UidLease:
    """An exclusive claim on one host uid, held until :meth:`release` (or the process's death)."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, sandbox_id: str, uid_range: tuple[int, int]) -> UidLease:
        start, count = uid_range
        lock_dir = RUN_DIR / "uids"
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        first = int.from_bytes(hashlib.sha256(sandbox_id.encode()).digest()[:8], "big") % count
        for i in range(count):
            uid = start + (first + i) % count
            fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(uid, fd)
        raise BackendError(
            f"every host uid of uid_range {uid_range} is taken by a live sandbox; widen the backend option uid_range"
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything below it to ``uid:gid`` without following any symlink (fd-relative,
    any depth: the runner's fswalk walk). Files with more than one hard link are left alone (another link may be
    outside the workspace)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        with contextlib.closing(fswalk._walk(fd, "", strict=False, paths=False)) as walk:
            for kind, _path, name, st, parent in walk:
                if kind == "leave" or (st.st_uid, st.st_gid) == (uid, gid):
                    continue
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(fd)
