"""End to end through the ``mcp`` SDK's own client: spawn ``python -m
alphora.sandbox.tools.mcp_server`` over stdio, list and call tools, disconnect, and check that the
session's sandbox is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import ResourceLimits
from alphora.sandbox.tools import SESSION_NOTE, TOOL_SPECS, select_specs, with_timeout_cap

mcp = pytest.importorskip("mcp", reason="the mcp SDK is the [mcp] extra")


#: the module itself, and the CLI's ``alphora-sandbox mcp`` sub-command
LAUNCHERS = {"module": ["-m", "alphora.sandbox.tools.mcp_server"], "cli": ["-m", "alphora.sandbox.cli", "mcp"]}


def _params(base: Path, *extra: str, launcher: str = "module") -> Any:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "PYTHONPATH") or k.startswith("ALPHORA_SANDBOX_")
    }
    return mcp.StdioServerParameters(
        command=sys.executable,
        args=[*LAUNCHERS[launcher], "--base-path", str(base), *extra],
        env=env,
    )


def _exists(path: Path) -> bool:
    return path.exists()


def _structured(result: Any) -> dict[str, Any]:
    """The tool's result dict: structuredContent, which must equal the JSON text block."""
    assert result.structured_content == json.loads(result.content[0].text)
    assert result.is_error is (not result.structured_content["success"])
    data: dict[str, Any] = result.structured_content
    return data


@pytest.mark.timeout(120)
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
async def test_mcp_stdio_session_lists_calls_and_cleans_up(tmp_path: Path, launcher: str) -> None:
    base = tmp_path / "mcp-sandboxes"
    async with mcp.Client(_params(base, launcher=launcher), read_timeout_seconds=60) as client:
        listed = await client.list_tools()
        assert [t.name for t in listed.tools] == [s.name for s in TOOL_SPECS]
        cap = ResourceLimits().timeout_seconds  # the server's sandbox has the default limits
        for tool, spec in zip(listed.tools, TOOL_SPECS, strict=True):
            assert tool.input_schema == with_timeout_cap(spec, cap).json_schema()
            assert tool.description == spec.description
            assert tool.annotations.read_only_hint is spec.read_only

        saved = _structured(
            await client.call_tool(
                "save_file", {"path": "hello.py", "content": "import sys\nprint('hi', *sys.argv[1:])\n"}
            )
        )
        assert saved["success"] is True
        ran = _structured(await client.call_tool("run_python_file", {"file_path": "hello.py", "args": ["mcp"]}))
        assert ran["output"] == "hi mcp\n"
        assert ran["error"] == ""
        read = _structured(await client.call_tool("read_file", {"path": "hello.py"}))
        assert read["content"].startswith("import sys")

        missing = _structured(await client.call_tool("copy_file", {"source": "hello.py"}))
        assert missing["error_type"] == "invalid_arguments"
        assert "missing required argument 'dest'" in missing["error"]
        unknown = _structured(await client.call_tool("rm_rf", {}))
        assert unknown["error_type"] == "unknown_tool"
        escape = _structured(await client.call_tool("read_file", {"path": "../../etc/passwd"}))
        assert escape["error_type"] == "path_not_allowed"

        status = _structured(await client.call_tool("get_sandbox_status", {}))
        assert status["status"] == "running"
        workspace = status["workspace_path"]
        assert _exists(Path(workspace) / "hello.py")
    # the client closed stdin: the server destroyed its sandbox on the way out
    assert not _exists(Path(workspace))


@pytest.mark.timeout(120)
async def test_mcp_read_only_subset_and_stateful_session(tmp_path: Path) -> None:
    base = tmp_path / "mcp-ro"
    async with mcp.Client(
        _params(base, "--tools", "run_python_code,files", "--exclude", "delete_file", "--use-session"),
        read_timeout_seconds=60,
    ) as client:
        listed = (await client.list_tools()).tools
        names = [t.name for t in listed]
        assert names == [s.name for s in select_specs(include=["run_python_code", "files"], exclude=["delete_file"])]
        assert SESSION_NOTE in (listed[0].description or "")
        first = _structured(await client.call_tool("run_python_code", {"code": "x = 41"}))
        assert first["success"] is True
        second = _structured(await client.call_tool("run_python_code", {"code": "print(x + 1)"}))
        assert second["output"] == "42\n"
        refused = _structured(await client.call_tool("delete_file", {"path": "a"}))
        assert refused["error_type"] == "unknown_tool"
        assert "not enabled" in refused["error"]


def test_cli_rejects_unknown_tool_names() -> None:
    from alphora.sandbox.tools.mcp_server import make_parser

    with pytest.raises(SystemExit):
        make_parser().parse_args(["--tools", "rm_rf"])
    ns = make_parser().parse_args(["--read-only", "--exclude", "shell"])
    assert ns.read_only is True
    assert ns.exclude == ["shell"]


def _rpc(proc: subprocess.Popen[bytes], msg_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One JSON-RPC request over the server's stdio (newline-delimited), without the SDK."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode() + b"\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        assert line, "the server closed stdout"
        reply: dict[str, Any] = json.loads(line)
        if reply.get("id") == msg_id:
            return reply


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_session_and_still_cleans_up(tmp_path: Path, sig: signal.Signals) -> None:
    """A host that kills the server (SIGTERM, or ^C) must not leave a sandbox behind; this also
    drives the server with plain JSON-RPC, as a non-Python host would."""
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    params = _params(tmp_path / "mcp-signal")
    proc = subprocess.Popen(
        [params.command, *params.args],
        env=params.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        init = _rpc(
            proc,
            1,
            "initialize",
            {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        )
        assert init["result"]["serverInfo"]["name"] == "alphora-sandbox"
        assert proc.stdin is not None
        proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        proc.stdin.flush()
        status = _rpc(proc, 2, "tools/call", {"name": "get_sandbox_status", "arguments": {}})
        workspace = Path(status["result"]["structuredContent"]["workspace_path"])
        assert workspace.is_dir()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        assert not workspace.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
