"""The sandbox's end of egress: ``127.0.0.1:<port>`` piped to the host proxy's unix socket.

Part of the runner program (stdlib only, Python 3.8+). A sandbox with an egress policy has no
network but loopback; the host-side proxy (:mod:`alphora.sandbox.egress`) listens on a unix socket
in a directory bind-mounted into the sandbox. :func:`start` binds the TCP listener in the runner
(so a port that cannot be bound is an error of the runner's start, naming the cause) and forks one
process that accepts connections and copies bytes both ways, unchanged, between each one and a new
connection to the unix socket. It enforces nothing: the proxy on the host checks every request.
It exits when the runner is gone (its parent changes) and is killed with the runner's tree on stop.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
from typing import Any

#: bytes read at once, and the most one direction buffers before it stops reading
CHUNK = 65536
#: seconds between two checks that the runner is still the parent
PARENT_CHECK = 1.0


class _Side:
    """One socket of a pair: what is waiting to be written to it, whether it sent EOF."""

    __slots__ = ("eof", "peer", "pending", "shut", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.peer: _Side | None = None
        self.pending = b""
        self.eof = False
        self.shut = False


class Forwarder:
    def __init__(self, listener: socket.socket, target: str) -> None:
        self.listener = listener
        self.target = target
        self.sel = selectors.DefaultSelector()
        self.events: dict[int, int] = {}
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, None)

    def serve(self, parent: int) -> None:
        while os.getppid() == parent:
            for key, mask in self.sel.select(PARENT_CHECK):
                if key.data is None:
                    self._accept()
                else:
                    self._ready(key.data, mask)

    def _accept(self) -> None:
        try:
            client, _addr = self.listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.settimeout(5.0)
            upstream.connect(self.target)
        except OSError:
            client.close()
            upstream.close()
            return
        a, b = _Side(client), _Side(upstream)
        a.peer, b.peer = b, a
        for side in (a, b):
            side.sock.setblocking(False)
            self._interest(side)

    def _interest(self, side: _Side) -> None:
        peer = side.peer
        assert peer is not None
        want = 0
        if not side.eof and len(peer.pending) < CHUNK:
            want |= selectors.EVENT_READ
        if side.pending:
            want |= selectors.EVENT_WRITE
        fd = side.sock.fileno()
        had = self.events.get(fd, 0)
        if want == had:
            return
        if not want:
            self.sel.unregister(side.sock)
            del self.events[fd]
        elif not had:
            self.sel.register(side.sock, want, side)
            self.events[fd] = want
        else:
            self.sel.modify(side.sock, want, side)
            self.events[fd] = want

    def _ready(self, side: _Side, mask: int) -> None:
        peer = side.peer
        assert peer is not None
        try:
            if mask & selectors.EVENT_READ:
                data = side.sock.recv(CHUNK)
                if data:
                    peer.pending += data
                else:
                    side.eof = True
            if mask & selectors.EVENT_WRITE and side.pending:
                sent = side.sock.send(side.pending)
                side.pending = side.pending[sent:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(side)
            return
        for one in (side, peer):
            # the other end said EOF and everything it sent is written: pass the EOF on
            if one.peer is not None and one.peer.eof and not one.pending and not one.shut:
                one.shut = True
                try:
                    one.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if side.eof and peer.eof and not side.pending and not peer.pending:
            self._close(side)
            return
        self._interest(side)
        self._interest(peer)

    def _close(self, side: _Side) -> None:
        for one in (side, side.peer):
            if one is None:
                continue
            fd = one.sock.fileno()
            if fd in self.events:
                self.sel.unregister(one.sock)
                del self.events[fd]
            one.sock.close()


def start(config: dict[str, Any], keep: Any = ()) -> int:
    """Listen on ``127.0.0.1:config["port"]`` and fork the forwarder to ``config["socket"]``;
    return its pid. ``keep``: file descriptors the forked process keeps besides its own (none
    usually; stdin/stdout are replaced by /dev/null). OSError when the port cannot be bound."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(config["port"])))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked process
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            keep_fds = sorted({listener.fileno(), 0, 1, 2, *keep})
            low = 3
            for fd in keep_fds:
                if fd >= low:
                    os.closerange(low, fd)
                    low = fd + 1
            os.closerange(low, 65536)
            Forwarder(listener, str(config["socket"])).serve(parent)
        finally:
            os._exit(0)
    listener.close()
    return pid
