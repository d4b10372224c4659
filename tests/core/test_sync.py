"""The sync API (alphora.sandbox.sync): the spec's examples in sync form, threads, the loop rule, no leaked threads."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import alphora.sandbox as async_api
from alphora.sandbox import SandboxStatus
from alphora.sandbox.session import PythonSession as AsyncPythonSession
from alphora.sandbox.sync import (
    PythonSession,
    Sandbox,
    SandboxManager,
    SandboxPool,
    SandboxTools,
    SyncInAsyncError,
    loop_thread_alive,
)
from alphora.sandbox.sync._portal import THREAD_NAME

from .test_spec_examples import EXAMPLES, check_spec_output

ROOT = Path(__file__).resolve().parents[2]

#: the async spec examples → their sync form: (what the async file says, what the sync form says)
TO_SYNC = [
    (
        "from alphora.sandbox import ResourceLimits, Sandbox\n",
        "from alphora.sandbox import ResourceLimits\nfrom alphora.sandbox.sync import Sandbox\n",
    ),
    ("    from alphora.sandbox import Sandbox\n", "    from alphora.sandbox.sync import Sandbox\n"),
    ("async with ", "with "),
    ("async def ", "def "),
    ("await ", ""),
    ("asyncio.run(main())", "main()"),
]


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())


@pytest.fixture(autouse=True)
def _no_leftover_loop_thread() -> Iterator[None]:
    yield
    assert not loop_thread_alive(), "a sync object kept the loop thread alive after the test"
    assert THREAD_NAME not in _threads()


def test_spec_examples_run_in_sync_form(tmp_path: Path) -> None:
    """examples/spec_examples.py with async/await removed and the sync Sandbox imported: same output,
    nothing left behind, and no thread left running when the script ends."""
    source = (EXAMPLES / "spec_examples.py").read_text()
    for old, new in TO_SYNC:
        assert old in source, f"the async examples changed: {old!r} is gone; update TO_SYNC"
        source = source.replace(old, new)
    assert "await" not in source
    assert "async " not in source
    source += "\nimport threading\nprint('threads left:', [t.name for t in threading.enumerate()])\n"
    script = tmp_path / "sync_spec_examples.py"
    script.write_text(source)
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "ALPHORA_SANDBOX_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    check_spec_output(out.stdout, home)
    assert "threads left: ['MainThread']\n" in out.stdout


def test_spec_tools_and_manager_examples_sync(tmp_path: Path) -> None:
    """The spec's SandboxTools and SandboxManager blocks, sync; asyncio.gather becomes two threads."""
    with Sandbox.create_local(base_path=tmp_path) as sandbox:
        tools = SandboxTools(sandbox)
        result = tools.run_python_code("print(1 + 1)")
        assert result["success"]
        assert result["output"] == "2\n"
        result = tools.save_file("test.py", "print('hello')")
        assert result["success"]
        assert sandbox.read_file("test.py") == "print('hello')"
        assert {t["function"]["name"] for t in tools.get_openai_tools()} >= {"run_python_code", "save_file"}
        assert tools.execute_tool("run_python_file", {"file_path": "test.py"})["output"] == "hello\n"

    with SandboxManager(base_path=str(tmp_path / "sandboxes")) as manager:
        sandbox1 = manager.create_sandbox("worker-1")
        sandbox2 = manager.create_sandbox("worker-2")
        with ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(lambda s: s[0].run(s[1]), [(sandbox1, "print('worker 1')"), (sandbox2, "print('worker 2')")])
            )
        sandboxes = manager.list_sandboxes()
        sandbox = manager.get_sandbox("worker-1")
        manager.destroy_sandbox("worker-1")
        assert [r.stdout for r in results] == ["worker 1\n", "worker 2\n"]
        assert sandboxes == [sandbox1, sandbox2]
        assert sandbox is sandbox1
        assert sandbox1.status is SandboxStatus.DESTROYED
    assert sandbox2.status is SandboxStatus.DESTROYED
    assert not sandbox2.workspace_path.exists()


