"""Host-side helpers of the doctor: pids cgroups that contain its bombs, finding and killing
processes, and the Docker engine's view of a sandbox.

Nothing here is used by sandboxes themselves; it is how the doctor observes them from outside.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "PidsCgroup",
    "descendants",
    "docker_client",
    "kill_processes",
    "pids_cgroup_of",
    "processes_with",
    "sweep",
]

_V1_PIDS = Path("/sys/fs/cgroup/pids")
_V2_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup(controller: str | None) -> str | None:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (None: the v2 one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        num, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if controller is None and num == "0" and ctrls == "":
            return path
        if controller is not None and controller in ctrls.split(","):
            return path
    return None


def pids_cgroup_of(pid: int) -> str | None:
    """The absolute directory of the pids cgroup ``pid`` is in (v1 pids, else v2), or None."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        num, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if "pids" in ctrls.split(","):
            return str(_V1_PIDS) + (path if path != "/" else "")
        if num == "0" and ctrls == "":
            v2 = str(_V2_ROOT) + (path if path != "/" else "")
    return v2


def capped(cgroup_dir: str) -> bool:
    """True when the cgroup or one of its ancestors has a numeric ``pids.max``."""
    path = Path(cgroup_dir)
    while True:
        with contextlib.suppress(OSError):
            if (path / "pids.max").read_text().strip().isdigit():
                return True
        if path in (_V1_PIDS, _V2_ROOT) or path.parent == path:
            return False
        path = path.parent


class PidsCgroup:
    """A pids cgroup the doctor made (cgroup v1 ``pids`` controller, or v2 with ``pids`` enabled),
    with ``pids.max`` set: whatever runs in it can never make more processes than that."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str, max_pids: int, parent: PidsCgroup | None = None) -> tuple[PidsCgroup | None, str]:
        """Make it (under ``parent``, or under this process's own pids cgroup). Returns the cgroup
        and "" or None and why it could not be made."""
        if parent is not None:
            base = parent.path
        elif (_V1_PIDS / "cgroup.procs").exists():
            own = _own_cgroup("pids") or "/"
            base = _V1_PIDS / own.lstrip("/")
        elif (_V2_ROOT / "cgroup.controllers").exists():
            own = _own_cgroup(None) or "/"
            base = _V2_ROOT / own.lstrip("/")
            try:
                if "pids" not in (base / "cgroup.subtree_control").read_text().split():
                    (base / "cgroup.subtree_control").write_text("+pids")
            except OSError as exc:
                return None, f"cgroup v2: cannot enable the pids controller under {base}: {exc.strerror or exc}"
        else:
            return None, "no cgroup filesystem with a pids controller is mounted"
        path = base / name
        try:
            path.mkdir()
        except OSError as exc:
            return None, f"cannot create {path}: {exc.strerror or exc}"
        try:
            (path / "pids.max").write_text(str(max_pids))
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None, f"cannot set {path / 'pids.max'}: {exc.strerror or exc}"
        return cls(path), ""

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def procs(self) -> set[int]:
        """Every process in it and in its child cgroups."""
        out: set[int] = set()
        for procs in self.path.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                out.update(int(p) for p in procs.read_text().split())
        return out

    def kill_all(self, within: float = 10.0) -> int:
        """Stop then kill everything in it until it is empty (a stopped process cannot fork).
        Returns how many processes were killed."""
        killed: set[int] = set()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pids = self.procs() - {os.getpid()}
            if not pids:
                break
            kill_processes(pids)
            killed |= pids
            time.sleep(0.02)
        return len(killed)

    def remove(self, within: float = 5.0) -> bool:
        """Kill what is left, then remove it (children first). True when it is gone."""
        self.kill_all()
        deadline = time.monotonic() + within
        while True:
            dirs = sorted((p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            try:
                for d in [*dirs, self.path]:
                    d.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)


def _me_and_ancestors() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def kill_processes(pids: Iterable[int]) -> None:
    """SIGSTOP every pid first (so none forks again), then SIGKILL them (never this process or
    one of its ancestors)."""
    pids = list(set(pids) - _me_and_ancestors())
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live descendant of ``pid`` (default: this process); zombies left out."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def _procs_with(*fields: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(pid, {field: value}) of every live process but this one; a field that cannot be read (no
    permission, a cwd too long for readlink, a process that just exited) is None."""
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        info: dict[str, Any] = {}
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, OSError):
            continue
        for field in fields:
            try:
                info[field] = getattr(p, field)()
            except (psutil.Error, OSError):
                info[field] = None
        yield p.pid, info


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes of this host whose command line contains ``marker``."""
    out = []
    for pid, info in _procs_with("cmdline"):
        if marker in " ".join(info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(pid))
    return out


def sweep(root: str, markers: Iterable[str] = ()) -> int:
    """Kill every process whose working directory is under ``root`` or whose command line holds
    one of ``markers`` (the doctor's workspaces and agents). Returns how many were found."""
    markers = tuple(markers)
    found = []
    for pid, info in _procs_with("cmdline", "cwd"):
        cwd = info["cwd"] or ""
        cmd = " ".join(info["cmdline"] or ())
        if cwd == root or cwd.startswith(root + "/") or any(m in cmd for m in markers):
            found.append(pid)
    kill_processes(found)
    return len(found)


@functools.cache
def docker_client(base_url: str | None = None) -> Any:
    """A docker SDK client for the engine the sandboxes use (``DOCKER_HOST`` or the local socket),
    one per address for the whole process."""
    import docker

    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=60, version="auto")
    return docker.from_env(timeout=60, version="auto")
