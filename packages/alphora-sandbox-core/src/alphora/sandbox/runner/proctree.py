"""Process trees and memory through /proc (the runner's view of what it started).

Part of the runner program (stdlib only). The runner and every call's child are subreapers, so
whatever a call starts stays below it; these helpers list, freeze and kill such trees, and
measure their memory.
"""

# ruff: noqa: BLE001

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

PR_SET_CHILD_SUBREAPER = 36

_libc: Any = None


def prctl_subreaper(on: bool = True) -> None:
    """Make this process a child subreaper: orphans below it are re-parented to it, not to init
    (``on=False`` undoes it, e.g. while a session forks a process that must belong to the runner)."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)
    except Exception:  # not Linux / no ctypes: orphans go to init instead
        pass


def exit_code(status: int) -> int:
    """``os.waitstatus_to_exitcode`` (Python 3.9+), with its rule for older interpreters:
    the exit status, or minus the signal number."""
    convert = getattr(os, "waitstatus_to_exitcode", None)
    if convert is not None:
        return int(convert(status))
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    raise ValueError(f"invalid wait status: {status!r}")


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


def descendants(
    root: int, table: dict[int, tuple[int, int, int, int]], skip: frozenset[tuple[int, int]] = frozenset()
) -> set[int]:
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


def own_child_pids() -> set[int] | None:
    """The pids of this process's children, from ``/proc/self/task/<tid>/children`` (one small
    read; the runner is single-threaded, so its main thread's file lists them all). None when the
    kernel does not offer that file (then scan :func:`proc_table`)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            return {int(p) for p in f.read().split()}
    except (OSError, ValueError):
        return None


#: the pids cgroup files the runner reads to tell that the process limit was hit: v1 then v2
_PIDS_MOUNT_TYPES = ("cgroup", "cgroup2")


def pids_cgroup_dir() -> str | None:
    """The directory of this process's pids cgroup (``pids.max``, ``pids.current``,
    ``pids.events``), found through /proc/self/cgroup and /proc/self/mountinfo; None if there is
    none this process can read (the limit is then only ``RLIMIT_NPROC``)."""
    try:
        with open("/proc/self/cgroup") as f:
            own = {}
            for line in f.read().splitlines():
                parts = line.split(":", 2)
                if len(parts) == 3:
                    for ctrl in parts[1].split(",") if parts[1] else [""]:
                        own[ctrl] = parts[2]
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError:
        return None
    for line in mounts:
        left, sep, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if not sep or len(fields) < 5 or len(rfields) < 3 or rfields[0] not in _PIDS_MOUNT_TYPES:
            continue
        if rfields[0] == "cgroup" and "pids" not in rfields[2].split(","):
            continue
        path = own.get("pids" if rfields[0] == "cgroup" else "")
        if path is None:
            continue
        root, point = fields[3], fields[4].replace("\\040", " ")
        rel = path[len(root) :] if root != "/" and path.startswith(root) else ("" if root != "/" else path)
        found = os.path.join(point, rel.lstrip("/"))
        if os.path.exists(os.path.join(found, "pids.max")):
            return found
    return None


def pids_cgroup_state(path: str | None) -> tuple[int, int, int] | None:
    """(processes now, limit or 0, forks refused so far) of the pids cgroup at ``path``."""
    if path is None:
        return None
    try:
        with open(os.path.join(path, "pids.current")) as f:
            current = int(f.read())
        with open(os.path.join(path, "pids.max")) as f:
            raw = f.read().strip()
        refused = 0
        try:
            with open(os.path.join(path, "pids.events")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "max":
                        refused = int(value)
        except OSError:
            pass
    except (OSError, ValueError):
        return None
    return current, (0 if raw == "max" else int(raw)), refused


def state(pid: int) -> bytes:
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
        pids = {p for p in pids if state(p) not in done}
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.002)


def wait_dead(pids: set[int], within: float) -> set[int]:
    """Wait (at most ``within`` s) until every pid is a zombie or gone; returns those that are not."""
    return _wait_states(pids, (b"", b"Z", b"X"), within)


def wait_stopped(pid: int, within: float) -> bool:
    """Wait (at most ``within`` s) until a SIGSTOPped process has really stopped (it cannot fork then)."""
    return not _wait_states({pid}, (b"", b"T", b"t", b"Z", b"X"), within)


# -- memory -------------------------------------------------------------------------------------

#: (usage, stat file, its inactive-file key, limit) of the memory cgroup seen at /sys/fs/cgroup: v2, v1
CGROUP_MEMORY = (
    ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file", "/sys/fs/cgroup/memory.max"),
    (
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        "/sys/fs/cgroup/memory/memory.stat",
        "total_inactive_file",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ),
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


def usage_of(
    root: int, prev: tuple[float, float] | None, now: float, memory_cgroup: bool, memory_limit: int
) -> tuple[dict[str, Any], float]:
    """CPU, memory and process count of ``root`` and its descendants: the report (without the disk
    figure) and the CPU seconds used so far (the sample for the next report's ``cpu_percent``,
    with ``prev``, the previous ``(time, CPU seconds)``)."""
    table = proc_table()
    pids = descendants(root, table) | {root}
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
    percent = 0.0
    if prev is not None and now > prev[0]:
        percent = max(0.0, (cpu - prev[1]) / (now - prev[0]) * 100.0)
    found = cgroup_memory() if memory_cgroup else None
    used, limit = found if found is not None else (sum(process_memory(pid) for pid in pids), 0)
    limit = limit or memory_limit or mem_total()
    report = {
        "cpu_percent": percent,
        "memory_bytes": used,
        "memory_percent": (used / limit * 100) if limit else 0.0,
        "process_count": len(pids),
    }
    return report, cpu
