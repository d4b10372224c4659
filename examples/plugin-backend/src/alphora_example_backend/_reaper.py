"""Runs one call's command and, when it ends or on SIGTERM, kills and reaps everything it started.

``python _reaper.py ARGV...``. It makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so
orphaned descendants, ``setsid`` daemons included, are re-parented to it rather than to init
(which, in a container, may never reap them: a zombie still counts as a running process). Stdlib
only; exits with the command's status.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _children() -> list[int]:
    me, kids = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                kids.append(int(name))
    return kids


def main(argv: list[str]) -> int:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGTERM, _stop)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"{argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(127)
    status: int | None = None
    try:
        while status is None:
            done, raw = os.waitpid(-1, 0)
            if done == pid:
                status = os.waitstatus_to_exitcode(raw)
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:  # kill every child; their orphans come to us next round; reap all of them
        for kid in _children():
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    if status is None:
        return 137
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
