"""The alphora sandbox runner: a small, stdlib-only program that runs *inside* the sandbox.

It speaks length-prefixed JSON frames (4-byte big-endian length, then UTF-8 JSON) over its
stdin/stdout, which the backend connects to (pipes, an attached container socket …). See
docs/runner.md for the protocol table. It is shipped as source (see ``runner_source()``) and must
not import anything outside the standard library.

Each exec request runs in a forked child in its own session and process group; that child is a
child subreaper, so everything it starts (daemons included) stays in its process tree until the
runner kills the tree on timeout. Python code is exec'd in the fork (no new interpreter), shell
and argv requests fork+exec. Stateful sessions are long-lived forked interpreters. The runner is
single-threaded (a selector loop), so forking is safe.
"""

# The runner must survive anything user code does, so it deliberately catches everything at its
# boundaries (child setup, cell execution, the request loop).
# ruff: noqa: BLE001

from __future__ import annotations

import base64
import codecs
import gc
import os
import select
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

if "_ALPHORA_INLINED" in globals():  # shipped as one program: runner_source() put child.py first
    safefs: Any = globals()["_ALPHORA_SAFEFS"]
else:  # imported as a module of the alphora package
    from alphora.sandbox.runner import safefs
    from alphora.sandbox.runner.child import (
        FrameBuffer,
        Kernel,
        _prctl_subreaper,
        child_base,
        child_setup,
        encode,
        proc_table,
        run_job,
        spare_main,
        write_all,
    )

PROTOCOL_VERSION = 1
READ_SIZE = 65536
EXIT_GRACE = 0.1  # seconds to keep reading a call's pipes after its main process exited

# -- /proc --------------------------------------------------------------------------------------


def descendants(root: int, table: dict[int, tuple[int, int, int, int]], skip: frozenset[tuple[int, int]] = frozenset()) -> set[int]:
    """Every descendant of ``root``, leaving out the subtrees of the ``(pid, start time)`` in ``skip``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _, start) in table.items():
        if (pid, start) in skip:
            continue
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    stack = [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def freeze_and_kill(select: Callable[[dict[int, tuple[int, int, int, int]]], set[int]]) -> set[int]:
    """SIGSTOP the processes ``select`` picks from the process table, again and again until no new
    one appears (a stopped process cannot fork), then SIGKILL them all. Returns their pids."""
    me = os.getpid()
    frozen: set[int] = set()
    for _ in range(50):
        pids = select(proc_table())
        pids.discard(me)
        new = pids - frozen
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass
        frozen |= pids
        if not new:
            break
    for p in frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return frozen


def kill_tree(root: int, include_root: bool = True) -> set[int]:
    """Freeze then SIGKILL ``root``'s process group, its session and every descendant. Returns their pids."""

    def select(table: dict[int, tuple[int, int, int, int]]) -> set[int]:
        pids = descendants(root, table)
        pids |= {p for p, (_, pg, sid, _) in table.items() if pg == root or sid == root}
        if include_root and root in table:
            pids.add(root)
        if not include_root:
            pids.discard(root)
        return pids

    frozen = freeze_and_kill(select)
    if include_root:
        try:
            os.killpg(root, signal.SIGKILL)
        except OSError:
            pass
    return frozen


def kill_cell_tree(root: int, keep: frozenset[tuple[int, int]]) -> set[int]:
    """Freeze then SIGKILL every descendant of the session interpreter ``root`` except the subtrees
    of its children in ``keep`` (``(pid, start time)``: what it had before the cell began), so a
    timed-out cell's processes die and those earlier cells left running do not. Whatever the cell
    started is below a process it started (orphans come back to ``root``, a subreaper), and a
    process started before the cell cannot be below one started by it."""
    return freeze_and_kill(lambda table: descendants(root, table, keep))


