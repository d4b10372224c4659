"""The runner program on its own (bootstrapped into a plain python3) and safefs."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox.backend import Backend
from alphora.sandbox.runner import (
    BOOT,
    RUNNER_MODULES,
    RUNNER_PACKAGE,
    _module_sources,
    bootstrap_argv,
    protocol,
    runner_source,
    safefs,
    source_frame,
)
from alphora.sandbox.runner.client import ProcessConnection, RunnerBackend, RunnerConnection
from alphora.sandbox.testing import BackendContractTests


def _working_pythons() -> list[str]:
    """The host's python3 interpreters that actually start (pyenv shims may not)."""
    found: list[str] = []
    for cand in ("/usr/bin/python3", sys.executable, *(shutil.which(f"python3.{m}") or "" for m in (10, 12, 13))):
        if not cand or not os.path.exists(cand) or cand in found:
            continue
        probe = subprocess.run(
            [cand, "-I", "-c", "import sys; print(sys.version_info >= (3, 10))"],
            capture_output=True,
            text=True,
            env={"PATH": os.environ.get("PATH", "")},
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            found.append(cand)
    return found


PLAIN_PYTHONS = _working_pythons()
#: what the client always sends with an exec request / a session cell (the runner has no defaults)
CALL = {"timeout": 30, "max_output": 1 << 20}
CELL = {**CALL, "grace": 2}


class RawRunner:
    """Drives a runner synchronously over pipes, the way any host could."""

    def __init__(self, python: str, cwd: Path, as_module: bool = False) -> None:
        if as_module:  # the package's own modules, no bootstrap
            argv = [python, "-m", "alphora.sandbox.runner"]
        else:  # -I: isolated mode, so nothing of alphora (or the host venv) can be imported by the runner
            argv = bootstrap_argv(python)
            argv.insert(1, "-I")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.stdout = self.proc.stdout
        if not as_module:
            self.stdin.write(source_frame())
        self.next_id = 0

    def send(self, msg: dict[str, Any]) -> int:
        self.next_id += 1
        body = json.dumps({**msg, "id": self.next_id}).encode()
        self.stdin.write(len(body).to_bytes(4, "big") + body)
        self.stdin.flush()
        return self.next_id

    def send_chunk(self, rid: int, data: bytes) -> None:
        """A binary frame of request ``rid``: the length with the top bit set, the id, raw bytes."""
        self.stdin.write(((1 << 31) | (len(data) + 4)).to_bytes(4, "big") + rid.to_bytes(4, "big") + data)
        self.stdin.flush()

    def recv(self) -> dict[str, Any]:
        head = self.stdout.read(4)
        assert len(head) == 4, self.proc.stderr.read().decode() if self.proc.stderr else ""
        n = int.from_bytes(head, "big")
        if n & (1 << 31):  # a binary frame
            body = self.stdout.read(n & ~(1 << 31))
            return {"id": int.from_bytes(body[:4], "big"), "bin": body[4:]}
        result: dict[str, Any] = json.loads(self.stdout.read(n))
        return result

    def call(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rid = self.send(msg)
        events: list[dict[str, Any]] = []
        while True:
            ev = self.recv()
            assert ev["id"] == rid
            if ev.get("ev") in ("done", "error"):
                return events, ev
            events.append(ev)

    def close(self) -> int:
        self.call({"op": "shutdown"})
        self.stdin.close()
        return self.proc.wait(5)


def test_runner_source_is_self_contained_stdlib_only() -> None:
    """Every shipped module (and the loader around them) imports the stdlib or, relatively, another
    shipped module; nothing of alphora."""
    stdlib = set(sys.stdlib_module_names)
    trees = {"<loader>": ast.parse(runner_source())}
    trees.update({name: ast.parse(src) for name, src in _module_sources().items()})
    for where, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom):  # relative: another shipped module
                assert node.level == 1, (where, node.module)
                targets = [node.module] if node.module else [a.name for a in node.names]
                assert all(t in RUNNER_MODULES for t in targets), (where, targets)
                continue
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top == "__future__" or (where == "<loader>" and top == RUNNER_PACKAGE), name
    assert len(BOOT) < 400


@pytest.mark.parametrize("python", PLAIN_PYTHONS)
def test_bootstrap_into_a_plain_interpreter(python: str, tmp_path: Path) -> None:
    r = RawRunner(python, tmp_path)
    _, hello = r.call({"op": "hello", "workspace": str(tmp_path), "env": {"PATH": "/usr/bin:/bin"}})
    assert hello["ev"] == "done"
    assert hello["version"] == protocol.PROTOCOL_VERSION
    events, done = r.call(
        {"op": "exec", **CALL, "kind": "python", "code": "import sys; print('hi', sys.flags.isolated)"}
    )
    assert "".join(e["d"] for e in events) == "hi 1\n"
    assert done["rc"] == 0
    events, done = r.call({"op": "exec", **CALL, "kind": "shell", "code": "echo $0 >&2; exit 5"})
    assert events == [{"id": events[0]["id"], "ev": "out", "s": "stderr", "d": "/bin/sh\n"}]
    assert done["rc"] == 5
    # file bytes: a put's binary frames, committed by the empty one; a get's come back the same way
    rid = r.send({"op": "put", "path": "x/y.bin"})
    r.send_chunk(rid, b"\x00\xff")
    r.send_chunk(rid, b"\n{")
    r.send_chunk(rid, b"")
    assert r.recv() == {"id": rid, "ev": "done", "size": 4}
    assert (tmp_path / "x" / "y.bin").read_bytes() == b"\x00\xff\n{"
    events, done = r.call({"op": "get", "path": "x/y.bin", "chunk": 3})
    assert done["ev"] == "done"
    assert events[0]["size"] == 4
    assert [e["bin"] for e in events[1:]] == [b"\x00\xff\n", b"{"]
    _, done = r.call({"op": "get", "path": "../etc/passwd"})
    assert done["ev"] == "error"
    assert done["etype"] == "PathEscape"
    assert done["path"] == "../etc/passwd"
    _, done = r.call({"op": "get", "path": "nope"})
    assert done["etype"] == "FileNotFoundError"
    _, done = r.call({"op": "bogus"})
    assert done["ev"] == "error"
    assert "unknown op" in done["msg"]
    _, done = r.call({"op": "usage"})
    assert done["process_count"] >= 1
    assert done["disk_bytes"] > 0
    _, done = r.call({"op": "session_open", "name": "s"})
    _, done = r.call({"op": "session_run", **CELL, "name": "s", "code": "y = 6 * 7\ny"})
    assert done["ok"]
    assert done["value"] == "42"
    assert r.close() == 0


def test_runner_as_a_module_of_the_package(tmp_path: Path) -> None:
    r = RawRunner(sys.executable, tmp_path, as_module=True)
    r.call({"op": "hello", "workspace": str(tmp_path), "env": {}})
    events, done = r.call({"op": "exec", **CALL, "kind": "python", "code": "1/0"})
    assert done["rc"] == 1
    stderr = "".join(e["d"] for e in events)
    assert stderr.startswith("Traceback")
    assert "ZeroDivisionError" in stderr
    assert "alphora" not in stderr
    _, done = r.call({"op": "session_open", "name": "m"})
    _, done = r.call({"op": "session_run", **CELL, "name": "m", "code": "2 ** 10"})
    assert done["value"] == "1024"
    assert r.close() == 0


def test_the_runner_has_no_defaults_for_what_the_client_always_sends(tmp_path: Path) -> None:
    r = RawRunner(sys.executable, tmp_path)
    r.call({"op": "hello", "workspace": str(tmp_path), "env": {}})
    r.call({"op": "session_open", "name": "s"})
    for op, fields in (("exec", CALL), ("session_run", {**CELL, "code": ""})):
        for missing in fields:
            msg = {"op": op, **CELL, "kind": "python", "name": "s", "code": "open('ran', 'w').close()"}
            del msg[missing]
            _, done = r.call(msg)
            assert done["ev"] == "error", (op, missing, done)
            assert done["msg"] == f"{op} request without {missing!r}"
    assert not (tmp_path / "ran").exists()
    r.close()


def _temp_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_put_refused_at_once_and_cancelled_leave_nothing(tmp_path: Path) -> None:
    """A refused ``put`` is answered at once; its frames still coming are dropped and the runner
    goes on serving. A ``cancel`` of an unfinished ``put`` removes its temp file; the target keeps
    its old content."""
    r = RawRunner(sys.executable, tmp_path)
    r.call({"op": "hello", "workspace": str(tmp_path), "env": {}})
    rid = r.send({"op": "put", "path": "../escape.bin"})
    refused = r.recv()
    assert (refused["id"], refused["ev"], refused["etype"]) == (rid, "error", "PathEscape")
    r.send_chunk(rid, b"dropped")
    r.send_chunk(rid, b"")
    (tmp_path / "keep.bin").write_bytes(b"old")
    rid = r.send({"op": "put", "path": "keep.bin"})
    r.send_chunk(rid, b"half of the new content")
    r.call({"op": "ping"})  # the put has started: its temp file is there
    assert len(_temp_files(tmp_path)) == 1
    _, done = r.call({"op": "cancel", "target": rid})
    assert done["ev"] == "done"
    r.send_chunk(rid, b"late frame of the cancelled put")
    _, done = r.call({"op": "fs", "fn": "stat", "path": "keep.bin"})
    assert done["entry"]["size"] == 3
    assert (tmp_path / "keep.bin").read_bytes() == b"old"
    assert _temp_files(tmp_path) == []
    assert not (tmp_path.parent / "escape.bin").exists()
    r.close()


def test_get_sends_at_most_a_window_ahead_of_the_grants(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"abcdefghij")
    r = RawRunner(sys.executable, tmp_path)
    r.call({"op": "hello", "workspace": str(tmp_path), "env": {}})
    rid = r.send({"op": "get", "path": "f.bin", "chunk": 3, "window": 2})
    assert r.recv() == {"id": rid, "ev": "out", "size": 10}
    assert [r.recv(), r.recv()] == [{"id": rid, "bin": b"abc"}, {"id": rid, "bin": b"def"}]
    r.call({"op": "ping"})  # answered while the get waits: nothing more came before it
    r.send({"op": "more", "target": rid, "n": 5})  # (no answer of its own)
    assert [r.recv(), r.recv()] == [{"id": rid, "bin": b"ghi"}, {"id": rid, "bin": b"j"}]
    assert r.recv() == {"id": rid, "ev": "done"}
    r.close()


def test_concurrent_requests_interleave(tmp_path: Path) -> None:
    r = RawRunner(sys.executable, tmp_path)
    r.call({"op": "hello", "workspace": str(tmp_path), "env": {}})
    slow = r.send({"op": "exec", **CALL, "kind": "python", "code": "import time; time.sleep(0.5); print('slow')"})
    fast = r.send({"op": "exec", **CALL, "kind": "python", "code": "print('fast')"})
    order: list[int] = []
    while len(order) < 2:
        ev = r.recv()
        if ev["ev"] == "done":
            order.append(ev["id"])
    assert order == [fast, slow]
    r.close()


def test_eof_on_the_stream_shuts_everything_down(tmp_path: Path) -> None:
    r = RawRunner(sys.executable, tmp_path)
    r.call({"op": "hello", "workspace": str(tmp_path), "env": {"PATH": "/usr/bin:/bin"}})
    r.send({"op": "exec", **CALL, "kind": "shell", "code": "sleep 300 & echo $! > bg.pid; sleep 300"})
    for _ in range(100):
        if (tmp_path / "bg.pid").exists() and (tmp_path / "bg.pid").read_text().strip():
            break
        import time

        time.sleep(0.05)
    pid = int((tmp_path / "bg.pid").read_text())
    r.stdin.close()
    assert r.proc.wait(5) == 0
    import psutil

    try:
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass


# -- safefs ---------------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    return root


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "a/\x00b", "a/.."])
def test_safefs_lexical_refusals(ws: Path, bad: str) -> None:
    for fn in (
        lambda: safefs.read(ws, bad),
        lambda: safefs.write(ws, bad, b"x"),
        lambda: safefs.stat(ws, bad),
        lambda: safefs.remove(ws, bad),
        lambda: safefs.mkdir(ws, bad),
    ):
        with pytest.raises(safefs.PathEscape) as ei:
            fn()
        assert ei.value.path == bad


