"""Stateful Python sessions on the runner (backend level and through the Sandbox facade)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import ConfigurationError, ExecutionStatus, LocalBackend, OutputChunk, Sandbox
from alphora.sandbox.runner.client import RunnerSession


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    b = LocalBackend(sandbox_id="sess", workspace_path=tmp_path / "ws")
    b.session_grace = 1.0
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def test_spec_session_example_through_the_facade(local_sandbox: Sandbox) -> None:
    async with local_sandbox.session() as py:
        await py.run("x = 41")
        r = await py.run("print(x + 1)")
        assert r.success
        assert r.stdout == "42\n"
        r = await py.run("x + 1")
        assert r.value == "42"
        assert r.stdout == ""


async def test_state_imports_and_cwd_persist(backend: LocalBackend) -> None:
    py = await backend.open_session()
    try:
        await backend.mkdir("sub")
        r = await py.run("import json, os\nos.chdir('sub')\ndata = {'a': 1}")
        assert r.success
        assert r.value is None
        r = await py.run("print(json.dumps(data)); os.getcwd()")
        assert r.stdout == '{"a": 1}\n'
        assert r.value == repr(str(backend.workspace_path / "sub"))
        r = await py.run("def f(n):\n    return n * 2\n[f(i) for i in range(3)]")
        assert r.value == "[0, 2, 4]"
        r = await py.run("_")
        assert r.value == "[0, 2, 4]"
        r = await py.run("None")
        assert r.value is None
        r = await py.run("x = 5  # a trailing assignment has no value")
        assert r.value is None
    finally:
        await py.close()


async def test_errors_are_results_and_keep_state(backend: LocalBackend) -> None:
    py = await backend.open_session()
    await py.run("kept = 'yes'")
    r = await py.run("1/0")
    assert r.status is ExecutionStatus.FAILED
    assert r.error == "ZeroDivisionError: division by zero"
    assert "<cell-" in r.stderr
    assert "alphora" not in r.stderr
    assert not r.state_lost
    r = await py.run("def broken(:\n  pass")
    assert r.status is ExecutionStatus.FAILED
    assert r.error.startswith("SyntaxError")
    r = await py.run("raise SystemExit(3)")
    assert r.status is ExecutionStatus.FAILED
    assert "SystemExit" in r.error
    r = await py.run("kept")
    assert r.value == "'yes'"
    await py.close()


async def test_timeout_interrupts_and_keeps_state(backend: LocalBackend) -> None:
    py = await backend.open_session()
    await py.run("x = 1")
    t0 = time.monotonic()
    r = await py.run("import time\nprint('working', flush=True)\ntime.sleep(60)", timeout=0.5)
    assert time.monotonic() - t0 < 0.5 + 1.0
    assert r.status is ExecutionStatus.TIMEOUT
    assert not r.state_lost
    assert r.stdout == "working\n"
    assert "KeyboardInterrupt" in r.stderr
    assert (await py.run("x")).value == "1"
    await py.close()


async def test_a_timeout_leaves_earlier_children_to_the_code_that_waits_for_them(backend: LocalBackend) -> None:
    py = await backend.open_session()
    try:
        assert (await py.run("import os\npid = os.fork()\nif pid == 0:\n    os._exit(7)")).success
        r = await py.run("import subprocess, time\np = subprocess.Popen(['sleep', '300'])\ntime.sleep(60)", timeout=1)
        assert r.status is ExecutionStatus.TIMEOUT
        assert not r.state_lost
        # the timed-out cell's process was reaped for it; the earlier child is still the user's to wait for
        assert (await py.run("p.returncode, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])")).value == "(-9, 7)"
    finally:
        await py.close()


@pytest.mark.parametrize("bad", [-1, 0, "5", math.nan, math.inf, True])
async def test_a_bad_timeout_is_refused_and_nothing_runs(backend: LocalBackend, bad: object) -> None:
    py = await backend.open_session()
    try:
        with pytest.raises(ConfigurationError, match="timeout must be a"):
            await py.run("open('ran.txt', 'w').close()", timeout=bad)  # type: ignore[arg-type]
        assert not (backend.workspace_path / "ran.txt").exists()
        assert (await py.run("1 + 1")).value == "2"  # the session is fine
    finally:
        await py.close()


async def test_timeout_that_ignores_interrupt_restarts_and_loses_state(backend: LocalBackend) -> None:
    py = await backend.open_session()
    await py.run("x = 1")
    code = "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
    t0 = time.monotonic()
    r = await py.run(code, timeout=0.5)
    assert time.monotonic() - t0 < 0.5 + backend.session_grace + 1.0
    assert r.status is ExecutionStatus.TIMEOUT
    assert r.state_lost
    assert r.error == (
        f"execution timed out after 0.5s; the cell did not stop within {backend.session_grace:g}s of "
        "KeyboardInterrupt; the session was restarted and its state was lost"
    )
    r = await py.run("x")
    assert r.status is ExecutionStatus.FAILED
    assert "NameError" in r.error
    assert (await py.run("1 + 1")).value == "2"
    await py.close()


async def test_a_cell_that_dies_on_the_interrupt_says_so(backend: LocalBackend) -> None:
    py = await backend.open_session()
    r = await py.run(
        "import os, time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    os._exit(4)", timeout=0.5
    )
    assert r.status is ExecutionStatus.TIMEOUT
    assert r.state_lost
    assert r.error == "execution timed out after 0.5s; the session's Python process died (exit code 4); state was lost"
    await py.close()


async def test_session_process_death_is_reported_and_recovered(backend: LocalBackend) -> None:
    py = await backend.open_session()
    await py.run("x = 1")
    r = await py.run("import os; os._exit(3)")
    assert r.status is ExecutionStatus.FAILED
    assert r.state_lost
    assert "died" in r.error
    r = await py.run("import ctypes; ctypes.string_at(0)")
    assert r.state_lost
    r = await py.run("'x' in globals()")
    assert r.success
    assert r.value == "False"
    assert not r.state_lost
    await py.close()


async def test_runner_restart_marks_state_lost(backend: LocalBackend) -> None:
    py = await backend.open_session()
    await py.run("x = 1")
    r = await py.run("import os, signal; os.kill(os.getppid(), signal.SIGKILL)")
    assert r.status is ExecutionStatus.FAILED
    assert r.state_lost
    r = await py.run("1")
    assert r.success
    assert r.state_lost
    assert r.value == "1"
    r = await py.run("2")
    assert not r.state_lost
    await py.close()


async def test_streaming_in_a_session(backend: LocalBackend) -> None:
    py = await backend.open_session()
    arrivals: list[tuple[float, OutputChunk]] = []
    r = await py.run(
        "import time\nprint('a', flush=True)\ntime.sleep(0.8)\nprint('b')",
        on_output=lambda c: arrivals.append((time.monotonic(), c)),
    )
    done = time.monotonic()
    assert "".join(c.text for _, c in arrivals) == "a\nb\n"
    assert done - next(t for t, c in arrivals if "a" in c.text) > 0.5
    assert r.stdout == "a\nb\n"
    await py.close()


async def test_sessions_are_independent_and_reset_close(backend: LocalBackend) -> None:
    a = await backend.open_session("a")
    b = await backend.open_session("b")
    await a.run("v = 'a'")
    await b.run("v = 'b'")
    assert (await a.run("v")).value == "'a'"
    assert (await b.run("v")).value == "'b'"
    await a.reset()
    assert (await a.run("'v' in globals()")).value == "False"
    r = await backend.execute_code("print('v' in globals())")
    assert r.stdout == "False\n"  # fresh-process calls do not see session state
    await a.close()
    await a.close()
    with pytest.raises(Exception, match="closed"):
        await a.run("1")
    await b.close()


async def test_session_env_and_cwd(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H1_HOST_ONLY", "secret")
    await backend.mkdir("start/here")
    py = await backend.open_session("envd", env={"GIVEN": "1"}, cwd="start/here")
    r = await py.run("import os\n(os.environ.get('GIVEN'), os.environ.get('H1_HOST_ONLY'), os.getcwd())")
    assert r.value == repr(("1", None, str(backend.workspace_path / "start" / "here")))
    await py.close()


async def test_concurrent_runs_on_one_session_are_serialised(backend: LocalBackend) -> None:
    py = await backend.open_session()
    await py.run("n = 0")
    results = await asyncio.gather(*(py.run("import time\nm = n\ntime.sleep(0.01)\nn = m + 1\nn") for _ in range(5)))
    assert sorted(r.value for r in results if r.value) == ["1", "2", "3", "4", "5"]
    await py.close()


async def test_output_cap_in_session(tmp_path: Path) -> None:
    from alphora.sandbox import ResourceLimits

    b = LocalBackend(
        sandbox_id="cap", workspace_path=tmp_path / "ws", resource_limits=ResourceLimits(max_output_size=100)
    )
    await b.start()
    try:
        py = await b.open_session()
        r = await py.run("print('q' * 1000)")
        assert r.stdout_truncated
        assert len(r.stdout) == 100
        r = await py.run("print('small')")
        assert r.stdout == "small\n"
        assert not r.stdout_truncated
    finally:
        await b.stop()


@pytest.mark.slow
@pytest.mark.network
async def test_matplotlib_figures_come_back_as_png(tmp_path: Path) -> None:
    sandbox = Sandbox.create_local(base_path=tmp_path)
    await sandbox.start()
    # the sandbox has its own environment: matplotlib is installed into it, as docs/sessions.md says
    installed = await sandbox.install_package("matplotlib")
    assert installed.success, installed.stderr[-2000:]
    backend = sandbox.backend
    py = await backend.open_session()
    assert isinstance(py, RunnerSession)
    r = await py.run(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()", timeout=60
    )
    assert r.success, r.stderr
    assert len(r.attachments) == 1
    png = r.attachments[0]
    assert png.mime_type == "image/png"
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png.data) > 1000
    assert "non-interactive" not in r.stderr
    r = await py.run(
        "fig, ax = plt.subplots()\nax.bar([1, 2], [3, 4])\nplt.show()\nfig2 = plt.figure()\nplt.plot([0, 1])"
    )
    assert len(r.attachments) == 2
    r = await py.run("1 + 1")
    assert r.attachments == ()
    await py.close()
    await sandbox.destroy()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "sessions.py",
            [
                "stdout: 42",
                "value: 12.566370614359172",
                "cwd persists: 'data'",
                "error: failed - ZeroDivisionError: division by zero",
                "state kept: 41",
                "timeout: timeout state_lost: False x: 41",
                "stubborn: timeout state_lost: True",
                "after restart: False",
            ],
        ),
        (
            "streaming.py",
            [
                "stdout: 'step 0\\n'",
                "stderr: 'done, with a warning\\n'",
                "result: success 'step 0\\nstep 1\\nstep 2\\n'",
                "stdout: 'tick 1\\n'",
            ],
        ),
    ],
)
def test_examples_run(script: str, expected: list[str]) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for line in expected:
        assert line in proc.stdout, (line, proc.stdout)