def _state(pid: int) -> bytes:
    """The one-letter state of a process (``R``, ``S``, ``T``, ``Z`` …), ``b""`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return b""
    return data[data.rfind(b")") + 2 :][:1]


def _wait_states(pids: set[int], done: tuple[bytes, ...], within: float) -> set[int]:
    deadline = time.monotonic() + within
    while True:
        pids = {p for p in pids if _state(p) not in done}
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.002)


def wait_dead(pids: set[int], within: float) -> set[int]:
    """Wait (at most ``within`` s) until every pid is a zombie or gone; returns those that are not."""
    return _wait_states(pids, (b"", b"Z", b"X"), within)


def wait_stopped(pid: int, within: float) -> bool:
    """Wait (at most ``within`` s) until a SIGSTOPped process has really stopped (it cannot fork then)."""
    return not _wait_states({pid}, (b"", b"T", b"t", b"Z", b"X"), within)


# -- the runner ----------------------------------------------------------------------------------


def required(req: dict[str, Any], key: str, kind: Callable[[Any], Any]) -> Any:
    """A field the client always sends (the client validated it; the runner has no defaults)."""
    if key not in req:
        raise ValueError(f"{req.get('op')} request without {key!r}")
    return kind(req[key])


class Stream:
    """One output pipe of a call or session: capped, decoded incrementally."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.eof = False
        self.reset(0)

    def reset(self, cap: int) -> None:
        self.cap = cap
        self.count = 0
        self.truncated = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def take(self, data: bytes) -> str:
        room = self.cap - self.count
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self.count += len(data)
        return self.decoder.decode(data) if data else ""

    def flush(self) -> str:
        return self.decoder.decode(b"", True)


class Call:
    def __init__(self, rid: Any, pid: int, streams: list[Stream], timeout: float, stdin_fd: int, stdin: bytes) -> None:
        self.id = rid
        self.pid = pid
        self.streams = streams
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.status: int | None = None
        self.ended_at: float | None = None
        self.timed_out = False
        self.cancelled = False
        self.killed = 0
        self.stdin_fd = stdin_fd
        self.stdin = memoryview(stdin)


class Session:
    def __init__(self, name: str, env: dict[str, str], cwd: str) -> None:
        self.name = name
        self.env = env
        self.cwd = cwd
        self.pid = 0
        self.ctl_w = -1
        self.ctl_r = -1
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


