"""Added latency of egress in the tiers: one HTTP request from *inside* a sandbox (forwarder in the
sandbox, unix socket, proxy on the host) against the same request made directly from the host.

    python bench/egress_tiers_bench.py                  # isolated and docker, 200 requests each
    python bench/egress_tiers_bench.py --tiers isolated --requests 50

Every request opens a new connection (as the proxy does upstream) to a threaded HTTP/1.1 server on
127.0.0.1, with the same ``http.client`` code on both sides: direct from the host, and from the
sandbox through ``HTTP_PROXY`` (absolute-URI request to the forwarder on the sandbox's loopback).
Only loopback is used. The proxy-alone cost (host -> proxy -> server) is bench/egress_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import shutil
import statistics
import threading
import time
from typing import Any

from alphora.sandbox import EgressPolicy, Sandbox, SecurityPolicy, is_docker_available

CLIENT = """
import http.client, json, os, time, urllib.parse
def run(n, host, port, target):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.request("GET", target)
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 200, r.status
        times.append(time.perf_counter() - t0)
    return times
"""


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _run_host(n: int, port: int) -> list[float]:
    scope: dict[str, Any] = {}
    exec(CLIENT, scope)  # the very code the sandbox runs
    times: list[float] = scope["run"](n, "127.0.0.1", port, "/x")
    return times


def _row(name: str, times: list[float]) -> dict[str, Any]:
    ms = sorted(t * 1000 for t in times)
    return {
        "row": name,
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
    }


async def _in_sandbox(tier: str, n: int, port: int) -> list[float]:
    policy = SecurityPolicy(egress=EgressPolicy(allow=[f"127.0.0.1:{port}"]))
    if tier == "docker":
        sandbox = Sandbox.create_docker(docker_image="python:3.11-slim", security_policy=policy)
    else:
        sandbox = Sandbox.create("isolated", security_policy=policy)
    code = CLIENT + (
        "proxy = urllib.parse.urlsplit(os.environ['HTTP_PROXY'])\n"
        f"run(5, proxy.hostname, proxy.port, 'http://127.0.0.1:{port}/x')\n"  # warm-up
        f"print(json.dumps(run({n}, proxy.hostname, proxy.port, 'http://127.0.0.1:{port}/x')))\n"
    )
    async with sandbox:
        result = await sandbox.run(code, timeout=300)
    if not result.success:
        raise RuntimeError(result.stderr)
    return list(json.loads(result.stdout))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tiers", nargs="*", default=["isolated", "docker"])
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = int(server.server_address[1])
    _run_host(5, port)
    rows = [_row("host, direct", await asyncio.to_thread(_run_host, args.requests, port))]
    for tier in args.tiers:
        if tier == "docker" and not is_docker_available():
            print("docker: no engine answers, skipped")
            continue
        if tier == "isolated" and not shutil.which("bwrap"):
            print("isolated: no bwrap, skipped")
            continue
        t0 = time.monotonic()
        rows.append(_row(f"{tier} sandbox, through forwarder + proxy", await _in_sandbox(tier, args.requests, port)))
        rows[-1]["sandbox_wall_s"] = round(time.monotonic() - t0, 1)
    base = rows[0]["median_ms"]
    for row in rows:
        added = row["median_ms"] - base
        print(f"{row['row']:45} median {row['median_ms']:7.3f} ms  p90 {row['p90_ms']:7.3f} ms  added {added:+.3f} ms")
    server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
