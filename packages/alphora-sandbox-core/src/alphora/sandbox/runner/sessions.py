"""Stateful sessions, the runner's side: each is a long-lived forked interpreter (:mod:`.kernel`)
that the runner feeds cells, times out, interrupts and restarts.

Part of the runner program (stdlib only). The host's side is :mod:`.session` (``RunnerSession``).
"""

# The runner must survive a session interpreter that fails to start, so it catches everything there.
# ruff: noqa: BLE001

from __future__ import annotations

import array
import base64
import os
import selectors
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .child import child_setup
from .display import OutputBudget
from .kernel import Kernel
from .proctree import exit_code, kill_cell_tree, own_child_pids, proc_table, wait_dead, wait_stopped
from .protocol import DISPLAY_STREAM, EV_DISPLAY, EV_DONE, EV_ERROR, EV_OUT, EV_STARTED, FrameBuffer, encode, write_all
from .streams import READ_SIZE, Stream, required

if TYPE_CHECKING:
    from .server import Runner


class Session:
    def __init__(self, name: str, env: dict[str, str], cwd: str) -> None:
        self.name = name
        self.env = env
        self.cwd = cwd
        self.pid = 0
        self.ctl_w = -1
        self.ctl_r = -1
        self.fork_sock: socket.socket | None = None  # the runner's end of the socket a fork's pipes go through
        self.frames = FrameBuffer()
        self.streams: list[Stream] = []
        self.active: Any = None  # request id of the running cell
        self.deadline = 0.0
        self.started = 0.0
        self.interrupted_at: float | None = None
        self.grace = 2.0
        self.timeout = 0.0
        self.restarts = 0
        self.lost_pending = False
        self.cell_started = False  # the interpreter said "started": user code may be running
        self.keep: frozenset[tuple[int, int]] = frozenset()  # its children from before the cell
        self.killed = 0  # processes of the running cell killed at its timeout
        self.shown: tuple[Any, OutputBudget] = (None, OutputBudget())  # request id, its outputs' caps