def test_safefs_symlinks_anywhere_are_refused(ws: Path) -> None:
    outside = ws.parent / "outside"
    (ws / "d").mkdir()
    os.symlink(outside, ws / "d" / "link")
    os.symlink(outside / "secret", ws / "filelink")
    for rel in ("d/link/secret", "filelink"):
        with pytest.raises(safefs.PathEscape):
            safefs.read(ws, rel)
    with pytest.raises(safefs.PathEscape):
        safefs.write(ws, "d/link/new", b"x")
    with pytest.raises(safefs.PathEscape):
        safefs.write(ws, "filelink", b"x")
    with pytest.raises(safefs.PathEscape):
        safefs.mkdir(ws, "d/link/sub")
    with pytest.raises(safefs.PathEscape):
        safefs.listdir(ws, "d/link")
    with pytest.raises(safefs.PathEscape):
        safefs.copy(ws, "filelink", "copy")
    with pytest.raises(safefs.PathEscape):
        safefs.move(ws, "filelink", "moved")
    assert not (outside / "new").exists()
    assert not (outside / "sub").exists()
    assert (outside / "secret").read_text() == "s"
    entries = {e["path"]: e for e in safefs.listdir(ws, "", recursive=True)}
    assert entries["d/link"]["is_symlink"]
    assert "d/link/secret" not in entries
    assert safefs.remove(ws, "d") is True
    assert (outside / "secret").read_text() == "s"


