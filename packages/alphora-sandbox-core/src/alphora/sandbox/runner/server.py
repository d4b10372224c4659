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
import fcntl
import gc
import os
import select
import selectors
import signal
import struct
import sys
import termios
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import forward, safefs
from .child import child_base, run_job, spare_main
from .leftovers import Leftovers
from .proctree import exit_code, kill_tree, pids_cgroup_dir, prctl_subreaper, usage_of
from .protocol import (
    BIN,
    CHUNK,
    CHUNK_MAX,
    EV_DONE,
    EV_ERROR,
    EV_OUT,
    PROTOCOL_VERSION,
    WINDOW,
    FrameBuffer,
    chunk_header,
    encode,
    write_all,
)
from .sessions import Sessions
from .streams import READ_SIZE, Call, Stream, required

EXIT_GRACE = 0.1  # seconds to keep reading a call's pipes after its main process exited


class Runner:
    def __init__(self, fin: int, fout: int) -> None:
        self.fin = fin
        self.fout = fout
        self.sel = selectors.DefaultSelector()
        self.frames = FrameBuffer(binary=True)
        #: ``put`` requests receiving binary frames: id -> the open atomic write (None: it failed,
        #: its error is sent; its remaining frames are dropped until the empty one)
        self.uploads: dict[int, safefs.Writer | None] = {}
        #: ``get`` requests sending binary frames: id -> [fd, frames it may still send, chunk size]
        self.downloads: dict[int, list[int]] = {}
        self.calls: dict[int, Call] = {}  # pid -> call
        self.sessions = Sessions(self)
        self.leftovers = Leftovers(self)
        self.running = True
        self.workspace = os.getcwd()
        self.env: dict[str, str] = dict(os.environ)
        self.limits: dict[str, Any] = {}
        self.memory_cgroup = False  # the sandbox is the memory cgroup at /sys/fs/cgroup (a container)
        self.cpu_sample: tuple[float, float] | None = None
        self.preload: list[str] = []
        #: the egress forwarder's pid (see forward.py), when the sandbox has an egress policy
        self.forwarder = 0
        #: a pre-forked child waiting for the next exec: (pid, ctl_w, out_r, err_r, in_w)
        self.spare: tuple[int, int, int, int, int] | None = None
        self.use_spares = True
        self.want_spare = False
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        # a mask inherited from the spawning thread (Ray's worker threads block SIGINT) would reach the
        # session kernels, whose cells could then never be interrupted: start from an empty one
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
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
                if BIN in req:
                    self.upload_chunk(req["id"], req[BIN])
                else:
                    self.handle(req)
            except Exception as exc:
                self.send(self._error(req.get("id"), exc))

    @staticmethod
    def _error(rid: Any, exc: BaseException) -> dict[str, Any]:
        msg: dict[str, Any] = {"id": rid, "ev": EV_ERROR, "etype": type(exc).__name__, "msg": str(exc)}
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
            self.send({"id": rid, "ev": EV_DONE, "pid": os.getpid(), "time": time.time()})
        elif op == "hello":
            self.hello(req)
        elif op == "exec":
            self.exec(req)
        elif op == "put":
            self.put(req)
        elif op == "get":
            self.get(req)
        elif op == "more":
            target = req.get("target")
            dl = self.downloads.get(target) if isinstance(target, int) else None
            if dl is not None:
                dl[1] += max(0, int(req.get("n", 1)))
        elif op == "cancel":
            self.drop_transfer(req.get("target"))
            for call in self.calls.values():
                if call.id == req.get("target") and call.status is None:
                    call.cancelled = True
                    self.kill_and_reap(call.pid, call)
            self.send({"id": rid, "ev": EV_DONE})
        elif op == "fs":
            self.send({"id": rid, "ev": EV_DONE, **self.fs(req)})
        elif op == "usage":
            self.send({"id": rid, "ev": EV_DONE, **self.usage()})
        elif op == "session_open":
            self.sessions.open(req)
        elif op == "session_run":
            self.sessions.run(req)
        elif op == "session_fork":
            self.sessions.fork(req)
        elif op == "session_close":
            self.send({"id": rid, "ev": EV_DONE, "existed": self.sessions.close(req)})
        elif op == "shutdown":
            self.shutdown()
            self.send({"id": rid, "ev": EV_DONE})
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
        self.leftovers.cgroup = pids_cgroup_dir()
        self._drop_spare()
        if req.get("egress") and not self.forwarder:
            # before any call: no user process ever holds the listener
            self.forwarder = forward.start(req["egress"])
            self.leftovers.kept.add(self.forwarder)
        # imported one per idle loop turn after this reply, so the first call need not wait
        self.preload = list(req.get("preload") or ())
        self.send(
            {
                "id": req.get("id"),
                "ev": EV_DONE,
                "pid": os.getpid(),
                "version": PROTOCOL_VERSION,
                "python": sys.executable,
                "python_version": list(sys.version_info[:3]),
            }
        )

    def call_cwd(self, rel: str) -> str:
        parts = safefs.split(rel or "")
        return os.path.join(self.workspace, *parts)

    def call_env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra or {})
        return env

    def exec(self, req: dict[str, Any], use_spare: bool = True) -> None:
        kind = req.get("kind", "python")
        code = req.get("code", "")
        argv = list(req.get("argv") or [])
        env = self.call_env(req.get("env"))
        cwd = self.call_cwd(req.get("cwd", ""))
        stdin = base64.b64decode(req["stdin"]) if req.get("stdin") else b""
        timeout, cap = required(req, "timeout", float), required(req, "max_output", int)
        if kind not in ("python", "file", "shell", "argv"):
            raise ValueError(f"unknown kind {kind!r}")
        if kind in ("file", "argv") and not argv:
            raise ValueError(f"{kind} request without argv")
        job = {"kind": kind, "code": code, "argv": argv, "env": env, "cwd": cwd, "limits": self.limits}
        spare = self._take_spare() if use_spare else None
        job_fd = -1
        if spare is not None:
            pid, out_r, err_r, in_w = spare[0], spare[2], spare[3], spare[4]
            try:
                write_all(spare[1], encode(job))
            except OSError:  # the spare died meanwhile: forget it, fork as usual
                for fd in spare[1:]:
                    os.close(fd)
                spare = None
            else:
                job_fd = spare[1]  # kept until the call ends: see _spare_never_started
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
        call.keep_background = bool(req.get("keep_background", True))
        call.job_fd, call.request = job_fd, req
        self.calls[pid] = call
        for s in streams:
            os.set_blocking(s.fd, False)
            self.sel.register(s.fd, selectors.EVENT_READ, self.reader(call, s))
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

    def reader(self, owner: Any, stream: Stream) -> Callable[[int, int], None]:
        def on_readable(fd: int, mask: int) -> None:
            self.read_stream(owner, stream)

        return on_readable

    def read_stream(self, owner: Any, stream: Stream, drain: bool = False) -> None:
        while True:
            try:
                data = os.read(stream.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close_stream(stream)
                return
            rid = owner.id if isinstance(owner, Call) else owner.active
            if rid is None:  # output of an idle session (a background thread): dropped
                if drain:
                    continue
                return
            text = stream.take(data)
            if text:
                self.send({"id": rid, "ev": EV_OUT, "s": stream.name, "d": text})
            if not drain:
                return

    def close_stream(self, stream: Stream) -> None:
        if not stream.eof:
            stream.eof = True
            try:
                self.sel.unregister(stream.fd)
            except (KeyError, ValueError):
                pass
            os.close(stream.fd)

    def _spare_never_started(self, call: Call) -> bool:
        """True when the call's spare died before it read its job (earlier user code can find and
        kill the spare; a SIGKILL still pending when the job is written lets the write succeed).
        Bytes left in the job pipe prove it: nothing of the job ran, so it is safe to run it again."""
        fd, call.job_fd = call.job_fd, -1
        if fd < 0:
            return False
        try:
            unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            unread = 0
        os.close(fd)
        return unread > 0 and not (call.timed_out or call.cancelled)

    def _finish_call(self, call: Call) -> None:
        if self._spare_never_started(call) and call.request is not None:
            for s in call.streams:
                self.close_stream(s)
            if call.stdin_fd >= 0:
                try:
                    self.sel.unregister(call.stdin_fd)
                except (KeyError, ValueError):
                    pass
                os.close(call.stdin_fd)
            self.exec(call.request, use_spare=False)  # same request id, a freshly forked child
            return
        for s in call.streams:
            if not s.eof:
                self.read_stream(call, s, drain=True)
                self.close_stream(s)
        for s in call.streams:
            tail = s.flush()
            if tail:
                self.send({"id": call.id, "ev": EV_OUT, "s": s.name, "d": tail})
        if call.stdin_fd >= 0:
            try:
                self.sel.unregister(call.stdin_fd)
            except (KeyError, ValueError):
                pass
            os.close(call.stdin_fd)
        status = call.status or 0
        rc = exit_code(status) if call.status is not None else None
        self.send(
            {
                "id": call.id,
                "ev": EV_DONE,
                "rc": rc,
                "timed_out": call.timed_out,
                "cancelled": call.cancelled,
                "stdout_truncated": call.streams[0].truncated,
                "stderr_truncated": call.streams[1].truncated,
                "time": (call.ended_at or time.monotonic()) - call.started,
                "killed": call.killed,
                "leftover_killed": call.leftover_killed,
                "leftover_reason": call.leftover_reason,
            }
        )

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
            self.leftovers.exited(pid)
            self.sessions.exited(pid, status)

    def kill_and_reap(self, pid: int, call: Call | None = None, within: float = 0.5) -> None:
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
                    self.kill_and_reap(pid, call)
                    call.deadline = now + 1.0
                left = call.deadline - now
            else:
                watching = self._judge_leftovers(call, now)
                if watching:
                    wait = watching if wait is None else min(wait, watching)
                    continue
                now = time.monotonic()
                done = all(s.eof for s in call.streams)
                assert call.ended_at is not None
                if done or now >= call.ended_at + EXIT_GRACE:
                    del self.calls[pid]
                    self._finish_call(call)
                    continue
                left = call.ended_at + EXIT_GRACE - now
            wait = left if wait is None else min(wait, left)
        left_s = self.sessions.tick(now)
        if left_s is not None:
            wait = left_s if wait is None else min(wait, left_s)
        return None if wait is None else max(wait, 0.0)

    def _judge_leftovers(self, call: Call, now: float) -> float:
        """Apply the background-process rule (leftovers.py) to a call whose main process exited:
        the seconds until its leftover tree must be looked at again, 0 when it is judged."""
        if call.watch is None:
            if call.judged:
                return 0.0
            call.judged = True
            call.watch = self.leftovers.begin(call.pid, call.keep_background, now)
            if call.watch is None:  # it left nothing running
                return 0.0
        watch = call.watch
        left = self.leftovers.step(watch, now)
        if not watch.done:
            return max(left, 1e-3)
        call.watch = None
        call.leftover_killed, call.leftover_reason = watch.killed, watch.reason
        if watch.killed and self.spare is None:  # a full pids cgroup may have refused the spare
            self.want_spare = self.use_spares
        return 0.0

    def serve(self) -> None:
        wait: float | None = None
        while self.running:
            try:
                for key, mask in self.sel.select(wait):
                    key.data(key.fd, mask)
                self.reap()
                wait = self.tick()
                if self.downloads and self.pump_downloads():
                    wait = 0.0
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
        for rid in [*self.uploads, *self.downloads]:
            self.drop_transfer(rid)
        self._drop_spare()
        self.sessions.shutdown()
        for pid in list(self.calls):
            kill_tree(pid)
        kill_tree(os.getpid(), include_root=False)
        self.reap()

    # files and usage
    def fs(self, req: dict[str, Any]) -> dict[str, Any]:
        fn = req["fn"]
        root = self.workspace
        path = req.get("path", "")
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

    # file contents: binary frames
    def put(self, req: dict[str, Any]) -> None:
        """Open an atomic write; the request's binary frames feed it, the empty one commits it."""
        rid = req.get("id")
        if not isinstance(rid, int):
            raise ValueError("put without an integer id")
        try:
            self.uploads[rid] = safefs.Writer(self.workspace, req.get("path", ""), req.get("max_size"))
        except Exception:
            self.uploads[rid] = None  # drop its frames until the empty one
            raise

    def upload_chunk(self, rid: int, data: bytes) -> None:
        if rid not in self.uploads:
            return  # cancelled: its frames still in flight are dropped
        writer = self.uploads[rid]
        if not data:  # the end of the upload
            del self.uploads[rid]
            if writer is not None:
                try:
                    writer.commit()
                except Exception as exc:
                    self.send(self._error(rid, exc))
                    return
                self.send({"id": rid, "ev": EV_DONE, "size": writer.size})
            return
        if writer is None:
            return
        try:
            writer.write(data)
        except Exception as exc:  # the writer removed its temp file
            self.uploads[rid] = None
            self.send(self._error(rid, exc))

    def get(self, req: dict[str, Any]) -> None:
        """Send a file in binary frames, at most ``window`` ahead of the host's ``more`` grants."""
        rid = req.get("id")
        if not isinstance(rid, int):
            raise ValueError("get without an integer id")
        chunk = int(req.get("chunk") or CHUNK)
        if not 0 < chunk <= CHUNK_MAX:
            raise ValueError(f"chunk of {chunk} bytes: between 1 and {CHUNK_MAX}")
        fd = safefs.open_read(self.workspace, req.get("path", ""))
        self.downloads[rid] = [fd, max(1, int(req.get("window") or WINDOW)), chunk]
        self.send({"id": rid, "ev": EV_OUT, "size": os.fstat(fd).st_size})

    def pump_downloads(self) -> bool:
        """One binary frame for every download with credit; True while some still have credit."""
        more = False
        for rid, dl in list(self.downloads.items()):
            if dl[1] <= 0:
                continue
            try:
                data = os.read(dl[0], dl[2])
            except OSError as exc:
                self.drop_transfer(rid)
                self.send(self._error(rid, exc))
                continue
            if not data:
                self.drop_transfer(rid)
                self.send({"id": rid, "ev": EV_DONE})
                continue
            dl[1] -= 1
            try:
                write_all(self.fout, chunk_header(rid, len(data)))
                write_all(self.fout, data)
            except OSError:
                self.running = False
                return False
            more = more or dl[1] > 0
        return more

    def drop_transfer(self, rid: Any) -> None:
        """Forget a ``put`` (its temp file removed) or ``get`` (its fd closed)."""
        writer = self.uploads.pop(rid, None)
        if writer is not None:
            writer.abort()
        dl = self.downloads.pop(rid, None)
        if dl is not None:
            os.close(dl[0])

    def usage(self) -> dict[str, Any]:
        now = time.monotonic()
        report, cpu = usage_of(
            os.getpid(), self.cpu_sample, now, self.memory_cgroup, int(self.limits.get("memory_bytes") or 0)
        )
        self.cpu_sample = (now, cpu)
        try:
            report["disk_bytes"] = safefs.disk_usage(self.workspace)
        except OSError:
            report["disk_bytes"] = 0
        return report


def main() -> None:
    fin = os.dup(0)
    fout = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol stream
    os.close(null)
    sys.stdout = sys.stderr
    prctl_subreaper()
    Runner(fin, fout).serve()
    os._exit(0)


if __name__ == "__main__":
    main()
