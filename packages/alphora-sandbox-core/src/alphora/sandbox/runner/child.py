"""What runs in the runner's forked children: per-call setup (own session, clean fds, env,
rlimits), ``python -c``-like execution, exec of shell/argv calls, and the pre-forked spare.

Part of the runner program (stdlib only; relative imports only, see docs/runner.md "Boot").
The session interpreter is :mod:`.kernel`.
"""

# Code in a forked child must never let an exception escape into the runner's loop, so it
# deliberately catches everything at its boundaries.
# ruff: noqa: BLE001

from __future__ import annotations

import builtins
import errno
import fcntl
import io
import os
import resource
import runpy
import signal
import sys
import traceback
import types
from typing import Any

from .proctree import prctl_subreaper
from .protocol import read_frame_blocking

# -- in the forked child -------------------------------------------------------------------------


def _std_streams() -> None:
    """Fresh sys.std* on fds 0-2, line-buffered like a terminal (a partial line goes out on
    flush or exit; each line is one write, so chunks are whole lines where possible)."""
    sys.stdin = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", errors="surrogateescape"
    )
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    for name in ("stdin", "stdout", "stderr"):
        setattr(sys, f"__{name}__", getattr(sys, name))


def _apply_limits(limits: dict[str, Any]) -> None:
    def setlim(res: int, value: Any) -> None:
        if not value:
            return
        value = int(value)
        try:
            _soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY and value > hard:
                value = hard
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass

    setlim(resource.RLIMIT_DATA, limits.get("memory_bytes"))
    setlim(resource.RLIMIT_FSIZE, limits.get("fsize_bytes"))
    setlim(resource.RLIMIT_NOFILE, limits.get("nofile"))
    setlim(resource.RLIMIT_NPROC, limits.get("nproc"))


def child_base(stdin_fd: int, out_fd: int, err_fd: int, keep: tuple[int, ...] = ()) -> None:
    """First thing in a forked child: own session, subreaper, std fds, every other fd closed
    (the protocol stream included); ``keep`` fds move to 3, 4, …"""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    prctl_subreaper()
    os.dup2(stdin_fd, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 200) for fd in keep]
    targets = []
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i)
        targets.append(3 + i)
    os.closerange(3 + len(keep), 1 << 20)
    for fd in targets:
        os.set_inheritable(fd, False)


def child_apply(cwd: str, env: dict[str, str], limits: dict[str, Any]) -> None:
    """Per-request setup in the child: working directory, environment, rlimits."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _apply_limits(limits)


def child_setup(
    stdin_fd: int,
    out_fd: int,
    err_fd: int,
    keep: tuple[int, ...],
    cwd: str,
    env: dict[str, str],
    limits: dict[str, Any],
) -> None:
    """Runs in a freshly forked child before user code: own session, clean fds, env, limits."""
    child_base(stdin_fd, out_fd, err_fd, keep)
    child_apply(cwd, env, limits)


def run_job(job: dict[str, Any]) -> None:
    """Run one exec request in this (forked, set-up) child; never returns."""
    try:
        child_apply(job["cwd"], job["env"], job["limits"])
        if job["kind"] in ("python", "file"):
            run_python_child(job["kind"], job["code"], job["argv"])
        else:
            exec_child(job["kind"], job["code"], job["argv"], job["env"])
    except BaseException:
        try:
            traceback.print_exc()
        finally:
            os._exit(126)
    os._exit(0)


def spare_main(in_r: int, out_w: int, err_w: int, ctl_r: int) -> None:
    """A pre-forked child waiting for its request: fork and base setup are off the critical path."""
    try:
        child_base(in_r, out_w, err_w, (ctl_r,))
        enter_site()
        job = read_frame_blocking(3)
        os.close(3)
    except BaseException:
        os._exit(125)
    if job is None:  # the runner discarded us
        os._exit(0)
    run_job(job)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _finish(code: int) -> None:
    """Interpreter-shutdown chores a forked child would otherwise skip, then _exit."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None and hasattr(threading, "_shutdown"):
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass
    os._exit(code)


def user_traceback(exc: BaseException) -> str:
    """The traceback as ``python -c`` would print it: the runner's own frames (of any of its modules,
    which share this one's directory) left out."""
    ours = os.path.dirname(user_traceback.__code__.co_filename)
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if f.filename != runpy.__file__ and os.path.dirname(f.filename) != ours]
    )
    text = "".join(te.format())
    if not te.stack:
        text = text.replace("Traceback (most recent call last):\n", "", 1)
    return text


_SITE_ENTERED = False


def enter_site() -> None:
    """Do, once in this process, the site set-up the runner skipped (it runs with ``-S``, see
    ``BOOT``): the package environment, the user site, their ``.pth`` files and ``sitecustomize``,
    as ``python`` would for user code. Called in a forked child before user code runs (a spare
    does it while it waits, off the critical path)."""
    global _SITE_ENTERED
    if _SITE_ENTERED:
        return
    _SITE_ENTERED = True
    if sys.flags.no_site:
        import site

        site.main()


def _refresh_import_state() -> None:
    """See what a fresh interpreter would: packages installed since the runner started, and a user
    site-packages directory (``pip install --user``) that did not exist then."""
    import importlib
    import site

    enter_site()
    importlib.invalidate_caches()
    if not site.ENABLE_USER_SITE:
        return
    base = os.environ.get("PYTHONUSERBASE") or os.path.join(os.path.expanduser("~"), ".local")
    user_site = os.path.join(base, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    if user_site not in sys.path and os.path.isdir(user_site):
        site.addsitedir(user_site)


def run_python_child(kind: str, code: str, argv: list[str]) -> None:
    """Exec user code in a fresh ``__main__``, like ``python -c`` / ``python file.py``."""
    _std_streams()
    _refresh_import_state()
    status = 0
    try:
        if kind == "python":
            sys.argv = ["-c", *argv]
            sys.path.insert(0, "")
            main = types.ModuleType("__main__")
            main.__dict__["__builtins__"] = builtins
            sys.modules["__main__"] = main
            exec(compile(code, "<string>", "exec"), main.__dict__)
        else:
            path = os.path.abspath(argv[0])
            if not os.path.exists(path):
                sys.stderr.write(f"{sys.executable}: can't open file {path!r}: [Errno 2] No such file or directory\n")
                _finish(2)
            sys.argv = [argv[0], *argv[1:]]
            sys.path.insert(0, os.path.dirname(path))
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException as exc:
        try:
            sys.stderr.write(user_traceback(exc))
        except BaseException:
            traceback.print_exc()
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    _finish(status)


def exec_child(kind: str, code: str, argv: list[str], env: dict[str, str]) -> None:
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        if kind == "shell":
            os.execve("/bin/sh", ["/bin/sh", "-c", code], env)
        else:
            os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"{argv[0] if argv else '/bin/sh'}: {exc.strerror}\n".encode())
        os._exit(127 if exc.errno == errno.ENOENT else 126)