def test_safefs_hard_links_and_special_files_are_refused(ws: Path) -> None:
    os.link(ws.parent / "outside" / "secret", ws / "hard")
    with pytest.raises(safefs.PathEscape, match="hard link"):
        safefs.read(ws, "hard")
    os.mkfifo(ws / "fifo")
    with pytest.raises(safefs.PathEscape, match="regular"):
        safefs.read(ws, "fifo")


def test_safefs_operations(ws: Path) -> None:
    safefs.write(ws, "a/b/c.txt", b"hello")
    assert safefs.read(ws, "a/b/c.txt") == b"hello"
    assert safefs.read(ws, "./a//b/c.txt") == b"hello"
    st = safefs.stat(ws, "a/b/c.txt")
    assert st is not None
    assert st["size"] == 5
    assert not st["is_dir"]
    assert safefs.stat(ws, "a/missing") is None
    assert safefs.stat(ws, "a/b/c.txt/x") is None
    assert safefs.stat(ws, "")["is_dir"]  # type: ignore[index]
    with pytest.raises(safefs.TooLarge):
        safefs.write(ws, "big", b"x" * 11, max_size=10)
    with pytest.raises(safefs.TooLarge):
        safefs.read(ws, "a/b/c.txt", max_size=4)
    with pytest.raises(IsADirectoryError):
        safefs.read(ws, "a")
    with pytest.raises(IsADirectoryError):
        safefs.write(ws, "a", b"x")
    with pytest.raises(FileNotFoundError):
        safefs.read(ws, "nope")
    with pytest.raises(NotADirectoryError):
        safefs.read(ws, "a/b/c.txt/d")
    safefs.copy(ws, "a", "a2")
    assert safefs.read(ws, "a2/b/c.txt") == b"hello"
    with pytest.raises(OSError, match="into itself"):
        safefs.copy(ws, "a", "a/inner")
    safefs.move(ws, "a2", "z/a3")
    assert [e["path"] for e in safefs.listdir(ws, "z", recursive=True)] == ["z/a3", "z/a3/b", "z/a3/b/c.txt"]
    safefs.mkdir(ws, "m/n/o")
    safefs.mkdir(ws, "m/n/o")
    with pytest.raises(FileExistsError):
        safefs.mkdir(ws, "a/b/c.txt")
    assert safefs.remove(ws, "z")
    assert not safefs.remove(ws, "z")
    assert safefs.disk_usage(ws) >= 5
    # atomic writes leave no temp files behind, and replace content entirely
    safefs.write(ws, "a/b/c.txt", b"new")
    assert sorted(os.listdir(ws / "a" / "b")) == ["c.txt"]
    assert safefs.read(ws, "a/b/c.txt") == b"new"
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert safefs.read(fd, "a/b/c.txt") == b"new"
    finally:
        os.close(fd)


