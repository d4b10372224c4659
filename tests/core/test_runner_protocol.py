"""The runner's shape: one protocol module for both ends, the runner shipped through an in-memory
importer (no concatenation), public RunnerBackend extension points, older Pythons in the sandbox."""

from __future__ import annotations

import ast
import asyncio
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import alphora.sandbox.runner as runner_pkg
from alphora.sandbox.builtin import local_backend
from alphora.sandbox.runner import RUNNER_MODULES, RUNNER_PACKAGE, bootstrap_argv, protocol, source_frame
from alphora.sandbox.runner.backend import RunnerBackend
from alphora.sandbox.runner.transport import ProcessConnection, RunnerConnection

RUNNER_DIR = Path(runner_pkg.__file__).parent
CALL = {"timeout": 30, "max_output": 1 << 20}


def _frame_code(path: Path) -> list[str]:
    """Calls in ``path`` that build or parse frames: a length prefix (``int.to_bytes`` /
    ``int.from_bytes``) or a JSON body (``json.dumps`` / ``json.loads``). String literals, such as the
    bootstrap program, are not code here."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr, owner = node.func.attr, node.func.value
        if attr in ("to_bytes", "from_bytes") or (
            attr in ("dumps", "loads") and isinstance(owner, ast.Name) and owner.id == "json"
        ):
            found.append(f"{path.name}:{node.lineno}: .{attr}()")
    return found


def test_protocol_py_is_the_only_place_frames_are_encoded_or_decoded() -> None:
    files = [*sorted(RUNNER_DIR.glob("*.py")), Path(local_backend.__file__)]
    offenders = [hit for f in files if f.name != "protocol.py" for hit in _frame_code(f)]
    assert offenders == []
    assert _frame_code(RUNNER_DIR / "protocol.py")  # (the check does see frame code where it is)
    # the frame limit is defined once
    defined = [f.name for f in RUNNER_DIR.glob("*.py") if "MAX_FRAME =" in f.read_text(encoding="utf-8")]
    assert defined == ["protocol.py"]


def test_both_ends_use_the_protocol_module() -> None:
    from alphora.sandbox.runner import child, client, kernel, server, sessions

    assert server.encode is protocol.encode is kernel.encode is sessions.encode
    assert server.FrameBuffer is protocol.FrameBuffer is sessions.FrameBuffer
    assert child.read_frame_blocking is protocol.read_frame_blocking is kernel.read_frame_blocking
    assert client.decode_body is protocol.decode_body
    assert client.parse_header is protocol.parse_header
    assert client.chunk_header is protocol.chunk_header


def test_frames_round_trip_and_a_corrupt_length_is_refused() -> None:
    msg = {"id": 7, "op": "fs", "path": "caf\u00e9/\udcff"}  # a lone surrogate survives (surrogatepass)
    data = protocol.encode(msg) * 2
    buf = protocol.FrameBuffer()
    assert buf.feed(data[:5]) == []
    assert buf.feed(data[5:]) == [msg, msg]
    with pytest.raises(ValueError, match="corrupt"):
        protocol.FrameBuffer().feed(protocol.header(protocol.MAX_FRAME + 1))


def test_binary_frames_carry_raw_bytes_and_are_refused_where_not_expected() -> None:
    data = bytes(range(256))
    frame = protocol.chunk_header(9, len(data)) + data + protocol.chunk_header(9, 0)
    json_frame = protocol.encode({"id": 9, "op": "ping"})
    buf = protocol.FrameBuffer(binary=True)
    assert buf.feed(frame[:7]) == []
    assert buf.feed(frame[7:] + json_frame) == [
        {"id": 9, protocol.BIN: data},
        {"id": 9, protocol.BIN: b""},
        {"id": 9, "op": "ping"},
    ]
    assert len(frame) == 2 * 8 + len(data)  # 4 bytes of length, 4 of id: no encoding around payloads
    with pytest.raises(ValueError, match="unexpected binary frame"):
        protocol.FrameBuffer().feed(frame)  # a session interpreter's stream carries no file bytes
    with pytest.raises(ValueError, match="corrupt"):
        protocol.FrameBuffer(binary=True).feed((protocol.BINARY | 3).to_bytes(4, "big"))  # no room for the id
    with pytest.raises(ValueError, match="corrupt"):
        protocol.FrameBuffer(binary=True).feed((protocol.BINARY | (protocol.CHUNK_MAX + 5)).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="at most"):
        protocol.chunk_header(1, protocol.CHUNK_MAX + 1)
    with pytest.raises(ValueError, match="unexpected binary frame"):
        protocol.frame_size(frame[:4])


def test_no_concatenation_switch_in_the_package() -> None:
    for path in RUNNER_DIR.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "_ALPHORA_INLINED" not in text, path
        assert "_ALPHORA_SAFEFS" not in text, path


def _raw_runner(python: str, cwd: Path, same_interpreter: bool = False) -> subprocess.Popen[bytes]:
    argv = bootstrap_argv(python)
    argv.insert(1, "-I")  # nothing of alphora importable: the runner must come from the frame
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin is not None
    proc.stdin.write(source_frame(same_interpreter))
    return proc


def _call(proc: subprocess.Popen[bytes], rid: int, msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(protocol.encode({**msg, "id": rid}))
    proc.stdin.flush()
    out = ""
    while True:
        head = proc.stdout.read(protocol.HEADER)
        assert len(head) == protocol.HEADER, proc.stderr.read().decode() if proc.stderr else ""
        ev = protocol.decode_body(proc.stdout.read(protocol.frame_size(head)))
        if ev["ev"] == protocol.EV_OUT:  # rich outputs of a session cell show as their MIME types
            out += "".join(f"[{a['mime_type']}]" for a in ev["a"]) if ev["s"] == protocol.DISPLAY_STREAM else ev["d"]
            continue
        return out, ev


@pytest.mark.parametrize("same_interpreter", [False, True], ids=["source", "marshal"])
def test_the_runner_boots_as_ordinary_modules_from_memory(tmp_path: Path, same_interpreter: bool) -> None:
    import sys

    proc = _raw_runner(sys.executable, tmp_path, same_interpreter)
    try:
        _, hello = _call(proc, 1, {"op": "hello", "workspace": str(tmp_path), "env": {"PATH": "/usr/bin:/bin"}})
        assert hello["version"] == protocol.PROTOCOL_VERSION
        # a forked call sees the runner's modules: exactly the shipped ones, under their package
        code = (
            f"import sys, json; print(json.dumps(sorted(m for m in sys.modules if m.startswith({RUNNER_PACKAGE!r}))))"
        )
        out, done = _call(proc, 2, {"op": "exec", **CALL, "kind": "python", "code": code})
        assert done["rc"] == 0, out
        assert json.loads(out) == sorted([RUNNER_PACKAGE, *(f"{RUNNER_PACKAGE}.{m}" for m in RUNNER_MODULES)])
        # ... and cannot import them anew: the in-memory finder is gone once the runner is loaded
        out, done = _call(
            proc,
            3,
            {
                "op": "exec",
                **CALL,
                "kind": "python",
                "code": f"import sys; [sys.modules.pop(m) for m in list(sys.modules) "
                f"if m.startswith({RUNNER_PACKAGE!r})]; import {RUNNER_PACKAGE}",
            },
        )
        assert done["rc"] == 1
        assert "ModuleNotFoundError" in out
        _call(proc, 4, {"op": "shutdown"})
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def _starts(exe: str, minor: int) -> bool:
    """True if ``exe`` is a python3.<minor> that starts with nothing but PATH (pyenv shims do not)."""
    if not exe or not os.access(exe, os.X_OK):
        return False
    probe = subprocess.run(
        [exe, "-I", "-c", "import sys; print(sys.version_info[1])"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return probe.returncode == 0 and probe.stdout.strip() == str(minor)


def _older_pythons() -> list[Any]:
    found: list[Any] = []
    for minor in (8, 9):
        cands = [
            *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))),
            shutil.which(f"python3.{minor}") or "",
        ]
        exe = next((c for c in cands if _starts(c, minor)), None)
        if exe is None:
            found.append(
                pytest.param(
                    "", id=f"3.{minor}", marks=pytest.mark.skip(reason=f"no working python3.{minor} on this machine")
                )
            )
        else:
            found.append(pytest.param(exe, id=f"3.{minor}"))
    return found


@pytest.mark.parametrize("python", _older_pythons())
def test_the_runner_runs_on_python_3_8_and_3_9(python: str, tmp_path: Path) -> None:
    """The sandbox's python3 may be as old as 3.8: calls, exit statuses (os.waitstatus_to_exitcode
    is 3.9+), rich outputs of a session cell, a session whose interpreter dies."""
    proc = _raw_runner(python, tmp_path)
    try:
        _, hello = _call(proc, 1, {"op": "hello", "workspace": str(tmp_path), "env": {"PATH": "/usr/bin:/bin"}})
        assert hello["python_version"][:2] in ([3, 8], [3, 9])
        out, done = _call(proc, 2, {"op": "exec", **CALL, "kind": "shell", "code": "echo hi; exit 3"})
        assert (out, done["rc"]) == ("hi\n", 3)
        _, done = _call(proc, 3, {"op": "exec", **CALL, "kind": "shell", "code": "kill -9 $$"})
        assert done["rc"] == -9
        _call(proc, 4, {"op": "session_open", "name": "s"})
        shown, done = _call(  # the display protocol (runner/display.py) on an old interpreter
            proc,
            40,
            {
                "op": "session_run",
                **CALL,
                "grace": 2,
                "name": "s",
                "code": "display({'text/markdown': '**hi**'}, raw=True)\n"
                "class C:\n    def _repr_svg_(self): return '<svg/>'\n"
                "C()",
                "display": {"figure_formats": ["png"]},
            },
        )
        assert done["ok"], done
        assert shown == "[text/markdown][image/svg+xml][text/plain]"
        _, done = _call(
            proc, 5, {"op": "session_run", **CALL, "grace": 2, "name": "s", "code": "import os; os._exit(7)"}
        )
        assert done["state_lost"]
        assert "exit code 7" in done["error"]
        _call(proc, 6, {"op": "shutdown"})
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


# -- RunnerBackend's extension points -------------------------------------------------------------


class PublicHooks(RunnerBackend):
    """A backend written against the public extension points."""

    name = "public-hooks"

    async def spawn_runner(self) -> RunnerConnection:
        proc = await asyncio.create_subprocess_exec(
            *bootstrap_argv("python3"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workspace_path,
            env=self.runner_env(),
            start_new_session=True,
        )
        return ProcessConnection(proc)

    def runner_env(self) -> dict[str, str]:
        return {**super().runner_env(), "HOOKED": "public"}


class OldHooks(RunnerBackend):
    """A backend written against the underscore names of earlier versions."""

    name = "old-hooks"

    async def _spawn_runner(self) -> RunnerConnection:
        proc = await asyncio.create_subprocess_exec(
            *bootstrap_argv("python3"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workspace_path,
            env=self._runner_env(),
            start_new_session=True,
        )
        return ProcessConnection(proc)

    def _runner_env(self) -> dict[str, str]:
        return {**super()._runner_env(), "HOOKED": "old"}


class NewOverOld(OldHooks):
    def runner_env(self) -> dict[str, str]:
        return {**super().runner_env(), "ALSO": "new"}


def test_spawn_runner_is_required() -> None:
    class Incomplete(RunnerBackend):
        name = "incomplete"

    with pytest.raises(TypeError, match="spawn_runner"):
        Incomplete(sandbox_id="x")  # type: ignore[abstract]


def test_state_is_set_up_by_init(tmp_path: Path) -> None:
    b = PublicHooks(sandbox_id="p", workspace_path=tmp_path)
    assert {"_client", "_started", "_generation", "_runner_lock", "_pending_cancels"} <= set(vars(b))
    assert b.python == "python3"


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (PublicHooks, {"HOOKED": "public"}),
        (OldHooks, {"HOOKED": "old"}),
        (NewOverOld, {"HOOKED": "old", "ALSO": "new"}),
    ],
)
async def test_public_and_old_hook_names(tmp_path: Path, cls: type[RunnerBackend], expected: dict[str, str]) -> None:
    b = cls(sandbox_id="h", workspace_path=tmp_path / "ws")
    if cls is not NewOverOld:  # (an old-name caller of a new override below an old one gets the old one)
        assert b.runner_env() == b._runner_env()
    await b.start()
    try:
        code = "import os, json; print(json.dumps({k: os.environ[k] for k in ('HOOKED', 'ALSO') if k in os.environ}))"
        r = await b.execute_code(code)
        assert json.loads(r.stdout) == expected, r
        assert (await (await b.open_session()).run("21 * 2")).value == "42"
    finally:
        await b.stop()
