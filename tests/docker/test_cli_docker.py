"""``alphora-sandbox run --backend docker`` as a user types it (default image, the spec's
python:3.11-slim): the installed entry point in a real subprocess against the real engine. The
network is only *looked at* from inside (interfaces and the routing table); nothing here connects
anywhere. The engine-free CLI cases are in tests/core/test_cli.py."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent / "alphora-sandbox"
SUBPROCESS_TIMEOUT = 180  # a safety bound only

LOOK_AT_THE_NETWORK = (
    "import json, os\n"
    "routes = [line.split()[:2] for line in open('/proc/net/route').read().splitlines()[1:]]\n"
    "print(json.dumps({'interfaces': sorted(os.listdir('/sys/class/net')), 'routes': routes}))\n"
)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "ALPHORA_SANDBOX_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "run", "--backend", "docker", *args],
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def popen(home: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN), "run", "--backend", "docker", *args],
        env=_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_line(proc: subprocess.Popen[bytes], text: str, timeout: float = 120.0) -> None:
    """Read the process's stdout until a line contains ``text`` (the code is then running)."""
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if text.encode() in line:
            return
        if not line:
            break
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"the command never printed {text!r}; stderr: {err.decode(errors='replace')}")


def workspaces(home: Path) -> list[Path]:
    return sorted(p for p in home.iterdir() if p.is_dir())


def owned_by(docker_client: Any, pid: int) -> tuple[list[str], list[str]]:
    """Containers (any state) and volumes that the command with this pid created on this host."""
    flt = {"label": [f"org.alphora.sandbox.pid={pid}", f"org.alphora.sandbox.host={socket.gethostname()}"]}
    containers = [c.name for c in docker_client.containers.list(all=True, filters=flt)]
    volumes = [v.name for v in docker_client.volumes.list(filters=flt)]
    return containers, volumes


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_network_flag_gives_the_container_a_network(home: Path) -> None:
    off = run(home, LOOK_AT_THE_NETWORK)
    on = run(home, "--network", LOOK_AT_THE_NETWORK)
    assert (off.returncode, on.returncode) == (0, 0), off.stderr + on.stderr
    closed, opened = json.loads(off.stdout), json.loads(on.stdout)
    assert closed == {"interfaces": ["lo"], "routes": []}
    assert set(opened["interfaces"]) - {"lo"}, opened
    assert any(dest == "00000000" for _, dest in opened["routes"]), opened  # a default route


def test_keep_copies_the_workspace_out_and_leaves_no_container(home: Path, docker_client: Any) -> None:
    code = "import os\nos.makedirs('out')\nopen('out/result.txt', 'w').write('kept from docker')\n"
    proc = popen(home, "--keep", code)
    _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("alphora-sandbox: workspace kept: "), stderr
    path = Path(last.split(": ", 2)[2])
    assert path.parent == home
    assert (path / "out" / "result.txt").read_text() == "kept from docker"
    assert owned_by(docker_client, proc.pid) == ([], [])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_removes_the_container_and_its_volumes(
    home: Path, docker_client: Any, sig: signal.Signals, code: int
) -> None:
    proc = popen(home, "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    wait_for_line(proc, "started")
    containers, volumes = owned_by(docker_client, proc.pid)
    assert len(containers) == 1, containers  # what the signal must remove
    assert volumes
    proc.send_signal(sig)
    proc.wait(timeout=SUBPROCESS_TIMEOUT)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert sig.name in stderr
    assert owned_by(docker_client, proc.pid) == ([], [])
    assert workspaces(home) == []


def test_exit_codes_on_docker(home: Path) -> None:
    assert run(home, "import sys; sys.exit(7)").returncode == 7
    late = run(home, "--timeout", "1", "import time; time.sleep(60)")
    assert late.returncode == 124, late.stderr
    assert "timed out" in late.stderr