def test_pool_sync(tmp_path: Path) -> None:
    """A warm pool from plain threads; a sandbox taken from it outlives the pool's shutdown."""
    with SandboxPool("local", size=2, base_path=tmp_path) as pool:
        with ThreadPoolExecutor(2) as threads:
            outs = list(threads.map(lambda i: _pool_run(pool, i), range(4)))
        assert outs == ["0\n", "1\n", "2\n", "3\n"]
        taken = pool.take()
    assert pool.closed
    assert taken.run("print('still here')").stdout == "still here\n"
    taken.destroy()


def _pool_run(pool: SandboxPool, i: int) -> str:
    with pool.acquire(timeout=60) as sandbox:
        assert isinstance(sandbox, Sandbox)
        return sandbox.run(f"print({i})").stdout


def test_threads_share_one_sandbox_and_nothing_is_left(tmp_path: Path) -> None:
    before = _threads()
    sandbox = Sandbox.create_local(base_path=tmp_path)
    sandbox.start()
    assert loop_thread_alive()
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: sandbox.run(f"print({i} * 2)").stdout, range(8)))
    assert outs == [f"{i * 2}\n" for i in range(8)]
    sandbox.stop()  # the loop thread ends with the last user …
    assert not loop_thread_alive()
    assert _threads() == before
    sandbox.start()  # … and a later call starts a fresh one
    assert sandbox.run("print('again')").stdout == "again\n"
    sandbox.destroy()
    assert not loop_thread_alive()
    assert _threads() == before


def test_stream_and_session_sync(tmp_path: Path) -> None:
    with Sandbox.create_local(base_path=tmp_path) as sandbox:
        items = list(sandbox.stream("for i in range(3): print(i, flush=True)"))
        assert "".join(getattr(i, "text", "") for i in items) == "0\n1\n2\n"
        assert items[-1].stdout == "0\n1\n2\n"  # the ExecutionResult comes last
        # leaving the loop early cancels the call: the sleep never finishes into a second line
        for item in sandbox.stream(
            "import time\nprint('first', flush=True)\ntime.sleep(60)\nprint('never')", timeout=120
        ):
            assert item.text == "first\n"
            break
        with sandbox.session() as py:
            py.run("x = 41")
            assert py.run("x + 1").value == "42"


def test_fork_checkpoint_and_resume_sync(tmp_path: Path) -> None:
    """A session fork, and an async factory (Sandbox.resume) made a sync one."""
    from alphora.sandbox.storage.base import StorageConfig
    from alphora.sandbox.storage.local import LocalStorage

    store = LocalStorage(StorageConfig.local(str(tmp_path / "store")))
    with Sandbox.create_local(base_path=tmp_path / "a") as sandbox:
        sandbox.write_file("a.txt", "A")
        with sandbox.session() as py:
            py.run("x = 41")
            fork = py.fork()
            assert isinstance(fork, PythonSession)
            assert fork.run("x + 1").value == "42"
            fork.close()
            sandbox.checkpoint(store, "cp")
    resumed = Sandbox.resume(store, "cp", base_path=tmp_path / "b")
    try:
        assert isinstance(resumed, Sandbox)
        assert resumed.read_file("a.txt") == "A"
        with resumed.session() as py:
            assert py.run("x").value == "41"
    finally:
        resumed.destroy()


def test_refused_inside_a_running_loop(tmp_path: Path) -> None:
    """From the thread of a running loop a sync call would block that loop: a clear error instead."""
    sandbox = Sandbox.create_local(base_path=tmp_path)

    async def inside() -> None:
        with pytest.raises(SyncInAsyncError, match=r"Sandbox\.start .*async API") as refused:
            sandbox.start()
        # where a user meets this without writing async code: a notebook's kernel runs a loop
        assert "Jupyter and IPython run such a loop in the main thread" in str(refused.value)

    asyncio.run(inside())
    assert sandbox.status is SandboxStatus.CREATED
    assert not loop_thread_alive()
    # and from the sync API's own loop (an on_output callback): an error, not a deadlock
    with sandbox:
        seen: list[BaseException] = []

        def on_output(chunk: object) -> None:
            try:
                sandbox.get_env("X")
            except SyncInAsyncError as exc:
                seen.append(exc)

        sandbox.run("print('x')", on_output=on_output)
        assert seen
        assert isinstance(seen[0], SyncInAsyncError)