class Runner:
    def __init__(self, fin: int, fout: int) -> None:
        self.fin = fin
        self.fout = fout
        self.sel = selectors.DefaultSelector()
        self.frames = FrameBuffer()
        self.calls: dict[int, Call] = {}  # pid -> call
        self.sessions: dict[str, Session] = {}
        self.running = True
        self.workspace = os.getcwd()
        self.env: dict[str, str] = dict(os.environ)
        self.limits: dict[str, Any] = {}
        self.memory_cgroup = False  # the sandbox is the memory cgroup at /sys/fs/cgroup (a container)
        self.cpu_sample: tuple[float, float] | None = None
        self.preload: list[str] = []
        #: a pre-forked child waiting for the next exec: (pid, ctl_w, out_r, err_r, in_w)
        self.spare: tuple[int, int, int, int, int] | None = None
        self.use_spares = True
        self.want_spare = False
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, self._sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.set_blocking(fin, False)
        os.set_blocking(fout, True)
        self.sel.register(fin, selectors.EVENT_READ, self._on_input)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_wake)

    def _sigterm(self, *a: Any) -> None:
        self.running = False

    # output to the host
    def send(self, msg: dict[str, Any]) -> None:
        try:
            write_all(self.fout, encode(msg))
        except OSError:
            self.running = False

    def _on_wake(self, fd: int, mask: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass

    def _on_input(self, fd: int, mask: int) -> None:
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.running = False
            self.sel.unregister(fd)
            return
        try:
            requests = self.frames.feed(data)
        except ValueError:  # garbage on the stream: nothing after it can be trusted
            traceback.print_exc()
            self.running = False
            return
        for req in requests:
            try:
                self.handle(req)
            except Exception as exc:
                self.send(self._error(req.get("id"), exc))

    @staticmethod
    def _error(rid: Any, exc: BaseException) -> dict[str, Any]:
        msg: dict[str, Any] = {"id": rid, "ev": "error", "etype": type(exc).__name__, "msg": str(exc)}
        path = getattr(exc, "path", None) or getattr(exc, "filename", None)
        if path is not None:
            msg["path"] = str(path)
        if isinstance(exc, OSError) and exc.errno:
            msg["errno"] = exc.errno
            msg["msg"] = exc.strerror or str(exc)
        return msg

    # requests
    def handle(self, req: dict[str, Any]) -> None:
        op = req.get("op")
        rid = req.get("id")
        if op == "ping":
            self.send({"id": rid, "ev": "done", "pid": os.getpid(), "time": time.time()})
        elif op == "hello":
            self.hello(req)
        elif op == "exec":
            self.exec(req)
        elif op == "cancel":
            for call in self.calls.values():
                if call.id == req.get("target") and call.status is None:
                    call.cancelled = True
                    self._kill_and_reap(call.pid, call)
            self.send({"id": rid, "ev": "done"})
        elif op == "fs":
            self.send({"id": rid, "ev": "done", **self.fs(req)})
        elif op == "usage":
            self.send({"id": rid, "ev": "done", **self.usage()})
        elif op == "session_open":
            self.session_open(req)
        elif op == "session_run":
            self.session_run(req)
        elif op == "session_close":
            sess = self.sessions.pop(req.get("name", "default"), None)
            if sess is not None:
                self._session_kill(sess)
            self.send({"id": rid, "ev": "done", "existed": sess is not None})
        elif op == "shutdown":
            self.shutdown()
            self.send({"id": rid, "ev": "done"})
            self.running = False
        else:
            raise ValueError(f"unknown op {op!r}")

    def hello(self, req: dict[str, Any]) -> None:
        if req.get("workspace"):
            self.workspace = req["workspace"]
            os.makedirs(self.workspace, exist_ok=True)
            os.chdir(self.workspace)
        if "env" in req:
            self.env = dict(req["env"])
        self.limits = dict(req.get("limits") or {})
        self.memory_cgroup = bool(req.get("memory_cgroup"))
        self.use_spares = bool(req.get("spares", True))
        self._drop_spare()
        # imported one per idle loop turn after this reply, so the first call need not wait
        self.preload = list(req.get("preload") or ())
        self.send({"id": req.get("id"), "ev": "done", "pid": os.getpid(), "version": PROTOCOL_VERSION,
                   "python": sys.executable, "python_version": list(sys.version_info[:3])})

    def _cwd(self, rel: str) -> str:
        parts = safefs.split(rel or "")
        return os.path.join(self.workspace, *parts)

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra or {})
        return env

    def exec(self, req: dict[str, Any]) -> None:
        kind = req.get("kind", "python")
        code = req.get("code", "")
        argv = list(req.get("argv") or [])
        env = self._env(req.get("env"))
        cwd = self._cwd(req.get("cwd", ""))
        stdin = base64.b64decode(req["stdin"]) if req.get("stdin") else b""
        timeout, cap = required(req, "timeout", float), required(req, "max_output", int)
        if kind not in ("python", "file", "shell", "argv"):
            raise ValueError(f"unknown kind {kind!r}")
        if kind in ("file", "argv") and not argv:
            raise ValueError(f"{kind} request without argv")
        job = {"kind": kind, "code": code, "argv": argv, "env": env, "cwd": cwd, "limits": self.limits}
        spare = self._take_spare()
        if spare is not None:
            pid, out_r, err_r, in_w = spare[0], spare[2], spare[3], spare[4]
            try:
                write_all(spare[1], encode(job))
            except OSError:  # the spare died meanwhile: forget it, fork as usual
                for fd in spare[1:]:
                    os.close(fd)
                spare = None
            else:
                os.close(spare[1])
        if spare is None:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            in_r, in_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                try:
                    child_base(in_r, out_w, err_w)
                except BaseException:
                    os._exit(125)
                run_job(job)
            for fd in (out_w, err_w, in_r):
                os.close(fd)
        self.want_spare = self.use_spares
        streams = [Stream("stdout", out_r), Stream("stderr", err_r)]
        for s in streams:
            s.reset(cap)
        call = Call(req.get("id"), pid, streams, timeout, in_w, stdin)
        self.calls[pid] = call
        for s in streams:
            os.set_blocking(s.fd, False)
            self.sel.register(s.fd, selectors.EVENT_READ, self._reader(call, s))
        os.set_blocking(in_w, False)
        if stdin:
            self.sel.register(in_w, selectors.EVENT_WRITE, self._stdin_writer(call))
        else:
            os.close(in_w)
            call.stdin_fd = -1

    def calls_starting(self) -> bool:
        """True when input is waiting (serve requests before doing idle work)."""
        ready, _, _ = select.select([self.fin], [], [], 0)
        return bool(ready)

    def _preload_one(self) -> None:
        mod = self.preload.pop(0)
        try:
            __import__(mod)
        except Exception:
            pass
        if not self.preload:  # warm now: freeze the heap and refresh the spare so it is warm too
            gc.collect()
            if hasattr(gc, "freeze"):
                gc.freeze()
            self._drop_spare()
            self.want_spare = self.use_spares

    def _make_spare(self) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            spare_main(in_r, out_w, err_w, ctl_r)
            os._exit(0)
        for fd in (out_w, err_w, in_r, ctl_r):
            os.close(fd)
        self.spare = (pid, ctl_w, out_r, err_r, in_w)

    def _take_spare(self) -> tuple[int, int, int, int, int] | None:
        spare, self.spare = self.spare, None
        return spare

    def _drop_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            for fd in spare[1:]:
                os.close(fd)  # EOF on its control pipe: the spare exits by itself

    def _stdin_writer(self, call: Call) -> Callable[[int, int], None]:
        def on_writable(fd: int, mask: int) -> None:
            try:
                n = os.write(fd, call.stdin[:READ_SIZE])
                call.stdin = call.stdin[n:]
            except BlockingIOError:
                return
            except OSError:
                call.stdin = memoryview(b"")
            if not call.stdin:
                self.sel.unregister(fd)
                os.close(fd)
                call.stdin_fd = -1

        return on_writable

    def _reader(self, owner: Any, stream: Stream) -> Callable[[int, int], None]:
        def on_readable(fd: int, mask: int) -> None:
            self._read_stream(owner, stream)

        return on_readable

    def _read_stream(self, owner: Any, stream: Stream, drain: bool = False) -> None:
        while True:
            try:
                data = os.read(stream.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_stream(stream)
                return
            rid = owner.id if isinstance(owner, Call) else owner.active
            if rid is None:  # output of an idle session (a background thread): dropped
                if drain:
                    continue
                return
            text = stream.take(data)
            if text:
                self.send({"id": rid, "ev": "out", "s": stream.name, "d": text})
            if not drain:
                return

    def _close_stream(self, stream: Stream) -> None:
        if not stream.eof:
            stream.eof = True
            try:
                self.sel.unregister(stream.fd)
            except (KeyError, ValueError):
                pass
            os.close(stream.fd)

    def _finish_call(self, call: Call) -> None:
        for s in call.streams:
            if not s.eof:
                self._read_stream(call, s, drain=True)
                self._close_stream(s)
        for s in call.streams:
            tail = s.flush()
            if tail:
                self.send({"id": call.id, "ev": "out", "s": s.name, "d": tail})
        if call.stdin_fd >= 0:
            try:
                self.sel.unregister(call.stdin_fd)
            except (KeyError, ValueError):
                pass
            os.close(call.stdin_fd)
        status = call.status or 0
        rc = os.waitstatus_to_exitcode(status) if call.status is not None else None
        self.send({
            "id": call.id, "ev": "done", "rc": rc, "timed_out": call.timed_out, "cancelled": call.cancelled,
            "stdout_truncated": call.streams[0].truncated, "stderr_truncated": call.streams[1].truncated,
            "time": (call.ended_at or time.monotonic()) - call.started, "killed": call.killed,
        })

    # sessions
    def session_open(self, req: dict[str, Any]) -> None:
        name = req.get("name", "default")
        sess = self.sessions.get(name)
        if sess is None:
            sess = Session(name, self._env(req.get("env")), self._cwd(req.get("cwd", "")))
            self.sessions[name] = sess
            self._session_spawn(sess)
        self.send({"id": req.get("id"), "ev": "done", "pid": sess.pid})

    def _session_spawn(self, sess: Session) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        pid = os.fork()
        if pid == 0:
            try:
                child_setup(null, out_w, err_w, (req_r, res_w), sess.cwd, sess.env, self.limits)
                Kernel().serve()
            except BaseException:
                traceback.print_exc()
            os._exit(1)
        for fd in (out_w, err_w, req_r, res_w, null):
            os.close(fd)
        sess.pid = pid
        sess.ctl_w = req_w
        sess.ctl_r = res_r
        sess.frames = FrameBuffer()
        sess.streams = [Stream("stdout", out_r), Stream("stderr", err_r)]
        for s in sess.streams:
            os.set_blocking(s.fd, False)
            self.sel.register(s.fd, selectors.EVENT_READ, self._reader(sess, s))
        os.set_blocking(res_r, False)
        self.sel.register(res_r, selectors.EVENT_READ, self._session_reader(sess))

    def _session_reader(self, sess: Session) -> Callable[[int, int], None]:
        def on_readable(fd: int, mask: int) -> None:
            self._session_read(sess, fd)

        return on_readable

    def _session_read(self, sess: Session, fd: int) -> None:
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
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
                return
            for frame in sess.frames.feed(data):
                if frame.get("ev") == "started":
                    sess.cell_started = True
                    sess.keep = frozenset((int(pid), int(start)) for pid, start in frame["keep"])
                else:
                    self._session_done(sess, frame, state_lost=False)

    def _session_done(self, sess: Session, reply: dict[str, Any], state_lost: bool) -> None:
        rid = sess.active
        if rid is None:
            return
        for s in sess.streams:
            if not s.eof:
                self._read_stream(sess, s, drain=True)
            tail = s.flush()
            if tail:
                self.send({"id": rid, "ev": "out", "s": s.name, "d": tail})
        sess.active = None
        state_lost = state_lost or sess.lost_pending
        sess.lost_pending = False
        self.send({
            "id": rid, "ev": "done", **reply, "timed_out": sess.interrupted_at is not None,
            "state_lost": state_lost, "time": time.monotonic() - sess.started, "killed": sess.killed,
            "stdout_truncated": sess.streams[0].truncated, "stderr_truncated": sess.streams[1].truncated,
        })
        sess.interrupted_at = None
        sess.cell_started = False

    def session_run(self, req: dict[str, Any]) -> None:
        name = req.get("name", "default")
        sess = self.sessions.get(name)
        if sess is None:
            raise KeyError(f"no session {name!r}")
        if sess.active is not None:
            raise RuntimeError(f"session {name!r} is busy")
        if sess.pid == 0:
            self._session_spawn(sess)
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
            write_all(sess.ctl_w, encode({"code": code}))
        except OSError:
            self._session_lost(sess, "session process is gone")

    def _session_kill(self, sess: Session) -> None:
        """End the session's interpreter and every process it has, background ones included."""
        pid, sess.pid = sess.pid, 0
        if pid:
            self._kill_and_reap(pid)
        self._session_cleanup(sess)

    def _session_cleanup(self, sess: Session) -> None:
        for s in sess.streams:
            self._close_stream(s)
        for fd in (sess.ctl_w, sess.ctl_r):
            if fd >= 0:
                try:
                    self.sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
                os.close(fd)
        sess.ctl_w = sess.ctl_r = -1
        sess.pid = 0

    def _session_lost(self, sess: Session, error: str, status: int | None = None) -> None:
        rid = sess.active
        pid, sess.pid = sess.pid, 0
        if pid and status is None:
            self._kill_and_reap(pid)
        if rid is not None:
            for s in sess.streams:
                if not s.eof:
                    self._read_stream(sess, s, drain=True)
        timed_out = sess.interrupted_at is not None
        if rid is not None:
            self._session_done(sess, {"ok": False, "value": None, "error": error, "interrupted": timed_out,
                                      "attachments": [], "rc": None if status is None else
                                      os.waitstatus_to_exitcode(status)}, state_lost=True)
        else:
            sess.lost_pending = True  # died while idle: the next cell reports state_lost
        self._session_cleanup(sess)
        sess.restarts += 1  # respawned lazily by the next session_run

    def _session_timeout(self, sess: Session) -> None:
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
                self._session_read(sess, sess.ctl_r)  # a reply already sent wins over the deadline
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

    # housekeeping
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and self.spare[0] == pid:
                self._drop_spare()
                continue
            call = self.calls.get(pid)
            if call is not None:
                call.status = status
                call.ended_at = time.monotonic()
                continue
            for sess in self.sessions.values():
                if sess.pid == pid:
                    code = os.waitstatus_to_exitcode(status)
                    sess.pid = 0
                    self._session_lost(sess, f"the session's Python process died (exit code {code}); state was lost",
                                       status)
                    break

    def _kill_and_reap(self, pid: int, call: Call | None = None, within: float = 0.5) -> None:
        """Kill a call's (or a session's) tree and wait (briefly) until every killed process is
        reaped, so that nothing of it is visible, not even as a zombie, when the result goes out."""
        killed = kill_tree(pid)
        if call is not None:
            call.killed = max(call.killed, len(killed))
        deadline = time.monotonic() + within
        while killed and time.monotonic() < deadline:
            self.reap()
            killed = {p for p in killed if os.path.exists(f"/proc/{p}")}
            if killed:
                time.sleep(0.002)

    def tick(self) -> float | None:
        """Enforce deadlines, finish calls; returns the time until the next deadline."""
        now = time.monotonic()
        wait: float | None = None
        for pid, call in list(self.calls.items()):
            if call.status is None:
                if now >= call.deadline:
                    call.timed_out = True
                    self._kill_and_reap(pid, call)
                    call.deadline = now + 1.0
                left = call.deadline - now
            else:
                done = all(s.eof for s in call.streams)
                assert call.ended_at is not None
                if done or now >= call.ended_at + EXIT_GRACE:
                    del self.calls[pid]
                    self._finish_call(call)
                    continue
                left = call.ended_at + EXIT_GRACE - now
            wait = left if wait is None else min(wait, left)
        for sess in list(self.sessions.values()):
            if sess.active is None:
                continue
            if sess.interrupted_at is None and now >= sess.deadline:
                self._session_timeout(sess)
                if sess.active is None:  # its reply was already on the way
                    continue
                left = sess.grace
            elif sess.interrupted_at is not None and now >= sess.interrupted_at + sess.grace:
                self._session_lost(sess, f"the cell did not stop within {sess.grace:g}s of KeyboardInterrupt; "
                                         "the session was restarted and its state was lost")
                continue
            else:
                left = (sess.deadline if sess.interrupted_at is None else sess.interrupted_at + sess.grace) - now
            wait = left if wait is None else min(wait, left)
        return None if wait is None else max(wait, 0.0)

    def serve(self) -> None:
        wait: float | None = None
        while self.running:
            try:
                for key, mask in self.sel.select(wait):
                    key.data(key.fd, mask)
                self.reap()
                wait = self.tick()
                if self.preload and not self.calls_starting():
                    self._preload_one()
                    wait = 0.0 if self.preload else wait
                if self.want_spare and self.spare is None and self.running:
                    self.want_spare = False
                    self._make_spare()
            except Exception:
                traceback.print_exc()
                wait = 0.05
        self.shutdown()

    def shutdown(self) -> None:
        self._drop_spare()
        for sess in list(self.sessions.values()):
            self._session_kill(sess)
        self.sessions.clear()
        for pid in list(self.calls):
            kill_tree(pid)
        kill_tree(os.getpid(), include_root=False)
        self.reap()

    # files and usage
    def fs(self, req: dict[str, Any]) -> dict[str, Any]:
        fn = req["fn"]
        root = self.workspace
        path = req.get("path", "")
        if fn == "read":
            return {"data": base64.b64encode(safefs.read(root, path, req.get("max_size"))).decode()}
        if fn == "write":
            safefs.write(root, path, base64.b64decode(req["data"]), req.get("max_size"))
            return {}
        if fn == "stat":
            return {"entry": safefs.stat(root, path)}
        if fn == "list":
            return {"entries": safefs.listdir(root, path, bool(req.get("recursive")))}
        if fn == "remove":
            return {"removed": safefs.remove(root, path)}
        if fn == "copy":
            safefs.copy(root, req["src"], req["dst"])
            return {}
        if fn == "move":
            safefs.move(root, req["src"], req["dst"])
            return {}
        if fn == "mkdir":
            safefs.mkdir(root, path)
            return {}
        raise ValueError(f"unknown fs function {fn!r}")

    def usage(self) -> dict[str, Any]:
        table = proc_table()
        me = os.getpid()
        pids = descendants(me, table) | {me}
        tick = os.sysconf("SC_CLK_TCK")
        cpu = 0.0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    data = f.read()
                fields = data[data.rfind(b")") + 2 :].split()
                cpu += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                continue
        now = time.monotonic()
        prev = self.cpu_sample
        self.cpu_sample = (now, cpu)
        percent = 0.0
        if prev is not None and now > prev[0]:
            percent = max(0.0, (cpu - prev[1]) / (now - prev[0]) * 100.0)
        found = cgroup_memory() if self.memory_cgroup else None
        used, limit = found if found is not None else (sum(process_memory(pid) for pid in pids), 0)
        limit = limit or int(self.limits.get("memory_bytes") or 0) or mem_total()
        try:
            disk = safefs.disk_usage(self.workspace)
        except OSError:
            disk = 0
        return {"cpu_percent": percent, "memory_bytes": used, "memory_percent": (used / limit * 100) if limit else 0.0,
                "disk_bytes": disk, "process_count": len(pids)}


# -- memory -------------------------------------------------------------------------------------

#: (usage, stat file, its inactive-file key, limit) of the memory cgroup seen at /sys/fs/cgroup: v2, v1
CGROUP_MEMORY = (
    ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file", "/sys/fs/cgroup/memory.max"),
    ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file",
     "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def cgroup_memory() -> tuple[int, int] | None:
    """(bytes used, limit or 0) of the memory cgroup mounted at /sys/fs/cgroup (a container's own):
    its usage minus the inactive file cache the kernel can drop at once, which is what ``docker
    stats`` shows. None when there is no readable memory cgroup."""
    for usage_file, stat_file, inactive_key, limit_file in CGROUP_MEMORY:
        try:
            usage = int(_read(usage_file))
        except (OSError, ValueError):
            continue
        inactive = 0
        try:
            for line in _read(stat_file).splitlines():
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    inactive = int(value)
                    break
        except (OSError, ValueError):
            pass
        try:
            limit = int(_read(limit_file))
        except (OSError, ValueError):  # "max": no limit
            limit = 0
        return max(usage - inactive, 0), (limit if 0 < limit < 1 << 60 else 0)
    return None


def process_memory(pid: int) -> int:
    """The process's proportional set size (PSS): its private pages plus its share of the pages it
    shares (a page shared by N processes counts 1/N in each), so summing over processes that fork
    from one another counts every page once. Falls back to the resident set size."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2 :].split()[21]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def main() -> None:
    fin = os.dup(0)
    fout = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol stream
    os.close(null)
    sys.stdout = sys.stderr
    _prctl_subreaper()
    Runner(fin, fout).serve()
    os._exit(0)


if __name__ in ("__main__", "__alphora_runner__"):
    main()
