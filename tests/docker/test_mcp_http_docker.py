"""MCP over streamable HTTP on the Docker backend: each session's sandbox is its own container.

Gated by tests/docker/conftest.py (skipped with the reason without an engine or image; fails under CI).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP HTTP server needs the mcp SDK (pip install 'alphora-sandbox[mcp]')")

from tests._support.mcp_http import Server, start_server

pytestmark = pytest.mark.docker


def _containers(docker_client: Any, server_pid: int) -> list[str]:
    found = docker_client.containers.list(all=True, filters={"label": f"org.alphora.sandbox.pid={server_pid}"})
    return sorted(c.id for c in found)


async def test_two_clients_get_two_containers(our_image: str, docker_client: Any, tmp_path: Path) -> None:
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    env = {"ALPHORA_SANDBOX_MCP_TOKENS": ",".join(f"{n}={t}" for n, t in tokens.items())}
    proc, url = start_server(tmp_path, "--backend", "docker", "--image", our_image, env=env)
    server = Server(proc, url, tmp_path / "sandboxes", tokens)
    try:
        async with server.client(tokens["alice"]) as alice, server.client(tokens["bob"]) as bob:
            await alice.call_tool("save_file", {"path": "secret.txt", "content": "alice's"})
            # outside the workspace too: /tmp is the container's own
            await alice.call_tool("run_python_code", {"code": "open('/tmp/alice-was-here', 'w').close()"})
            probe = {"code": "import os; print(os.path.exists('secret.txt'), os.path.exists('/tmp/alice-was-here'))"}
            seen_a = (await alice.call_tool("run_python_code", probe)).structured_content["output"].split()
            seen_b = (await bob.call_tool("run_python_code", probe)).structured_content["output"].split()
            assert seen_a == ["True", "True"]
            assert seen_b == ["False", "False"]
            assert len(_containers(docker_client, proc.pid)) == 2
        assert _containers(docker_client, proc.pid) == []  # each client's goodbye removed its container
    finally:
        assert server.stop() == 0
    assert _containers(docker_client, proc.pid) == []