def test_data_attributes_read_and_write_through(tmp_path: Path) -> None:
    sandbox = Sandbox.create_local(base_path=tmp_path, sandbox_id="named-one", keep_workspace=False)
    assert sandbox.sandbox_id == "named-one"
    assert sandbox.name == "named-one"
    assert sandbox.resource_limits.timeout_seconds > 0
    sandbox.keep_workspace = True
    assert sandbox.async_object.keep_workspace is True
    tools = SandboxTools(sandbox)
    assert tools.sandbox is sandbox  # the tools' sandbox is the same sync object
    assert {s.name for s in tools.specs} >= {"run_python_code"}
    with pytest.raises(AttributeError):
        sandbox.no_such_attribute  # noqa: B018


def test_usable_from_a_worker_thread_of_a_running_loop(tmp_path: Path) -> None:
    """An async app handing a sync tool to asyncio.to_thread: that thread runs no loop, so it works."""

    def sync_tool() -> str:
        with Sandbox.create_local(base_path=tmp_path) as sandbox:
            return sandbox.run("print('from a worker')").stdout

    async def app() -> str:
        return await asyncio.to_thread(sync_tool)

    assert asyncio.run(app()) == "from a worker\n"


def test_an_open_sandbox_dropped_without_closing_is_closed(tmp_path: Path) -> None:
    """Forgetting stop() leaks nothing: the garbage collector's finalizer closes it on the loop (with
    a ResourceWarning naming it) and the loop thread ends."""
    held = [Sandbox.create_local(base_path=tmp_path)]
    held[0].start()
    workspace = held[0].workspace_path
    with pytest.warns(ResourceWarning, match="garbage-collected while open"):
        held.clear()  # the last reference: CPython finalizes the sync sandbox here
    gc.collect()
    deadline = time.monotonic() + 60
    while (loop_thread_alive() or workspace.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not workspace.exists()
    assert not loop_thread_alive()


def test_open_objects_are_closed_at_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "from alphora.sandbox.sync import Sandbox, SandboxManager\n"
        "kept = Sandbox.create_local()\n"
        "kept.start()\n"
        "manager = SandboxManager()\n"
        "manager.start()\n"
        "worker = manager.create_sandbox('worker')\n"
        "print(kept.run('print(1)').stdout, worker.run('print(2)').stdout)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "ALPHORA_SANDBOX_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2"]
    assert "failed" not in out.stderr
    assert not list(tmp_path.iterdir()), "sandboxes left open by the script were not removed at exit"


def test_async_objects_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"sync API takes alphora\.sandbox\.sync\.Sandbox"):
        SandboxTools(async_api.Sandbox.create_local(base_path=tmp_path))


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"),
    [
        (Sandbox, async_api.Sandbox),
        (SandboxManager, async_api.SandboxManager),
        (SandboxTools, async_api.SandboxTools),
        (SandboxPool, async_api.SandboxPool),
        (PythonSession, AsyncPythonSession),
    ],
)
def test_same_methods_names_and_docs(sync_cls: type, async_cls: type) -> None:
    renames = {"__aenter__": "__enter__", "__aexit__": "__exit__", "aclose": "close"}
    for name, member in inspect.getmembers(async_cls):
        if name.startswith("_") and name not in renames:
            continue
        if not (callable(member) or isinstance(member, property)):
            continue  # plain data attributes read through on instances (test_data_attributes_...)
        mirrored = getattr(sync_cls, renames.get(name, name), None)
        assert mirrored is not None, f"{sync_cls.__name__} has no {name}"
        if callable(member) and name not in renames:
            assert inspect.getdoc(mirrored) == inspect.getdoc(member), name
            assert list(inspect.signature(mirrored).parameters) == list(inspect.signature(member).parameters), name


def test_generated_module_is_up_to_date() -> None:
    script = ROOT / "packages" / "alphora-sandbox-core" / "scripts" / "gen_sync.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_sync_quickstart_example_runs(tmp_path: Path) -> None:
    """examples/sync_quickstart.py as written (docs/sync.md shows it)."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "sync_quickstart.py")],
        env={**os.environ, "ALPHORA_SANDBOX_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Hello, World!\n\nHello, file!\nHELLO\n")
    assert "session value: 42\n" in out.stdout
    assert "['hi from worker-0', 'hi from worker-1', 'hi from worker-2']\n" in out.stdout
    assert not list(tmp_path.iterdir())
