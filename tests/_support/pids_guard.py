"""A capped pids cgroup the *test* makes around itself, so a fork bomb a test runs can never
threaten the host, even if the product's own containment failed (cgroup v1 pids, as root).

Use it as a fixture: ``guard = pids_guard_fixture`` in a test module (after importing it), then ask
for ``guard`` (the cgroup's directory). :func:`guard_processes` counts the tasks below it other
than the test process's own threads.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = os.geteuid() == 0
V1_PIDS = Path("/sys/fs/cgroup/pids")
GUARD_MAX = 400


def _own_v1_pids_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "pids" in ctrls.split(","):
            return path
    raise AssertionError("no pids line in /proc/self/cgroup")


def _kill_all(cgroup: Path, spare: int) -> None:
    for _ in range(2000):
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split() if int(p) != spare]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


@pytest.fixture(name="guard")
def pids_guard_fixture() -> Iterator[Path]:
    """This test process inside a pids cgroup capped at GUARD_MAX tasks (cgroup v1, as root): every
    process the test starts, the product's own cgroups included, is below it."""
    if not ROOT or not os.access(V1_PIDS, os.W_OK):
        reason = "a fork bomb runs only inside a capped pids cgroup made by the test (needs root and cgroup v1 pids)"
        if os.environ.get("CI") and ROOT:
            pytest.fail(reason)
        pytest.skip(reason)
    home = V1_PIDS / _own_v1_pids_cgroup().lstrip("/")
    path = home / f"alphora-test-guard-{secrets.token_hex(4)}"
    path.mkdir()
    (path / "pids.max").write_text(f"{GUARD_MAX}\n")
    (path / "cgroup.procs").write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        (home / "cgroup.procs").write_text(f"{os.getpid()}\n")
        for child in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
            if child.is_dir():
                _kill_all(child, os.getpid())
                child.rmdir()
        _kill_all(path, os.getpid())
        for _ in range(200):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.01)


def guard_processes(guard: Path) -> int:
    """Tasks below the guard other than this test process's own threads."""
    return int((guard / "pids.current").read_text()) - psutil.Process().num_threads()
