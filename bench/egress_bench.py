"""Added latency of the egress proxy: the same request from the host, direct and through the proxy.

    python bench/egress_bench.py            # 300 requests per row
    python bench/egress_bench.py --quick    # smoke mode: a few requests, asserts nothing about time
    python bench/egress_bench.py --json out.json

Every request opens a new TCP connection (the proxy opens one upstream per request too), to a
threaded HTTP/1.1 server on 127.0.0.1; the client is ``http.client`` in this thread, the proxy runs
on its own event loop in another thread. Rows: plain HTTP direct vs proxied (absolute-URI request);
HTTPS direct vs tunnelled (CONNECT, TLS end to end, SNI checked); HTTPS with credential injection
(the proxy terminates TLS with its per-sandbox CA and opens its own TLS connection upstream).
Only loopback is used: the test name ``bench.test`` resolves to 127.0.0.1 through the proxy's
injectable resolver.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/_support: the loopback servers

from alphora.sandbox import EgressPolicy, EgressProxy
from tests._support.egress import EchoServer, FakeDNS, TestCA


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def measure(n: int, fn: Callable[[], int], warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        assert fn() == 200
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status = fn()
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200, status
    return out


def get(conn: http.client.HTTPConnection, target: str, headers: dict[str, str] | None = None) -> int:
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few requests per row (CI smoke)")
    ap.add_argument("-n", type=int, default=300, help="requests per row")
    ap.add_argument("--json", help="write the samples' summary here")
    args = ap.parse_args()
    n = 5 if args.quick else args.n

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)  # type: ignore[arg-type]

    ca = TestCA()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EchoServer() as plain,
        EchoServer(tls=ca.server_context(["bench.test", "127.0.0.1"], Path(tmp))) as secure,
    ):
        dns = FakeDNS({"bench.test": ["127.0.0.1"]})
        allow = ["bench.test", "127.0.0.1"]
        tunnel = EgressProxy(EgressPolicy(allow=allow), sandbox_id="bench", resolver=dns, audit=lambda r: None)
        inject = EgressProxy(
            EgressPolicy(allow=allow, credentials={"bench.test": {"Authorization": "Bearer bench"}}),
            sandbox_id="bench-cred",
            resolver=dns,
            audit=lambda r: None,
            upstream_ssl_context=ca.client_context(),
        )
        on_loop(tunnel.start())
        on_loop(inject.start())
        assert isinstance(tunnel.address, tuple)
        assert isinstance(inject.address, tuple)
        assert inject.ca_pem
        phost, pport = tunnel.address
        ihost, iport = inject.address
        server_ctx = ca.client_context()
        proxy_ca_ctx = ssl.create_default_context(cadata=inject.ca_pem.decode())

        def tunnelled() -> int:
            conn = http.client.HTTPSConnection(phost, pport, context=server_ctx, timeout=10)
            conn.set_tunnel("bench.test", secure.port)
            return get(conn, "/")

        def intercepted() -> int:
            conn = http.client.HTTPSConnection(ihost, iport, context=proxy_ca_ctx, timeout=10)
            conn.set_tunnel("bench.test", secure.port)
            return get(conn, "/")

        rows = {
            "http direct": lambda: get(http.client.HTTPConnection("127.0.0.1", plain.port, timeout=10), "/"),
            "http via proxy": lambda: get(
                http.client.HTTPConnection(phost, pport, timeout=10), f"http://127.0.0.1:{plain.port}/"
            ),
            "https direct": lambda: get(
                http.client.HTTPSConnection("127.0.0.1", secure.port, context=server_ctx, timeout=10), "/"
            ),
            "https tunnelled (CONNECT)": tunnelled,
            "https with credential injection": intercepted,
        }
        results = {name: measure(n, fn) for name, fn in rows.items()}
        on_loop(tunnel.aclose())
        on_loop(inject.aclose())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)

    print(f"{'row':34} {'median ms':>10} {'p95 ms':>8}  added (median)")
    base = {"http": statistics.median(results["http direct"]), "https": statistics.median(results["https direct"])}
    summary = {}
    for name, samples in results.items():
        med = statistics.median(samples)
        kind = "https" if name.startswith("https") else "http"
        added = "" if "direct" in name else f"+{med - base[kind]:.2f} ms"
        print(f"{name:34} {med:10.2f} {pct(samples, 0.95):8.2f}  {added}")
        summary[name] = {"n": len(samples), "median_ms": med, "p95_ms": pct(samples, 0.95)}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
