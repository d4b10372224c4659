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
import traceback
import types
from typing import Any

from .child import _finish, _std_streams, user_traceback
from .display import Display, PyplotHook
from .proctree import exit_code, own_children, proc_table
from .protocol import EV_STARTED, encode, read_frame_blocking, write_all


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
        sys.path[0] = ""
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
            if self.interrupted:  # an interrupt that came too late for its cell
                self._reap()
            keep = own_children()
            self.keep = {(pid, start) for pid, start in keep}
            write_all(4, encode({"ev": EV_STARTED, "keep": keep}))
            reply = self.run_cell(req["code"], req.get("display"))
            if self.interrupted:  # the cell timed out: reap what the runner killed
                self._reap()
            write_all(4, encode(reply))

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
