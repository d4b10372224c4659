"""The guard of a sandbox actor: cleans up the inner sandbox when the actor's worker dies.

Ray ends the actor of a crashed driver (or of a ``ray.kill``) by killing its worker process; the
inner sandbox's processes live in their own session (the runner's) and a Docker container lives
under the engine, so neither goes with the worker by itself. The actor starts this guard as a
process in its own session, detached from the worker (Ray kills a dead worker's direct children,
so the guard forks away from it), with a pipe on stdin. While the pipe is open the guard keeps a snapshot
of the worker's descendants (refreshed every half second and whenever the actor writes a line);
when the pipe reaches EOF (the worker is gone, however it died) it SIGKILLs every process of the
last snapshot that still runs (pid *and* start time match) with everything below it, and removes
the sandbox's containers through the Docker reaper (their owner label names the dead worker).
Processes started less than a refresh before the worker died can be missed: docs/cluster.md.

Run as ``python -m alphora.sandbox_ray._guard <worker pid> <sandbox id> <inner backend>``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys

import psutil

_TICK = 0.5


def _snapshot(worker: psutil.Process) -> set[tuple[int, float]]:
    me = os.getpid()
    found: set[tuple[int, float]] = set()
    with contextlib.suppress(psutil.Error):
        for p in worker.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid != me:
                    found.add((p.pid, p.create_time()))
    return found


def _kill(procs: set[tuple[int, float]]) -> int:
    victims: dict[int, psutil.Process] = {}
    for pid, start in procs:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == start:
                victims[pid] = p
                for c in p.children(recursive=True):
                    victims[c.pid] = c
    for p in victims.values():  # stop first so nothing forks while the rest is killed
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGSTOP)
    for p in victims.values():
        with contextlib.suppress(psutil.Error):
            p.kill()
    return len(victims)


def main(argv: list[str]) -> int:
    worker_pid, sandbox_id, inner = int(argv[0]), argv[1], argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Ray kills a dead worker's direct children (kill_child_processes_on_worker_exit): leave the
    # worker's children by forking once more; the stdin pipe comes along
    if os.fork() > 0:
        os._exit(0)
    worker = psutil.Process(worker_pid)
    snap = _snapshot(worker)
    fd = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], _TICK)
        if ready:
            data = os.read(fd, 4096)
            if not data:
                break
            if b"q" in data:  # the actor shut its sandbox down itself: nothing to clean
                return 0
        snap |= _snapshot(worker)
        snap = {(pid, start) for pid, start in snap if psutil.pid_exists(pid)}
    _kill(snap)
    if inner == "docker":
        with contextlib.suppress(Exception):
            from alphora.sandbox_docker.reaper import prune_orphans

            prune_orphans(sandbox_id=sandbox_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
