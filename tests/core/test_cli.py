"""The ``alphora-sandbox`` command as a user types it: the installed entry point (and
``python -m alphora.sandbox``) in a real subprocess, real sandboxes, real signals and pipes.

The Docker cases are in tests/docker/test_cli_docker.py; the missing-engine case is here, since it
needs no engine (DOCKER_HOST points at a loopback port where nothing listens)."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import pytest

from alphora.sandbox.builtin.isolated_backend import bwrap_available

BIN = Path(sys.executable).parent / "alphora-sandbox"
DEAD_ENGINE = "tcp://127.0.0.1:1"
SUBPROCESS_TIMEOUT = 120  # a safety bound only; every call here normally ends in seconds


@pytest.fixture(scope="module", autouse=True)
def _entry_point_installed() -> None:
    if not BIN.exists():
        pytest.fail(
            f"the alphora-sandbox entry point is not installed next to {sys.executable}: "
            "pip install -e packages/alphora-sandbox-core",
            pytrace=False,
        )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """ALPHORA_SANDBOX_HOME of the command: where its workspaces go (and must not stay)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ALPHORA_SANDBOX_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}
    env.pop("PYTHONWARNINGS", None)
    return env


def cli(
    home: Path, *args: str, module: bool = False, cwd: Path | None = None, stdin: Any = subprocess.DEVNULL, **env: str
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "alphora.sandbox", *args] if module else [str(BIN), *args]
    return subprocess.run(
        argv, env=_env(home, **env), cwd=cwd, stdin=stdin, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def popen(home: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN), *args],
        env=_env(home, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def workspaces(home: Path) -> list[Path]:
    return sorted(p for p in home.iterdir() if p.is_dir()) if home.exists() else []


def wait_for_line(proc: subprocess.Popen[bytes], text: str, timeout: float = 90.0) -> None:
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


def assert_short(stderr: str, lines: int = 2) -> None:
    """Answered in a line or two, no traceback."""
    assert "Traceback" not in stderr, stderr
    assert 1 <= len(stderr.strip().splitlines()) <= lines, stderr


# -- arguments -----------------------------------------------------------------------------------

SHOW_ARGV = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--", "a", "b"], ["a", "b"]),
        (["--", "-x", "--y", "--", "c d"], ["-x", "--y", "--", "c d"]),
        (["a", "b"], ["a", "b"]),
        ([], []),
    ],
)
def test_script_arguments_arrive_whole(home: Path, tmp_path: Path, args: list[str], expected: list[str]) -> None:
    script = tmp_path / "show.py"
    script.write_text(SHOW_ARGV)
    proc = cli(home, "run", "-f", str(script), *args)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected


