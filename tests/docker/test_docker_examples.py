"""The Docker examples in examples/ run as documented, against the real engine (on the image they name,
python:3.11-slim: in CI the foreign stand-in, see conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.usefixtures("spec_images")
def test_docker_quickstart_example() -> None:
    out = _run("examples/docker_quickstart.py")
    assert out.returncode == 0, out.stderr
    assert "python in the container: 3.11" in out.stdout
    assert "Args: ['arg1', 'arg2']\nHello from file!\nHELLO\nhi from uid 1000" in out.stdout
    assert "pids limit in the container: 12" in out.stdout
    assert "network interfaces with the network enabled: ['eth0', 'lo']" in out.stdout


@pytest.mark.usefixtures("spec_images")
def test_docker_hostile_example() -> None:
    out = _run("examples/docker_hostile.py")
    assert out.returncode == 0, out.stderr
    lines = {ln.split("->")[0].strip(): ln for ln in out.stdout.splitlines() if "->" in ln}
    assert "timeout" in lines["fork bomb"]
    assert "oom_killed=True" in lines["memory bomb"]
    assert "interfaces: ['lo'] default route: False" in lines["network probe"]
    assert "Read-only file system" in lines["write outside"]
    assert "Operation not permitted" in lines["escalate"]
    assert "sandbox healthy: True" in out.stdout


@pytest.mark.parametrize(
    "argv", [["-m", "alphora.sandbox.cli", "docker", "images"], ["-m", "alphora.sandbox_docker", "images", "--json"]]
)
def test_cli_reaches_the_docker_commands(argv: list[str]) -> None:
    out = _run(*argv, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "alphora/sandbox:base" in out.stdout