def capped_display_items(budget: OutputBudget, raw: Any) -> list[dict[str, Any]]:
    """A display frame of a session interpreter, checked and capped here, where its code cannot
    reach (the interpreter's own caps are in its reach): well-formed items only, within ``budget``;
    past the cell's last output, the one mark saying later ones were dropped (else nothing)."""
    items: list[tuple[str, bytes, str, bool]] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("mime_type"), str):
            continue
        try:
            data = base64.b64decode(str(item.get("data", "")), validate=True)
        except ValueError:
            continue
        items.append((item["mime_type"], data, str(item.get("name", ""))[:200], bool(item.get("truncated"))))
    admitted = budget.admit([(mime, data) for mime, data, _, _ in items])
    if admitted is None:
        mark = budget.drop_mark()
        if mark is None:
            return []
        return [{"mime_type": "text/plain", "name": OutputBudget.DROPPED, "data": _b64(mark), "truncated": True}]
    return [
        {"mime_type": mime, "name": item[2], "data": _b64(data), "truncated": cut or item[3]}
        for (mime, data, cut), item in zip(admitted, items)  # noqa: B905 (3.8+)
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Sessions:
    """The runner's sessions by name (``session_open`` / ``session_run`` / ``session_close``)."""

    def __init__(self, host: Runner) -> None:
        self.host = host
        self.table: dict[str, Session] = {}
        self.forking: set[str] = set()  # names of forks whose interpreter has not answered yet

    def close(self, req: dict[str, Any]) -> bool:
        """``session_close``: end the session's interpreter and its processes; False if it did not exist."""
        sess = self.table.pop(req.get("name", "default"), None)
        if sess is not None:
            self.kill(sess)
        return sess is not None

    def shutdown(self) -> None:
        for sess in list(self.table.values()):
            self.kill(sess)
        self.table.clear()

    def exited(self, pid: int, status: int) -> bool:
        """A child was reaped: if it was a session's interpreter, report the loss. True if it was."""
        for sess in self.table.values():
            if sess.pid == pid:
                code = exit_code(status)
                sess.pid = 0
                self.lost(sess, f"the session's Python process died (exit code {code}); state was lost", status)
                return True
        return False

    def tick(self, now: float) -> float | None:
        """Enforce the cells' deadlines; the time until the next one."""
        wait: float | None = None
        for sess in list(self.table.values()):
            if sess.active is None:
                continue
            if sess.interrupted_at is None and now >= sess.deadline:
                self.timeout(sess)
                if sess.active is None:  # its reply was already on the way
                    continue
                left = sess.grace
            elif sess.interrupted_at is not None and now >= sess.interrupted_at + sess.grace:
                self.lost(
                    sess,
                    f"the cell did not stop within {sess.grace:g}s of KeyboardInterrupt; "
                    "the session was restarted and its state was lost",
                )
                continue
            else:
                left = (sess.deadline if sess.interrupted_at is None else sess.interrupted_at + sess.grace) - now
            wait = left if wait is None else min(wait, left)
        return wait

    def open(self, req: dict[str, Any]) -> None:
        name = req.get("name", "default")
        sess = self.table.get(name)
        if sess is None:
            sess = Session(name, self.host.call_env(req.get("env")), self.host.call_cwd(req.get("cwd", "")))
            self.table[name] = sess
            self._spawn(sess)
        self.host.send({"id": req.get("id"), "ev": EV_DONE, "pid": sess.pid})

    def _spawn(self, sess: Session) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        mine, theirs = socket.socketpair()
        null = os.open(os.devnull, os.O_RDONLY)
        pid = os.fork()
        if pid == 0:
            try:
                child_setup(null, out_w, err_w, (req_r, res_w, theirs.fileno()), sess.cwd, sess.env, self.host.limits)
                Kernel().serve()
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        for fd in (out_w, err_w, req_r, res_w, null):
            os.close(fd)
        theirs.close()
        self._attach(sess, pid, (out_r, err_r, req_w, res_r), mine, FrameBuffer())

    def _attach(
        self, sess: Session, pid: int, fds: tuple[int, int, int, int], sock: socket.socket, frames: FrameBuffer
    ) -> None:
        """Start serving an interpreter: its stdout, stderr, cell and reply pipes, its fork socket."""
        out_r, err_r, req_w, res_r = fds
        sess.pid = pid
        sess.ctl_w = req_w
        sess.ctl_r = res_r
        sess.fork_sock = sock
        sess.frames = frames
        sess.streams = [Stream("stdout", out_r), Stream("stderr", err_r)]
        for s in sess.streams:
            os.set_blocking(s.fd, False)
            self.host.sel.register(s.fd, selectors.EVENT_READ, self.host.reader(sess, s))
        os.set_blocking(res_r, False)
        self.host.sel.register(res_r, selectors.EVENT_READ, self._reader(sess))

    def fork(self, req: dict[str, Any]) -> None:
        """``session_fork``: a new session ``new`` whose interpreter is a copy-on-write fork of the
        idle session ``name`` (variables, imports, cwd). The reply (``pid``, ``cwd`` relative to the
        workspace) goes out when the new interpreter answers, so copying the workspace for it
        (``copy``: to ``.forks/<new>``, its new working directory, without the workspace paths in
        ``skip``: the backend's internal ones) does not hold up other calls."""
        name, new = req.get("name", "default"), required(req, "new", str)
        src = self.table.get(name)
        if src is None:
            raise KeyError(f"no session {name!r}")
        if src.active is not None:
            raise RuntimeError(f"session {name!r} is busy; fork it between cells")
        if new in self.table or new in self.forking or not new:
            raise ValueError(f"a session named {new!r} already exists")
        if src.pid == 0 or src.fork_sock is None:
            self._spawn(src)
        msg: dict[str, Any] = {"fork": new}
        if req.get("copy"):
            msg["copy_from"] = self.host.workspace
            msg["copy_to"] = os.path.join(self.host.workspace, ".forks", new)
            msg["skip"] = [p for p in req.get("skip") or () if isinstance(p, str)]
            if os.path.lexists(msg["copy_to"]):
                raise FileExistsError(f"the workspace copy .forks/{new} already exists; pick another name")
        pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, cells, replies
        mine, theirs = socket.socketpair()
        theirs_fds = [pipes[0][1], pipes[1][1], pipes[2][0], pipes[3][1], theirs.fileno()]
        ours = (pipes[0][0], pipes[1][0], pipes[2][1], pipes[3][0])
        assert src.fork_sock is not None
        try:  # the descriptors first: if they cannot go, the interpreter is not told to wait for them
            # socket.send_fds is 3.9+; the runner runs on 3.8
            src.fork_sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", theirs_fds))])
            write_all(src.ctl_w, encode(msg))
        except OSError:
            for fd in ours:
                os.close(fd)
            mine.close()
            raise
        finally:
            for fd in theirs_fds[:4]:
                os.close(fd)
            theirs.close()
        self.forking.add(new)
        frames = FrameBuffer()
        rid = req.get("id")

        def on_readable(fd: int, mask: int) -> None:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            got = frames.feed(data) if data else []
            if data and not got:
                return
            self.host.sel.unregister(fd)
            self.forking.discard(new)
            reply = got[0] if got else {"error": "the session's interpreter ended before the fork was ready"}
            if reply.get("pid") and not self._own_child(reply["pid"]):  # sandbox code can answer too
                reply = {"error": f"the fork answered with pid {reply['pid']!r}, not a process of the runner"}
            if not reply.get("pid"):
                for f in ours:
                    os.close(f)
                mine.close()
                self.host.send({"id": rid, "ev": EV_ERROR, "etype": "RuntimeError", "msg": str(reply.get("error"))})
                return
            sess = Session(new, dict(src.env), str(reply["cwd"]))
            self._attach(sess, int(reply["pid"]), ours, mine, frames)
            self.table[new] = sess
            rel = os.path.relpath(sess.cwd, self.host.workspace)
            self.host.send({"id": rid, "ev": EV_DONE, "pid": sess.pid, "cwd": "" if rel == "." else rel})

        os.set_blocking(ours[3], False)
        self.host.sel.register(ours[3], selectors.EVENT_READ, on_readable)

    @staticmethod
    def _own_child(pid: Any) -> bool:
        """True if ``pid`` is a child of the runner (what a session interpreter must be, so that
        killing its tree later kills nothing else)."""
        if not isinstance(pid, int) or pid <= 0:
            return False
        kids = own_child_pids()
        if kids is not None:
            return pid in kids
        entry = proc_table().get(pid)
        return entry is not None and entry[0] == os.getpid()

    def _reader(self, sess: Session) -> Callable[[int, int], None]:
        def on_readable(fd: int, mask: int) -> None:
            self._read(sess, fd)

        return on_readable

    def _read(self, sess: Session, fd: int) -> None:
        """Handle what the session's interpreter sent: ``started`` frames and cell replies."""
        while sess.ctl_r == fd:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                try:
                    self.host.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
                return
            for frame in sess.frames.feed(data):
                if frame.get("ev") == EV_STARTED:
                    sess.cell_started = True
                    sess.keep = frozenset((int(pid), int(start)) for pid, start in frame["keep"])
                elif frame.get("ev") == EV_DISPLAY:
                    self._display(sess, frame)
                else:
                    self._done(sess, frame, state_lost=False)

    def _display(self, sess: Session, frame: dict[str, Any]) -> None:
        """A rich output of the running cell: the output printed before it first, then the
        output itself, streamed to the host as an ``out`` event on the ``display`` stream."""
        rid = sess.active
        if rid is None:  # displayed by a background thread between cells: dropped, like its prints
            return
        if sess.shown[0] != rid:
            sess.shown = (rid, OutputBudget())
        items = capped_display_items(sess.shown[1], frame.get("a"))
        if not items:
            return
        for s in sess.streams:
            if not s.eof:
                self.host.read_stream(sess, s, drain=True)
        self.host.send({"id": rid, "ev": EV_OUT, "s": DISPLAY_STREAM, "a": items})

    def _done(self, sess: Session, reply: dict[str, Any], state_lost: bool) -> None:
        rid = sess.active
        if rid is None:
            return
        for s in sess.streams:
            if not s.eof:
                self.host.read_stream(sess, s, drain=True)
            tail = s.flush()
            if tail:
                self.host.send({"id": rid, "ev": EV_OUT, "s": s.name, "d": tail})
        sess.active = None
        state_lost = state_lost or sess.lost_pending
        sess.lost_pending = False
        self.host.send(
            {
                "id": rid,
                "ev": EV_DONE,
                **reply,
                "timed_out": sess.interrupted_at is not None,
                "state_lost": state_lost,
                "time": time.monotonic() - sess.started,
                "killed": sess.killed,
                "stdout_truncated": sess.streams[0].truncated,
                "stderr_truncated": sess.streams[1].truncated,
            }
        )
        sess.interrupted_at = None
        sess.cell_started = False

    def run(self, req: dict[str, Any]) -> None:
        name = req.get("name", "default")
        sess = self.table.get(name)
        if sess is None:
            raise KeyError(f"no session {name!r}")
        if sess.active is not None:
            raise RuntimeError(f"session {name!r} is busy")
        if sess.pid == 0:
            self._spawn(sess)
        timeout, grace = required(req, "timeout", float), required(req, "grace", float)
        cap, code = required(req, "max_output", int), required(req, "code", str)
        sess.active = req.get("id")
        sess.started = time.monotonic()
        sess.timeout = timeout
        sess.deadline = sess.started + timeout
        sess.grace = grace
        sess.interrupted_at = None
        sess.cell_started = False
        sess.keep = frozenset()
        sess.killed = 0
        for s in sess.streams:
            s.reset(cap)
        try:
            write_all(sess.ctl_w, encode({"code": code, "display": req.get("display")}))
        except OSError:
            self.lost(sess, "session process is gone")

    def kill(self, sess: Session) -> None:
        """End the session's interpreter and every process it has, background ones included."""
        pid, sess.pid = sess.pid, 0
        if pid:
            self.host.kill_and_reap(pid)
        self._cleanup(sess)

    def _cleanup(self, sess: Session) -> None:
        for s in sess.streams:
            self.host.close_stream(s)
        for fd in (sess.ctl_w, sess.ctl_r):
            if fd >= 0:
                try:
                    self.host.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
                os.close(fd)
        if sess.fork_sock is not None:
            sess.fork_sock.close()
            sess.fork_sock = None
        sess.ctl_w = sess.ctl_r = -1
        sess.pid = 0

    def lost(self, sess: Session, error: str, status: int | None = None) -> None:
        rid = sess.active
        pid, sess.pid = sess.pid, 0
        if pid and status is None:
            self.host.kill_and_reap(pid)
        if rid is not None:
            for s in sess.streams:
                if not s.eof:
                    self.host.read_stream(sess, s, drain=True)
        timed_out = sess.interrupted_at is not None
        if rid is not None:
            self._done(
                sess,
                {
                    "ok": False,
                    "value": None,
                    "error": error,
                    "interrupted": timed_out,
                    "rc": None if status is None else exit_code(status),
                },
                state_lost=True,
            )
        else:
            sess.lost_pending = True  # died while idle: the next cell reports state_lost
        self._cleanup(sess)
        sess.restarts += 1  # respawned lazily by the next session_run

    def timeout(self, sess: Session) -> None:
        """The running cell is past its deadline: freeze the interpreter, kill every process the
        cell started (children, grandchildren, daemons), then interrupt the cell with SIGINT. The
        interpreter itself and what earlier cells left running are spared, so the state is kept
        if the cell stops on the interrupt (see tick() for when it does not)."""
        pid = sess.pid
        try:
            os.kill(pid, signal.SIGSTOP)
        except OSError:
            return  # it is gone: reap() reports the loss
        try:
            if sess.ctl_r >= 0:
                self._read(sess, sess.ctl_r)  # a reply already sent wins over the deadline
            if sess.active is None:
                return
            sess.interrupted_at = time.monotonic()
            if sess.cell_started:  # else no user code ran yet: nothing to kill
                wait_stopped(pid, 0.2)
                killed = kill_cell_tree(pid, sess.keep)
                sess.killed = len(killed)
                # dead before the interrupt, so the interpreter reaps them all when the cell stops
                wait_dead(killed, 0.5)
            os.kill(pid, signal.SIGINT)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
