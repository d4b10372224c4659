"""What runs inside forked children of the runner: call setup, ``python -c``-like execution,
the pre-forked spare, and the session kernel; plus the frame helpers both sides share.

Part of the runner program (stdlib only, no alphora imports): ``runner_source()`` concatenates
this module and :mod:`.server`.
"""

# Code in a forked child must never let an exception escape into the runner's loop, so it
# deliberately catches everything at its boundaries.
# ruff: noqa: BLE001

from __future__ import annotations

import ast
import base64
import builtins
import errno
import fcntl
import io
import json
import linecache
import os
import resource
import runpy
import select
import signal
import sys
import traceback
import types
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
MAX_FRAME = 1 << 30  # a larger length prefix means the stream is corrupt

_libc: Any = None


def _prctl_subreaper() -> None:
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # not Linux / no ctypes: orphans go to init instead
        pass

# -- /proc --------------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (ppid, pgid, sid, start time in clock ticks since boot) of every visible process."""
    table: dict[int, tuple[int, int, int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:  # no procfs (not Linux): only process groups can be killed
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        try:
            table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
        except (IndexError, ValueError):
            continue
    return table


def own_children() -> list[list[int]]:
    """``[pid, start time]`` of this process's children (one cheap syscall when there are none)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return []
    except (AttributeError, OSError):  # no waitid: look anyway
        pass
    me = os.getpid()
    return [[pid, entry[3]] for pid, entry in proc_table().items() if entry[0] == me]

# -- frames -------------------------------------------------------------------------------------


def encode(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return len(body).to_bytes(4, "big") + body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


class FrameBuffer:
    """Accumulates bytes and yields complete frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            n = int.from_bytes(self.buf[:4], "big")
            if n > MAX_FRAME:
                raise ValueError(f"frame of {n} bytes: the stream is corrupt")
            if len(self.buf) < 4 + n:
                break
            body = bytes(self.buf[4 : 4 + n])
            del self.buf[: 4 + n]
            out.append(json.loads(body.decode("utf-8", "surrogatepass")))
        return out


def read_frame_blocking(fd: int) -> dict[str, Any] | None:
    def exact(n: int) -> bytes | None:
        b = b""
        while len(b) < n:
            c = os.read(fd, n - len(b))
            if not c:
                return None
            b += c
        return b

    head = exact(4)
    if head is None:
        return None
    body = exact(int.from_bytes(head, "big"))
    if body is None:
        return None
    result: dict[str, Any] = json.loads(body.decode("utf-8", "surrogatepass"))
    return result

# -- in the forked child -------------------------------------------------------------------------


def _std_streams() -> None:
    """Fresh sys.std* on fds 0-2, line-buffered like a terminal (a partial line goes out on
    flush or exit; each line is one write, so chunks are whole lines where possible)."""
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8",
                                 errors="surrogateescape")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
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
    _prctl_subreaper()
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


def child_setup(stdin_fd: int, out_fd: int, err_fd: int, keep: tuple[int, ...], cwd: str,
                env: dict[str, str], limits: dict[str, Any]) -> None:
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
    """The traceback as ``python -c`` would print it: the runner's own frames left out."""
    hidden = {user_traceback.__code__.co_filename, runpy.__file__}
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename not in hidden])
    text = "".join(te.format())
    if not te.stack:
        text = text.replace("Traceback (most recent call last):\n", "", 1)
    return text


def _refresh_import_state() -> None:
    """See what a fresh interpreter would: packages installed since the runner started, and a user
    site-packages directory (``pip install --user``) that did not exist then."""
    import importlib
    import site

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
            sys.path[0] = ""
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
            sys.path[0] = os.path.dirname(path)
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


# -- the session kernel (runs in a forked child) --------------------------------------------------


