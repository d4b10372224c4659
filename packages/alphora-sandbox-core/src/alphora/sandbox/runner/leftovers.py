"""What a finished call leaves running: servers are kept, fork bombs are killed.

Part of the runner program (stdlib only). A call's process is a subreaper, so whatever it starts
stays below it while it runs; when it exits, what is left is re-parented to the runner. The rule
(docs/limits-and-policy.md, "Background processes"):

* When the call's main process has exited, the runner reads its own children
  (``/proc/self/task/<pid>/children``, one small read). If all of them are known (the pre-forked
  spare, running calls, session interpreters, what earlier calls left and were allowed to keep),
  the call left nothing behind and finishes as before: this check is all it costs.
* Otherwise the new children (and everything below them) are the call's *leftover tree*. With
  ``keep_background=False`` on the request it is killed at once. Else it is watched for
  :data:`WATCH` seconds, sampled every :data:`SAMPLE` seconds, and killed as soon as

  - the process limit is hit: the sandbox's pids cgroup refused a fork during the window, or its
    process count is at ``pids.max``; where the runner sees no pids cgroup (isolated: it is outside
    bubblewrap's namespaces; or only ``RLIMIT_NPROC`` bounds the sandbox), a test fork of the
    runner under the calls' ``RLIMIT_NPROC`` (its child exits at once) fails with ``EAGAIN``; or
  - it keeps forking: at least ``max(CHURN_MIN, size of the first sample)`` processes that were not
    in the first sample appeared (the tree doubled, by growth or by churn).

  A quiet tree (a server, ``sleep 300 &``) survives the window and is kept until ``stop()`` (or
  until it exits); it is then "known" and never judged again.

Killing freezes the tree (SIGSTOP, repeated until no new process appears), SIGKILLs it, and waits
(at most :data:`KILL_WAIT` s) until every killed process is reaped, so a full pids cgroup is empty
again before the call's result goes out and the next call can fork.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

from .proctree import freeze_and_kill, own_child_pids, pids_cgroup_state, proc_table

#: seconds a call's leftover tree is watched after its main process exited
WATCH = 0.1
#: seconds between two samples of the tree
SAMPLE = 0.02
#: the fewest new processes that count as "keeps forking"
CHURN_MIN = 8
#: seconds to wait, after the kill, until every killed process is reaped
KILL_WAIT = 2.0


def tree_of(roots: set[int], table: dict[int, tuple[int, int, int, int]]) -> set[int]:
    """The roots still alive and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, entry in table.items():
        children.setdefault(entry[0], []).append(pid)
    out = {r for r in roots if r in table}
    stack = list(out)
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


class Watch:
    """The leftover tree of one finished call while it is judged."""

    def __init__(self, call_pid: int, now: float, kill_now: bool) -> None:
        self.call_pid = call_pid
        self.roots: set[int] = set()
        self.first: set[int] | None = None
        self.seen: set[int] = set()
        self.until = now + WATCH
        self.next = now
        self.refused0: int | None = None
        self.kill_now = kill_now
        self.done = False
        self.killed = 0
        self.reason = ""