def test_code_comes_from_the_argument_or_stdin_and_a_terminal_is_not_waited_on(home: Path) -> None:
    assert cli(home, "run", "print(6 * 7)").stdout == "42\n"
    for args in ([], ["-"]):
        piped = subprocess.run(
            [str(BIN), "run", *args],
            input="print('from stdin')",
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
        assert (piped.returncode, piped.stdout) == (0, "from stdin\n"), piped.stderr
    main_fd, tty_fd = pty.openpty()
    try:
        proc = cli(home, "run", stdin=tty_fd)
    finally:
        os.close(main_fd)
        os.close(tty_fd)
    assert proc.returncode == 2
    assert_short(proc.stderr)
    assert "no code to run" in proc.stderr


# -- --version and python -m ---------------------------------------------------------------------


def test_version_names_core_and_plugins(home: Path) -> None:
    proc = cli(home, "--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"alphora-sandbox {metadata.version('alphora-sandbox')}"
    if importlib.util.find_spec("alphora.sandbox_docker") is not None:
        assert f"alphora-sandbox-docker {metadata.version('alphora-sandbox-docker')}" in lines[1]


def test_python_m_is_the_same_command(home: Path) -> None:
    assert cli(home, "--version", module=True).stdout == cli(home, "--version").stdout
    proc = cli(home, "run", "print(6 * 7)", module=True)
    assert (proc.returncode, proc.stdout) == (0, "42\n"), proc.stderr
    bad = cli(home, "run", "--timeout", "-1", "print(1)", module=True)
    assert bad.returncode == 2
    assert_short(bad.stderr)


# -- --keep ----------------------------------------------------------------------------------------


def test_keep_leaves_the_workspace_really_there_and_only_then(home: Path) -> None:
    gone = cli(home, "run", "open('gone.txt', 'w').write('x')")
    assert gone.returncode == 0, gone.stderr
    assert workspaces(home) == []
    proc = cli(home, "run", "--keep", "open('kept.txt', 'w').write('still here')")
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("alphora-sandbox: workspace kept: "), proc.stderr
    path = Path(last.split(": ", 2)[2])
    assert path.parent == home
    assert (path / "kept.txt").read_text() == "still here"


# -- exit codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["print(1)"], 0),
        (["import sys; sys.exit(3)"], 3),
        (["1 / 0"], 1),
        (["import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], 128 + signal.SIGKILL),
        (["--timeout", "1", "import time; time.sleep(60)"], 124),
        (["--shell", "echo hi; exit 4"], 4),
    ],
)
def test_exit_codes(home: Path, args: list[str], code: int) -> None:
    proc = cli(home, "run", *args)
    assert proc.returncode == code, proc.stderr
    assert workspaces(home) == []


@pytest.mark.parametrize("args", [["import subprocess"], ["--shell", "ls"]])
def test_refused_by_the_policy_exits_126_in_one_line(home: Path, args: list[str]) -> None:
    proc = cli(home, "run", "--policy", "strict", *args)
    assert proc.returncode == 126
    assert_short(proc.stderr, lines=1)
    assert proc.stderr.startswith("alphora-sandbox: error: refused by security policy: ")
    assert workspaces(home) == []


def test_json_result_and_exit_code(home: Path) -> None:
    proc = cli(home, "run", "--json", "import sys; print('x'); sys.exit(5)")
    assert proc.returncode == 5
    result = json.loads(proc.stdout)
    assert (result["status"], result["return_code"], result["stdout"]) == ("failed", 5, "x\n")
    late = cli(home, "run", "--json", "--timeout", "1", "import time; time.sleep(60)")
    assert late.returncode == 124
    assert json.loads(late.stdout)["status"] == "timeout"


# -- mistakes: a line or two with the fix, exit 2, no traceback --------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "-f", "missing.py"], "no such file: missing.py"),
        (["run", "-f", "."], "is a directory"),
        (["run", "--backend", "nope", "print(1)"], "unknown backend 'nope'"),
        (["run", "--timeout", "-1", "print(1)"], "must be a finite positive number of seconds, got '-1'"),
        (["run", "--timeout", "0", "print(1)"], "must be a finite positive number of seconds, got '0'"),
        (["run", "--timeout", "soon", "print(1)"], "must be a finite positive number of seconds, got 'soon'"),
        (["run", "--memory-mb", "-5", "print(1)"], "megabytes"),
        (["run", "print(1)", "print(2)"], "as one argument"),
        (["run", "--image", "python:3.12", "print(1)"], "--image is for --backend docker"),
        (["run", "--shell", "echo", "hi"], "quote it"),
        (["run", "-f", "missing.py", "--verbose"], "go after '--'"),
        (["plugins", "--", "x"], "not for 'plugins'"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_are_answered_in_two_lines(home: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    proc = cli(home, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert_short(proc.stderr)
    assert needle in proc.stderr
    assert workspaces(home) == []


def test_debug_adds_the_traceback(home: Path, tmp_path: Path) -> None:
    proc = cli(home, "--debug", "run", "--backend", "nope", "print(1)", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("alphora-sandbox: error: unknown backend 'nope'")


# -- a missing engine ------------------------------------------------------------------------------


def test_missing_engine_is_one_line_naming_it(home: Path) -> None:
    if importlib.util.find_spec("alphora.sandbox_docker") is None:
        pytest.skip("the docker plugin is not installed: pip install -e packages/alphora-sandbox-docker")
    proc = cli(home, "run", "--backend", "docker", "print(1)", DOCKER_HOST=DEAD_ENGINE)
    assert proc.returncode == 125, proc.stderr
    assert_short(proc.stderr, lines=1)
    assert proc.stderr.startswith(
        f"alphora-sandbox: error: cannot reach the Docker engine at {DEAD_ENGINE}: Connection refused. "
        "Is the engine running?"
    ), proc.stderr
    assert "removing" not in proc.stderr
    debug = cli(home, "run", "--debug", "--backend", "docker", "print(1)", DOCKER_HOST=DEAD_ENGINE)
    assert debug.returncode == 125
    assert "Traceback" in debug.stderr
    assert "ConnectionRefusedError" in debug.stderr
    images = cli(home, "docker", "images", DOCKER_HOST=DEAD_ENGINE)
    assert images.returncode != 0
    assert_short(images.stderr, lines=1)
    assert "cannot reach the Docker engine at" in images.stderr


# -- a closed pipe and signals: stop, clean up, exit like the signal -----------------------------------

ENDLESS_OUTPUT = "import itertools\nfor i in itertools.count():\n    print(i, flush=True)\n"


def test_closed_pipe_stops_quietly_and_cleans_up(home: Path) -> None:
    proc = popen(home, "run", ENDLESS_OUTPUT)
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.read(1) == b"0"
    proc.stdout.close()  # what `| head -c1` does
    proc.wait(timeout=SUBPROCESS_TIMEOUT)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 128 + signal.SIGPIPE, stderr
    assert stderr == ""
    assert workspaces(home) == []


SLEEPER = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nprint('started', flush=True)\ntime.sleep(120)\n"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_the_code_and_removes_the_workspace(home: Path, sig: signal.Signals, code: int) -> None:
    proc = popen(home, "run", SLEEPER)
    wait_for_line(proc, "started")
    [workspace] = workspaces(home)
    pid = int((workspace / "pid").read_text())
    assert psutil.pid_exists(pid)
    proc.send_signal(sig)
    proc.wait(timeout=SUBPROCESS_TIMEOUT)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert proc.returncode == code, stderr
    assert_short(stderr, lines=1)
    assert sig.name in stderr
    assert workspaces(home) == []
    assert _gone(pid), f"the sandboxed process {pid} outlived the command"


# -- --network goes through the one network rule ------------------------------------------------------

INTERFACES = "import socket\nprint(' '.join(sorted(name for _, name in socket.if_nameindex())))\n"


def test_network_flag_turns_the_rule_on_isolated(home: Path) -> None:
    if not bwrap_available():
        if os.environ.get("CI"):
            pytest.fail("CI must provide bubblewrap (bwrap): .ci/run installs it")
        pytest.skip("bubblewrap (bwrap) is not installed: apt install bubblewrap")
    host = {name for _, name in socket.if_nameindex()} - {"lo"}
    if not host:
        pytest.skip("this host has no interface but loopback: nothing for --network to show")
    off = cli(home, "run", "--backend", "isolated", INTERFACES)
    on = cli(home, "run", "--backend", "isolated", "--network", INTERFACES)
    assert (off.returncode, on.returncode) == (0, 0), off.stderr + on.stderr
    assert off.stdout.split() == ["lo"]
    assert set(on.stdout.split()) - {"lo"}, on.stdout