def test_safefs_rmtree_does_not_follow_a_symlink_swapped_in(ws: Path) -> None:
    outside = ws.parent / "outside"
    (ws / "t" / "sub").mkdir(parents=True)
    (ws / "t" / "sub" / "f").write_text("x")
    shutil.rmtree(ws / "t" / "sub")
    os.symlink(outside, ws / "t" / "sub")
    assert safefs.remove(ws, "t")
    assert (outside / "secret").exists()


# -- a third-party backend built on RunnerBackend (the example of docs/runner.md) -----------------


class NiceBackend(RunnerBackend):
    """Like local, but every call runs at the lowest CPU priority; file ops go over the protocol."""

    name = "nice"

    async def _spawn_runner(self) -> RunnerConnection:
        proc = await asyncio.create_subprocess_exec(
            "nice",
            "-n",
            "19",
            *bootstrap_argv("python3"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workspace_path,
            env=self._runner_env(),
            start_new_session=True,
        )
        return ProcessConnection(proc)


class TestRunnerBackendSubclassContract(BackendContractTests):
    async def make_backend(self, workspace: Path) -> Backend:
        return NiceBackend(sandbox_id="nice", workspace_path=workspace)


async def test_runner_backend_subclass_niceness_and_sessions(tmp_path: Path) -> None:
    b = NiceBackend(sandbox_id="nice", workspace_path=tmp_path / "ws")
    await b.start()
    try:
        r = await b.execute_code("import os; print(os.nice(0))")
        assert r.stdout == "19\n"
        py = await b.open_session()
        await py.run("v = 3")
        assert (await py.run("v * 2")).value == "6"
        await b.write_bytes("f.txt", b"over the protocol")
        assert await b.read_bytes("f.txt") == b"over the protocol"
    finally:
        await b.stop()
