"""The session kernel: a notebook-like Python interpreter in a forked child of the runner.

Part of the runner program (stdlib only). The runner side of sessions is :mod:`.sessions`.
"""

# The kernel must survive anything a cell does, so it catches everything at its boundaries.
# ruff: noqa: BLE001

from __future__ import annotations

import ast
import builtins
import linecache
import os
import signal
import sys
import time
import traceback
import types
from typing import Any

from .child import _finish, _refresh_import_state, _std_streams, enter_site, user_traceback
from .display import Display, PyplotHook
from .proctree import exit_code, own_children, prctl_subreaper, proc_table
from .protocol import EV_FORKED, EV_STARTED, encode, read_frame_blocking, write_all

#: the kernel's fds: cells in, replies out, and the socket on which a fork's pipes arrive
REQ_FD, REPLY_FD, FORK_FD = 3, 4, 5


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
        self.display = Display(self._send_display)
        self.deferred = False  # a SIGINT came while a display frame was being written
        self.ns["display"] = self.display.display  # like IPython: no import needed
        self.pyplot = PyplotHook(self.display.show)

    def _sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        if self.in_cell:
            raise KeyboardInterrupt
        self.deferred = True

    def _send_display(self, frame: dict[str, Any]) -> None:
        """Send a rich output to the runner. Called from user code (``display()``): a timeout's
        KeyboardInterrupt must not cut the frame in half (the runner would read garbage after it),
        so it is held until the frame is written, then raised in the cell."""
        self.deferred = False
        was, self.in_cell = self.in_cell, False
        try:
            write_all(4, encode(frame))
        finally:
            self.in_cell = was
        if was and self.deferred:
            self.deferred = False
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
                reaped[pid] = exit_code(status)
        owners = tuple(
            cls
            for cls in (
                getattr(sys.modules.get(mod), "Popen", None) for mod in ("subprocess", "multiprocessing.popen_fork")
            )
            if isinstance(cls, type)
        )
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
        enter_site()  # before "" goes in: site makes every sys.path entry absolute
        sys.path.insert(0, "")  # the runner dropped it (BOOT); a session imports from its cwd like `python`
        os.environ.setdefault("MPLBACKEND", "Agg")
        import warnings

        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        sys.meta_path.insert(0, self.pyplot)
        self.pyplot.patch_loaded()
        signal.signal(signal.SIGINT, self._sigint)
        while True:
            try:
                req = read_frame_blocking(3)
            except KeyboardInterrupt:
                continue
            if req is None:
                _finish(0)
                return
            if "fork" in req:
                self._fork(req)
                continue
            if self.interrupted:  # an interrupt that came too late for its cell
                self._reap()
            keep = own_children()
            self.keep = {(pid, start) for pid, start in keep}
            write_all(4, encode({"ev": EV_STARTED, "keep": keep}))
            _refresh_import_state()  # packages installed since the interpreter started (a new user site too)
            reply = self.run_cell(req["code"], req.get("display"))
            if self.interrupted:  # the cell timed out: reap what the runner killed
                self._reap()
            write_all(4, encode(reply))

    def _fork(self, req: dict[str, Any]) -> None:
        """``{"fork": name}``: become two interpreters with the same state (copy-on-write ``fork``).

        The new one must be the runner's child, like every session interpreter (the runner reaps it
        and sees it die), so the kernel stops being a subreaper, forks a middle process that forks
        the new interpreter and exits: the orphan is re-parented to the runner (a subreaper). Its
        pipes (stdout, stderr, cells, replies, its own fork socket) arrive on ``FORK_FD`` from the
        runner; it answers ``forked`` (pid, cwd) or an ``error`` on the new reply pipe."""
        import array
        import socket

        sock = socket.socket(fileno=FORK_FD)
        fds: list[int] = []
        try:  # socket.recv_fds is 3.9+; the runner runs on 3.8
            _, anc, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(5 * 4))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(data[: len(data) - len(data) % got.itemsize])
                    fds.extend(got)
        finally:
            sock.detach()
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            return
        res_w = fds[3]
        prctl_subreaper(False)
        try:
            mid = os.fork()
        except OSError as exc:
            prctl_subreaper(True)
            self._fork_failed(res_w, f"fork failed: {exc}")
            mid = -1
        if mid == 0:
            me = os.getpid()
            try:
                child = os.fork()
            except BaseException as exc:
                self._fork_failed(res_w, f"fork failed: {exc!r}")
                os._exit(0)
            if child == 0:
                self._adopt(fds, req, me)
                return  # the new interpreter: back to serve()'s loop, on its own pipes
            os._exit(0)
        if mid > 0:
            os.waitpid(mid, 0)
            prctl_subreaper(True)  # only now: the new interpreter was re-parented to the runner
        for fd in fds:
            os.close(fd)

    @staticmethod
    def _fork_failed(res_w: int, error: str) -> None:
        try:
            write_all(res_w, encode({"ev": EV_FORKED, "error": error}))
        except OSError:
            pass

    def _adopt(self, fds: list[int], req: dict[str, Any], mid: int) -> None:
        """In the new interpreter (its parent is ``mid``, the middle process, which is exiting): own
        session and process group, the new pipes on fds 1-5, (``copy_to``) its own copy of the
        workspace as the working directory; it answers once it is the runner's child."""
        os.setsid()
        prctl_subreaper()
        for i, target in enumerate((1, 2, REQ_FD, REPLY_FD, FORK_FD)):
            os.dup2(fds[i], target, inheritable=target < REQ_FD)
            os.close(fds[i])
        try:
            self.keep = set()
            self.interrupted = False
            copy_to = req.get("copy_to")
            if copy_to:
                rel = os.path.relpath(os.getcwd(), req["copy_from"])
                skip = {os.path.join(req["copy_from"], p) for p in req.get("skip") or ()}
                copy_tree(req["copy_from"], copy_to, skip | {os.path.join(req["copy_from"], ".forks")})
                os.chdir(os.path.normpath(os.path.join(copy_to, rel)) if not rel.startswith("..") else copy_to)
            deadline = time.monotonic() + 10.0
            while os.getppid() == mid:  # the middle process exits now; the runner accepts only its own child
                if time.monotonic() > deadline:
                    raise RuntimeError("the fork was not re-parented to the runner within 10 s")
                time.sleep(0.0002)
        except BaseException as exc:
            self._fork_failed(REPLY_FD, f"the fork could not start: {exc!r}")
            os._exit(0)
        write_all(REPLY_FD, encode({"ev": EV_FORKED, "pid": os.getpid(), "cwd": os.getcwd()}))

    def run_cell(self, code: str, display: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one cell; its rich outputs (``display()``, a rich trailing value, figures) are sent
        as ``display`` frames while it runs (see :mod:`.display`), the reply comes last."""
        self.count += 1
        self.display.begin(self.count, display)
        fname = f"<cell-{self.count}>"
        linecache.cache[fname] = (len(code), None, code.splitlines(True), fname)
        value = None
        error = ""
        interrupted = False
        ok = True
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
                    self.display.result(result)
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
            self.display.figures()
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
        }


def copy_tree(src: str, dst: str, skip: set[str]) -> None:
    """Copy the directory tree ``src`` to ``dst`` (which must not exist), leaving out the paths in ``skip``:
    directories and regular files are copied (with their modes), symlinks are copied as links (never
    followed), FIFOs, sockets and devices are left out (opening one could block or reach outside)."""
    import shutil
    import stat

    os.makedirs(dst)
    for root, dirs, files in os.walk(src):
        out = os.path.join(dst, os.path.relpath(root, src))
        for name in list(dirs):
            path = os.path.join(root, name)
            if path in skip or os.path.islink(path):
                dirs.remove(name)
                if path not in skip:
                    os.symlink(os.readlink(path), os.path.join(out, name))
                continue
            os.mkdir(os.path.join(out, name))
            shutil.copymode(path, os.path.join(out, name))
        for name in files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if path in skip:
                continue
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(path), os.path.join(out, name))
            elif stat.S_ISREG(mode):
                shutil.copy2(path, os.path.join(out, name), follow_symlinks=False)