class Kernel:
    """A notebook-like interpreter loop: reads cells from fd 3, answers on fd 4.

    Before each cell it tells the runner which children it already has (``started`` frame): on a
    timeout the runner kills every other descendant, i.e. the timed-out cell's processes, and
    leaves those of earlier cells alone. The interpreter is a subreaper, so the cell's orphans
    (daemons) are its children and it reaps them after an interrupt."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.count = 0
        self.in_cell = False
        self.interrupted = False  # a SIGINT came: the runner may have killed processes to reap
        self.keep: set[tuple[int, int]] = set()  # (pid, start time) of the children from before the cell
        self.figures: list[tuple[str, bytes]] = []
        self.patched = False

    def _sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        if self.in_cell:
            raise KeyboardInterrupt

    def _reap(self) -> None:
        """Reap the exited children that the cell started (the processes the runner killed on its
        timeout, with the orphans this subreaper adopted) and give their status to the ``Popen``
        objects of user code that own them, which could no longer wait for it. Children from
        before the cell are left to whoever waits for them."""
        self.interrupted = False
        me = os.getpid()
        reaped: dict[int, int] = {}
        for pid, (ppid, _, _, start) in proc_table().items():
            if ppid != me or (pid, start) in self.keep:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                reaped[pid] = os.waitstatus_to_exitcode(status)
        owners = tuple(cls for cls in (getattr(sys.modules.get(mod), "Popen", None) for mod in
                                       ("subprocess", "multiprocessing.popen_fork")) if isinstance(cls, type))
        if not reaped or not owners:
            return
        import gc

        for obj in gc.get_objects():
            if isinstance(obj, owners):
                proc: Any = obj
                if proc.returncode is None and proc.pid in reaped:
                    proc.returncode = reaped[proc.pid]

    def serve(self) -> None:
        _std_streams()
        main = types.ModuleType("__main__")
        main.__dict__.update(self.ns)
        self.ns = main.__dict__
        sys.modules["__main__"] = main
        sys.argv = [""]
        sys.path[0] = ""
        os.environ.setdefault("MPLBACKEND", "Agg")
        import warnings

        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        signal.signal(signal.SIGINT, self._sigint)
        while True:
            try:
                req = read_frame_blocking(3)
            except KeyboardInterrupt:
                continue
            if req is None:
                _finish(0)
                return
            if self.interrupted:  # an interrupt that came too late for its cell
                self._reap()
            keep = own_children()
            self.keep = {(pid, start) for pid, start in keep}
            write_all(4, encode({"ev": "started", "keep": keep}))
            reply = self.run_cell(req["code"])
            if self.interrupted:  # the cell timed out: reap what the runner killed
                self._reap()
            write_all(4, encode(reply))

    def _show(self, *args: Any, **kwargs: Any) -> None:
        self._collect()

    def _collect(self) -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        if not self.patched:
            setattr(plt, "show", self._show)  # noqa: B010
            self.patched = True
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            self.figures.append((f"figure-{num}.png", buf.getvalue()))
        plt.close("all")

    def run_cell(self, code: str) -> dict[str, Any]:
        self.count += 1
        fname = f"<cell-{self.count}>"
        linecache.cache[fname] = (len(code), None, code.splitlines(True), fname)
        value = None
        error = ""
        interrupted = False
        ok = True
        self.figures = []
        try:
            self.in_cell = True
            if self.interrupted:  # the deadline passed before the cell began
                raise KeyboardInterrupt
            tree = ast.parse(code, fname, "exec")
            last: ast.Expr | None = None
            tail = tree.body[-1] if tree.body else None
            if isinstance(tail, ast.Expr):
                tree.body.pop()
                last = tail
            exec(compile(tree, fname, "exec"), self.ns)
            if last is not None:
                result = eval(compile(ast.Expression(last.value), fname, "eval"), self.ns)
                if result is not None:
                    self.ns["_"] = result
                    value = repr(result)
        except SystemExit as exc:
            ok = False
            error = f"SystemExit: {exc.code}"
        except BaseException as exc:
            self.in_cell = False
            ok = False
            interrupted = isinstance(exc, KeyboardInterrupt)
            only = traceback.format_exception_only(type(exc), exc)
            try:
                sys.stderr.write("".join(only) if isinstance(exc, SyntaxError) else user_traceback(exc))
            except BaseException:
                pass
            error = only[-1].strip() if only else type(exc).__name__
        finally:
            self.in_cell = False
        try:
            self._collect()
        except Exception as exc:
            sys.stderr.write(f"[could not render figures: {exc!r}]\n")
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass
        return {
            "ok": ok,
            "value": value,
            "error": error,
            "interrupted": interrupted,
            "attachments": [
                {"mime_type": "image/png", "name": n, "data": base64.b64encode(d).decode()} for n, d in self.figures
            ],
        }
