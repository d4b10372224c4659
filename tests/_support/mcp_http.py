"""A real ``alphora-sandbox mcp --transport http`` process for tests, and SDK clients for it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from alphora.sandbox.tools.mcp_http import TOKENS_ENV


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, base: Path, tokens: dict[str, str]) -> None:
        self.proc, self.url, self.base, self.tokens = proc, url, base, tokens

    def workspaces(self) -> list[str]:
        return sorted(p.name for p in self.base.iterdir()) if self.base.exists() else []

    def client(self, token: str | None) -> Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return Client(
            streamable_http_client(
                self.url, http_client=httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
            )
        )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def start_server(tmp: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "alphora.sandbox.tools.mcp_server", "--transport", "http", "--port", "0"]
    full_env = {k: v for k, v in os.environ.items() if k != TOKENS_ENV}
    proc = subprocess.Popen(
        [*cmd, "--base-path", str(tmp / "sandboxes"), *args],
        env={**full_env, **(env or {})},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    found: list[str] = []

    def read() -> None:  # the first line names the URL; keep draining so the pipe never fills
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = re.search(r"on (http://\S+/mcp)", line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not found and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not found:
        proc.kill()
        pytest.fail("the MCP HTTP server did not start:\n" + "".join(lines))
    return proc, found[0]
