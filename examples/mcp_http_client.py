"""MCP over streamable HTTP: one server, two authenticated clients with a sandbox each, one refused.

    pip install 'alphora-sandbox[mcp]'
    python examples/mcp_http_client.py

It starts ``alphora-sandbox mcp --transport http`` on a free loopback port with two tokens (in the
``ALPHORA_SANDBOX_MCP_TOKENS`` variable), connects as "alice" and as "bob" with the mcp SDK's HTTP
client, shows that neither sees the other's files or variables, shows a client without a token
refused with 401, and stops the server (which destroys every session's sandbox).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys

import httpx2  # comes with the mcp SDK
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def start_server(tokens: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "ALPHORA_SANDBOX_MCP_TOKENS": ",".join(f"{n}={t}" for n, t in tokens.items())}
    server = subprocess.Popen(
        [sys.executable, "-m", "alphora.sandbox.tools.mcp_server", "--transport", "http", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    for line in server.stderr:  # the server names its URL once it is ready
        match = re.search(r"on (http://\S+/mcp)", line)
        if match:
            return server, match.group(1)
    raise SystemExit("the server did not start")


def connect(url: str, token: str) -> Client:
    headers = {"Authorization": f"Bearer {token}"}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))))


async def main() -> None:
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    server, url = start_server(tokens)
    print("server:", url)
    try:
        async with connect(url, tokens["alice"]) as alice, connect(url, tokens["bob"]) as bob:
            await alice.call_tool("save_file", {"path": "notes.txt", "content": "alice's notes"})
            await alice.call_tool("set_environment_variable", {"key": "OWNER", "value": "alice"})
            probe = {"code": "import os; print(os.environ.get('OWNER'), os.path.exists('notes.txt'))"}
            for name, client in (("alice", alice), ("bob", bob)):
                result = await client.call_tool("run_python_code", probe)
                print(f"{name}: OWNER, notes.txt exists ->", result.structured_content["output"].strip())

        async with httpx2.AsyncClient() as http:
            hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "anon", "version": "0"}}}
            refused = await http.post(url, json=hello, headers={"Accept": "application/json, text/event-stream"})
            print("no token:", refused.status_code, refused.json()["error_description"])
    finally:
        server.terminate()
        print("server stopped, exit status", server.wait(60))


if __name__ == "__main__":
    asyncio.run(main())
