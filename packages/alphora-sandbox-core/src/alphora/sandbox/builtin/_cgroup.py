"""A pids cgroup per local/isolated sandbox: ``max_processes`` enforced by the kernel, also for root.

``RLIMIT_NPROC`` counts the processes of a *user* and root ignores it; a pids cgroup counts the
tasks (processes and threads) of a *group of processes*, whoever runs them, and every fork beyond
``pids.max`` fails with ``EAGAIN``. Each sandbox gets one, named
``<pids root>/alphora-sandbox/<sandbox-id>-<random>``, and its runner is put into it before it
serves any call (local: its pid right after the spawn, before it forks anything; isolated: a ``sh``
wrapper writes its own pid into ``cgroup.procs`` and then ``exec``\\ s bubblewrap, see
:func:`wrap_argv`), so everything the sandbox ever starts is inside it. ``kill_all()`` + ``remove()``
at stop/destroy kill what is left and delete it.

Where the cgroup is made:

* **cgroup v1** (a ``pids`` hierarchy, e.g. ``/sys/fs/cgroup/pids``): under the process's own
  pids cgroup (``/proc/self/cgroup``). Needs write access there: root, or a delegated directory.
* **cgroup v2** (unified): a child of the process's own cgroup, when ``pids`` is in that cgroup's
  ``cgroup.controllers`` and can be enabled in its ``cgroup.subtree_control`` (root, or a
  delegated subtree as systemd gives with ``Delegate=yes``). The kernel's "no internal processes"
  rule refuses that (``EBUSY``) when the own cgroup is not the root and still holds processes;
  then no cgroup is made.

When none can be made (not root and no delegation, cgroup fs absent or read-only, pids controller
not available) :func:`create_pids_cgroup` returns ``None`` and logs the reason once; the sandbox
still runs, bounded only by ``RLIMIT_NPROC`` (per uid — a uid of its own per sandbox on the
isolated tier as root, nothing for local as root). Set ``ALPHORA_SANDBOX_PIDS_CGROUP=0`` to never
make one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import time
from pathlib import Path

__all__ = ["PidsCgroup", "create_pids_cgroup", "pids_cgroup_parent"]

log = logging.getLogger(__name__)

#: the directory under the pids root that holds one cgroup per sandbox
GROUP = "alphora-sandbox"
_warned: set[str] = set()


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every cgroup mount, from /proc/self/mountinfo."""
    out: list[tuple[str, str, str]] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
            point = fields[4].replace("\\040", " ")
            out.append((point, rfields[0], rfields[2]))
    return out


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                out[ctrl] = parts[2]
    return out


def pids_cgroup_parent() -> tuple[Path, int] | str:
    """(directory to create ``alphora-sandbox/`` in, cgroup version), or why there is none."""
    if os.environ.get("ALPHORA_SANDBOX_PIDS_CGROUP", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by ALPHORA_SANDBOX_PIDS_CGROUP=0"
    mounts, own = _mounts(), _own_cgroups()
    for point, fstype, opts in mounts:
        if fstype == "cgroup" and "pids" in opts.split(",") and "pids" in own:
            parent = Path(point + own["pids"])
            if not os.access(parent, os.W_OK):
                return f"the pids cgroup {parent} is not writable (not root and not delegated, or read-only)"
            return parent, 1
    for point, fstype, _opts in mounts:
        if fstype == "cgroup2" and "" in own:
            parent = Path(point + own[""])
            try:
                controllers = (parent / "cgroup.controllers").read_text().split()
            except OSError as exc:
                return f"cannot read {parent}/cgroup.controllers: {exc.strerror}"
            if "pids" not in controllers:
                continue  # e.g. the v2 mount of a hybrid setup, pids bound to v1 (tried above)
            if not os.access(parent, os.W_OK):
                return f"the cgroup {parent} is not writable (not root and not delegated, or read-only)"
            return parent, 2
    return "no pids cgroup controller is mounted"


class PidsCgroup:
    """One sandbox's pids cgroup (a directory in the cgroup filesystem)."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    @property
    def max(self) -> int | None:
        text = (self.path / "pids.max").read_text().strip()
        return None if text == "max" else int(text)

    def pids(self) -> list[int]:
        """The pids of the processes in the cgroup now (empty once it is gone)."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def tasks(self) -> int:
        """How many tasks (processes and threads) the kernel charges to it now."""
        return int((self.path / "pids.current").read_text())

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def kill_all(self, timeout: float = 10.0) -> bool:
        """SIGKILL every process in it until none is left (a fork bomb refills the slots it frees, so
        this loops; ``cgroup.kill`` on v2 does it atomically). True when it is empty."""
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1\n")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self, timeout: float = 10.0) -> bool:
        """Kill what is left and delete the cgroup; False (logged) if it could not be removed."""
        emptied = self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:  # EBUSY while the last killed tasks are being released
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    log.warning("could not remove the pids cgroup %s (%s; emptied: %s)", self.path, exc, emptied)
                    return False
                self.kill_all(1.0)
                time.sleep(0.01)


def _enable_pids(directory: Path) -> None:
    """v2: let the children of ``directory`` use the pids controller."""
    control = directory / "cgroup.subtree_control"
    if "pids" not in control.read_text().split():
        control.write_text("+pids\n")


def create_pids_cgroup(sandbox_id: str, max_pids: int) -> PidsCgroup | None:
    """A new pids cgroup for one sandbox with ``pids.max = max_pids``, or None (reason logged once)."""
    found = pids_cgroup_parent()
    if isinstance(found, str):
        _warn_once(found)
        return None
    parent, version = found
    try:
        if version == 2:
            _enable_pids(parent)
        group = parent / GROUP
        with contextlib.suppress(FileExistsError):
            group.mkdir()
        if version == 2:
            _enable_pids(group)
        path = group / f"{sandbox_id[:64]}-{secrets.token_hex(4)}"
        path.mkdir()
    except OSError as exc:
        _warn_once(f"cannot create a pids cgroup under {parent}: {exc.strerror or exc}")
        return None
    cgroup = PidsCgroup(path, version)
    try:
        (path / "pids.max").write_text(f"{max_pids}\n")
    except OSError as exc:
        cgroup.remove()
        _warn_once(f"cannot set pids.max in {path}: {exc.strerror or exc}")
        return None
    return cgroup


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("no pids cgroup for local/isolated sandboxes: %s; max_processes is then only RLIMIT_NPROC", reason)


def wrap_argv(cgroup: PidsCgroup, argv: list[str]) -> list[str]:
    """``argv`` started by a shell that first moves itself into ``cgroup`` (then execs ``argv``), so
    the command and everything it starts are inside it from its first instruction."""
    return ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", cgroup.procs_file, *argv]
