"""MCP over streamable HTTP: the real server process, driven by the mcp SDK's HTTP client."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP HTTP server needs the mcp SDK (pip install 'alphora-sandbox[mcp]')")

import httpx2
from mcp.shared.exceptions import MCPError

from alphora.sandbox.tools.mcp_http import TOKENS_ENV
from tests._support.mcp_http import Server, start_server

IDLE = 3.0  # the server's idle timeout in this module (seconds)
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mcp-http")
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    token_file = tmp / "tokens.txt"
    token_file.write_text("".join(f"{name} {token}\n" for name, token in tokens.items()))
    proc, url = start_server(
        tmp, "--token-file", str(token_file), "--idle-timeout", str(IDLE), "--max-sessions-per-token", "2"
    )
    srv = Server(proc, url, tmp / "sandboxes", tokens)
    try:
        yield srv
    finally:
        assert srv.stop() == 0
        assert srv.workspaces() == [], "stopping the server left sandboxes behind"


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    """``exc`` is a ``kind`` or an exception group holding one (at any depth)."""
    return isinstance(exc, kind) or any(_contains(e, kind) for e in getattr(exc, "exceptions", ()))


def _output(result: Any) -> str:
    content = result.structured_content
    assert content["success"], content
    return str(content.get("output", ""))


async def test_two_clients_are_isolated(server: Server) -> None:
    async with server.client(server.tokens["alice"]) as alice, server.client(server.tokens["bob"]) as bob:
        assert len((await alice.list_tools()).tools) == 20
        await alice.call_tool("save_file", {"path": "secret.txt", "content": "alice's"})
        await alice.call_tool("set_environment_variable", {"key": "WHO", "value": "alice"})
        seen_by_bob = (await bob.call_tool("file_exists", {"path": "secret.txt"})).structured_content
        assert seen_by_bob["exists"] is False
        probe = "import os; print(os.environ.get('WHO'), os.getcwd())"
        who_a, cwd_a = _output(await alice.call_tool("run_python_code", {"code": probe})).split()
        who_b, cwd_b = _output(await bob.call_tool("run_python_code", {"code": probe})).split()
        assert (who_a, who_b) == ("alice", "None")
        assert cwd_a != cwd_b
        assert sorted(Path(c).name for c in (cwd_a, cwd_b)) == server.workspaces()
        # bob can't reach alice's file by path either: his tools resolve inside his own workspace
        escaped = (await bob.call_tool("read_file", {"path": f"../{Path(cwd_a).name}/secret.txt"})).structured_content
        assert escaped["success"] is False
    # both sessions ended (the client's DELETE): both sandboxes are gone by the time the client hears back
    assert server.workspaces() == []


async def test_a_session_is_bound_to_its_token(server: Server) -> None:
    async with httpx2.AsyncClient() as http:
        opened = await http.post(
            server.url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {server.tokens['alice']}"}
        )
        assert opened.status_code == 200, opened.text
        sid = opened.headers["mcp-session-id"]
        hijack = await http.post(
            server.url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**ACCEPT, "Authorization": f"Bearer {server.tokens['bob']}", "mcp-session-id": sid},
        )
        assert hijack.status_code == 404
        bye = await http.delete(
            server.url, headers={"Authorization": f"Bearer {server.tokens['alice']}", "mcp-session-id": sid}
        )
        assert bye.status_code < 400


@pytest.mark.parametrize("token", [None, "not-a-configured-token-123"])
async def test_a_client_without_a_valid_token_is_refused(server: Server, token: str | None) -> None:
    before = server.workspaces()
    headers = {**ACCEPT, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with httpx2.AsyncClient() as http:
        answer = await http.post(server.url, json=INIT, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer ")
        call = await http.post(
            server.url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_python_code"}},
            headers=headers,
        )
        assert call.status_code == 401
    with pytest.raises(BaseException) as refused:  # noqa: PT011 - the SDK client reports the 401 as an MCPError in a group
        async with server.client(token) as client:
            await client.list_tools()
    assert _contains(refused.value, MCPError), refused.value
    assert server.workspaces() == before  # no sandbox was made for it


async def test_sessions_per_token_are_limited(server: Server) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            client = await stack.enter_async_context(server.client(server.tokens["alice"]))
            await client.list_tools()
        async with httpx2.AsyncClient() as http:
            third = await http.post(
                server.url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {server.tokens['alice']}"}
            )
            assert third.status_code == 429
            assert "too many open sessions for alice (limit 2)" in third.text
        async with server.client(server.tokens["bob"]) as bob:  # another token is not affected
            assert (await bob.call_tool("file_exists", {"path": "x"})).structured_content["success"]
    async with server.client(server.tokens["alice"]) as alice:  # ended sessions free their places
        await alice.list_tools()


async def test_idle_sessions_are_reaped(server: Server) -> None:
    async with server.client(server.tokens["bob"]) as bob:
        cwd = Path(_output(await bob.call_tool("run_python_code", {"code": "import os; print(os.getcwd())"})).strip())
        assert cwd.exists()
        deadline = time.monotonic() + IDLE + 30  # generous: reaped after IDLE s, checked every IDLE/4 s
        while cwd.exists() and time.monotonic() < deadline:
            await _sleep(0.2)
        assert not cwd.exists(), "the idle session's sandbox was not reaped"
        with pytest.raises(MCPError, match=r"Session not found: it ended \(idle for more than 3 s\)"):
            await bob.call_tool("file_exists", {"path": "x"})


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


def test_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "alphora.sandbox.tools.mcp_server", "--transport", "http", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if k != TOKENS_ENV}

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], env={**env, **(extra or {})}, capture_output=True, text=True, timeout=60, check=False
        )

    none = run()
    assert none.returncode == 2
    assert "no token configured" in none.stderr
    exposed = run("--no-auth", "--host", "0.0.0.0")
    assert exposed.returncode == 2
    assert "only allowed on a loopback address" in exposed.stderr
    short = run(extra={TOKENS_ENV: "short"})
    assert short.returncode == 2
    assert "5 characters long; use at least 16" in short.stderr
    missing = run("--token-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "can't read the token file" in missing.stderr


async def test_no_auth_on_loopback_and_stop_cleans_up(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path, "--no-auth")
    srv = Server(proc, url, tmp_path / "sandboxes", {})
    checked = False
    try:
        async with srv.client(None) as client:
            await client.call_tool("save_file", {"path": "a.txt", "content": "a"})
            assert len(srv.workspaces()) == 1
            assert srv.stop() == 0  # SIGTERM with a session open: its sandbox is cleaned up first
            assert srv.workspaces() == []
            checked = True
    except Exception:
        if not checked:
            raise
        # the client's own goodbye to a server that is gone may fail; what mattered was checked above
    finally:
        if proc.poll() is None:
            proc.kill()


def test_example_transcript(tmp_path: Path) -> None:
    """examples/mcp_http_client.py: two authenticated clients isolated, one refused (docs/mcp-http.md)."""
    example = Path(__file__).resolve().parents[2] / "examples" / "mcp_http_client.py"
    env = {k: v for k, v in os.environ.items() if k != TOKENS_ENV}
    out = subprocess.run(
        [sys.executable, str(example)],
        env={**env, "ALPHORA_SANDBOX_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "alice: OWNER, notes.txt exists -> alice True\n" in out.stdout
    assert "bob: OWNER, notes.txt exists -> None False\n" in out.stdout
    assert "no token: 401 Authentication required\n" in out.stdout
    assert "server stopped, exit status 0\n" in out.stdout
    assert not list(tmp_path.iterdir())


async def test_a_sandbox_that_cannot_start_is_reported(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path, "--no-auth", "--backend", "no-such-backend")
    srv = Server(proc, url, tmp_path / "sandboxes", {})
    try:
        async with srv.client(None) as client:
            with pytest.raises(MCPError, match=r"the session's sandbox did not start: .*no-such-backend"):
                await client.call_tool("run_python_code", {"code": "print(1)"})
    finally:
        assert srv.stop() == 0


async def test_warm_pool_sessions_reuse_a_reset_sandbox(tmp_path: Path) -> None:
    """--warm: a session's sandbox comes from the pool and goes back reset clean; the next session
    gets the same sandbox with nothing of the first left in it."""
    proc, url = start_server(tmp_path, "--no-auth", "--warm", "1", "--max-sessions", "1")
    srv = Server(proc, url, tmp_path / "sandboxes", {})
    probe = {"code": "import os; print(os.getcwd(), os.environ.get('WHO'), os.path.exists('first.txt'))"}
    try:
        async with srv.client(None) as first:
            await first.call_tool("save_file", {"path": "first.txt", "content": "1"})
            await first.call_tool("set_environment_variable", {"key": "WHO", "value": "first"})
            cwd_1, who_1, seen_1 = _output(await first.call_tool("run_python_code", probe)).split()
        async with srv.client(None) as second:
            cwd_2, who_2, seen_2 = _output(await second.call_tool("run_python_code", probe)).split()
        assert (who_1, seen_1) == ("first", "True")
        assert cwd_2 == cwd_1  # the same pooled sandbox …
        assert (who_2, seen_2) == ("None", "False")  # … reset clean in between
    finally:
        assert srv.stop() == 0
    assert srv.workspaces() == []  # the pool's shutdown destroyed it
