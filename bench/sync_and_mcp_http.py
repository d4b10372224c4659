"""What the sync API and MCP over HTTP add on top of the async API, on this machine, in one run.

    python bench/sync_and_mcp_http.py           # about 20 s
    python bench/sync_and_mcp_http.py --quick   # a few iterations; asserts nothing about time

Rows (medians, local backend): a trivial call (``get_env``: no process, only the call's path) and
``run("pass")`` through the async API and through the sync API (the hop to the shared loop thread);
over MCP streamable HTTP with a bearer token: opening a session up to its first answered tool call
(which starts the session's sandbox), and a warm ``run_python_code`` call compared with the same
call on ``SandboxTools`` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import alphora.sandbox as aio
from alphora.sandbox import sync


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed_sync(n: int, fn: Callable[[], Any]) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


async def timed_async(n: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


def sync_rows(base: str, n: int) -> list[tuple[str, float]]:
    async def async_side() -> tuple[list[float], list[float]]:
        async with aio.Sandbox.create_local(base_path=base) as sandbox:
            return await timed_async(n, lambda: sandbox.get_env("X")), await timed_async(n, lambda: sandbox.run("pass"))

    a_env, a_run = asyncio.run(async_side())
    with sync.Sandbox.create_local(base_path=base) as sandbox:
        s_env = timed_sync(n, lambda: sandbox.get_env("X"))
        s_run = timed_sync(n, lambda: sandbox.run("pass"))
    return [
        ("get_env, async", median_ms(a_env)),
        ("get_env, sync", median_ms(s_env)),
        ('run("pass"), async', median_ms(a_run)),
        ('run("pass"), sync', median_ms(s_run)),
    ]


async def http_rows(base: str, n: int, sessions: int) -> list[tuple[str, float]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    token = secrets.token_urlsafe(24)
    args = ["--transport", "http", "--port", "0", "--base-path", base, "--max-sessions-per-token", str(sessions + 1)]
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, "-m", "alphora.sandbox.tools.mcp_server", *args],
        env={**os.environ, "ALPHORA_SANDBOX_MCP_TOKENS": token},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    url = ""
    for line in server.stderr:
        match = re.search(r"on (http://\S+/mcp)", line)
        if match:
            url = match.group(1)
            break
    code = {"code": "pass"}

    def client() -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=300))
        return Client(streamable_http_client(url, http_client=http))

    try:
        opens = []
        for _ in range(sessions):
            t = time.perf_counter()
            async with client() as c:
                await c.call_tool("run_python_code", code)
                opens.append(time.perf_counter() - t)
        async with client() as c:
            warm = await timed_async(n, lambda: c.call_tool("run_python_code", code))
        async with aio.Sandbox.create_local(base_path=base) as sandbox:
            tools = aio.SandboxTools(sandbox)
            direct = await timed_async(n, lambda: tools.run_python_code("pass"))
    finally:
        server.terminate()
        server.wait(60)
    return [
        ("MCP HTTP: open a session + first tool call (sandbox start)", median_ms(opens)),
        ("MCP HTTP: warm run_python_code", median_ms(warm)),
        ("SandboxTools.run_python_code, direct", median_ms(direct)),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few iterations (CI smoke)")
    ns = p.parse_args()
    n, sessions = (5, 2) if ns.quick else (50, 10)
    with tempfile.TemporaryDirectory(prefix="alphora-bench-") as base:
        rows = sync_rows(base, n) + asyncio.run(http_rows(base, n, sessions))
    width = max(len(name) for name, _ in rows)
    print(f"{'row':<{width}}  median ms   (n={n}, sessions={sessions})")
    for name, value in rows:
        print(f"{name:<{width}}  {value:9.3f}")
    by = dict(rows)
    sync_ratio = by['run("pass"), sync'] / by['run("pass"), async']
    print(f'sync/async run("pass"): {sync_ratio:.2f}x')
    ratio = by["MCP HTTP: warm run_python_code"] / by["SandboxTools.run_python_code, direct"]
    print(f"MCP HTTP/direct tool call: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