class Leftovers:
    """The runner's record of what finished calls left running, and the judge of it."""

    def __init__(self, host: Any) -> None:
        self.host = host  # the Runner: spare, calls, sessions, limits, reap()
        #: runner children left by earlier calls and kept (pruned when reaped)
        self.kept: set[int] = set()
        self.watches: dict[int, Watch] = {}  # call pid -> watch
        self.cgroup: str | None = None

    def known(self) -> set[int]:
        host = self.host
        known = set(self.kept) | set(host.calls)
        if host.spare is not None:
            known.add(host.spare[0])
        known |= {s.pid for s in host.sessions.table.values() if s.pid}
        for w in self.watches.values():
            known |= w.roots
        return known

    def begin(self, call_pid: int, keep_background: bool, now: float) -> Watch | None:
        """The call's main process was reaped: None if it left nothing (the common case), else a watch."""
        children = own_child_pids()
        if children is None:  # no children file (gVisor): scan /proc
            me = os.getpid()
            children = {pid for pid, entry in proc_table().items() if entry[0] == me}
        if not children - self.known():
            return None
        watch = Watch(call_pid, now, not keep_background)
        self.watches[call_pid] = watch
        return watch

    def _claim(self, watch: Watch, table: dict[int, tuple[int, int, int, int]]) -> set[int]:
        """Claim the runner's unknown children for ``watch`` (a process of another finished call's
        session is left to that call) and return the watched tree."""
        me = os.getpid()
        known = self.known()
        others = {w.call_pid for w in self.watches.values() if w is not watch}
        for pid, (ppid, _pg, sid, _start) in table.items():
            if ppid == me and pid not in known and sid not in others:
                watch.roots.add(pid)
        return tree_of(watch.roots, table)

    def _limit_hit(self, watch: Watch) -> bool:
        state = pids_cgroup_state(self.cgroup)
        if state is not None:
            current, limit, refused = state
            if watch.refused0 is None:
                watch.refused0 = refused
            return refused > watch.refused0 or (limit > 0 and current >= limit)
        # no pids cgroup in sight (isolated: it is outside bwrap's namespaces; RLIMIT_NPROC): could
        # the call's code fork now? A test fork under the calls' RLIMIT_NPROC (the soft limit, restored)
        return not self._can_fork(int(self.host.limits.get("nproc") or 0))

    @staticmethod
    def _can_fork(nproc: int) -> bool:
        old = resource.getrlimit(resource.RLIMIT_NPROC)
        soft = min(nproc, old[1]) if nproc and old[1] != resource.RLIM_INFINITY else (nproc or old[0])
        try:
            if soft != old[0]:
                resource.setrlimit(resource.RLIMIT_NPROC, (soft, old[1]))
            pid = os.fork()
        except BlockingIOError:  # EAGAIN: the process limit is full
            return False
        except (OSError, ValueError):
            return True
        finally:
            if soft != old[0]:
                resource.setrlimit(resource.RLIMIT_NPROC, old)
        if pid == 0:
            os._exit(0)
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
        return True

    def step(self, watch: Watch, now: float) -> float:
        """Sample (when due), judge, kill if needed; returns the time until the next step (0 when done)."""
        if now < watch.next:
            return watch.next - now
        table = proc_table()
        tree = self._claim(watch, table)
        if not tree:
            return self._finish(watch)
        if watch.kill_now:
            return self.kill(watch, "keep_background=False")
        if self._limit_hit(watch):
            return self.kill(watch, "hit the process limit")
        if watch.first is None:
            watch.first = tree
        else:
            watch.seen |= tree - watch.first
            if len(watch.seen) >= max(CHURN_MIN, len(watch.first)):
                return self.kill(watch, "kept forking")
        if now >= watch.until:
            self.kept |= {r for r in watch.roots if r in table}
            return self._finish(watch)
        watch.next = now + SAMPLE
        return SAMPLE

    def kill(self, watch: Watch, reason: str) -> float:
        """Kill the tree, again while any of it is left (a fork in flight when SIGSTOP was sent can
        still add a child the scan did not see), and wait until every killed process is reaped."""
        deadline = time.monotonic() + KILL_WAIT
        killed: set[int] = set()
        while True:
            frozen = freeze_and_kill(lambda table: self._claim(watch, table))
            killed |= frozen
            alive = set(frozen)
            while alive and time.monotonic() < deadline:
                self.host.reap()
                alive = {p for p in alive if os.path.exists(f"/proc/{p}")}
                if alive:
                    time.sleep(0.002)
            self.host.reap()
            if not frozen or not self._claim(watch, proc_table()) or time.monotonic() >= deadline:
                break
        watch.killed, watch.reason = len(killed), reason
        return self._finish(watch)

    def _finish(self, watch: Watch) -> float:
        watch.done = True
        self.watches.pop(watch.call_pid, None)
        return 0.0

    def exited(self, pid: int) -> None:
        self.kept.discard(pid)
