"""The cost of the Ray hop: per-call overhead of a ray sandbox, and N sandboxes x M calls through a
3-node Ray cluster against the same without Ray, on this machine.

    python bench/ray_bench.py            # about a minute
    python bench/ray_bench.py --quick    # smoke mode: a few iterations, asserts nothing about time
    python bench/ray_bench.py --json out.json

The cluster is three raylets on this machine (``ray.cluster_utils.Cluster``), every address on
127.0.0.1 (the settings of tests/ray/conftest.py). On one machine the nodes share its cores, so
the N x M rows measure the overhead of the hop, not scale-out (docs/cluster.md has the scaling
model built from these numbers). Inner sandbox: ``local`` (the lightest; the hop costs the same
whatever the inner backend is).
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep Ray's addresses on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.cluster_utils import Cluster

from alphora.sandbox import LocalBackend
from alphora.sandbox.backend import Backend
from alphora.sandbox_ray import RayBackend

NODE: dict[str, Any] = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20, "include_dashboard": False}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def timed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    await call()  # warm
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def started(backend: Backend) -> Backend:
    await backend.initialize()
    await backend.start()
    return backend


async def fleet(make: Callable[[int], Backend], n: int, m: int) -> tuple[float, float]:
    """Start n sandboxes, then m runs of ``pass`` in each, all n concurrently: (start s, calls/s)."""
    t0 = time.perf_counter()
    boxes = await asyncio.gather(*(started(make(i)) for i in range(n)))
    start_s = time.perf_counter() - t0

    async def calls(b: Backend) -> None:
        for _ in range(m):
            r = await b.execute_code("pass")
            assert r.success, r

    t1 = time.perf_counter()
    await asyncio.gather(*(calls(b) for b in boxes))
    rate = n * m / (time.perf_counter() - t1)
    await asyncio.gather(*(b.destroy() for b in boxes))
    return start_s, rate


async def main(quick: bool) -> dict[str, Any]:
    iters, n, m = (5, 3, 3) if quick else (40, 6, 20)
    base = tempfile.mkdtemp(prefix="alphora-ray-bench-")
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 2, "resources": {"n0": 100}})
    for i in (1, 2):
        cluster.add_node(**NODE, num_cpus=2, resources={f"n{i}": 100})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    rows: dict[str, Any] = {}
    try:
        local = await started(LocalBackend("bench-direct", f"{base}/direct"))
        remote = await started(RayBackend("bench-ray", None, options={"inner": "local", "node_base_path": base}))
        await local.write_bytes("f.txt", b"x" * 1024)
        await remote.write_bytes("f.txt", b"x" * 1024)
        for label, call_of in {
            "read 1 KiB file": lambda b: b.read_bytes("f.txt"),
            "stat": lambda b: b.stat("f.txt"),
            "run print(1)": lambda b: b.execute_code("print(1)"),
        }.items():
            direct = await timed(iters, lambda c=call_of: c(local))
            hop = await timed(iters, lambda c=call_of: c(remote))
            rows[label] = {
                "direct_ms": statistics.median(direct),
                "ray_ms": statistics.median(hop),
                "ray_p95_ms": pct(hop, 0.95),
                "overhead_ms": statistics.median(hop) - statistics.median(direct),
            }
        await local.destroy()
        await remote.destroy()
        d_start, d_rate = await fleet(lambda i: LocalBackend(f"bench-d{i}", f"{base}/d{i}"), n, m)
        r_start, r_rate = await fleet(
            lambda i: RayBackend(
                f"bench-r{i}", None, options={"inner": "local", "node_base_path": base, "resources": {f"n{i % 3}": 1}}
            ),
            n,
            m,
        )
        rows[f"{n} sandboxes x {m} runs"] = {
            "direct_start_s": d_start,
            "ray_start_s": r_start,
            "direct_calls_per_s": d_rate,
            "ray_calls_per_s": r_rate,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()
    return rows


def show(rows: dict[str, Any]) -> None:
    print(f"{'per call (median ms)':<24}{'direct':>10}{'via ray':>10}{'p95 ray':>10}{'overhead':>10}")
    for label, r in rows.items():
        if "direct_ms" in r:
            print(
                f"{label:<24}{r['direct_ms']:>10.2f}{r['ray_ms']:>10.2f}{r['ray_p95_ms']:>10.2f}{r['overhead_ms']:>10.2f}"
            )
    for label, r in rows.items():
        if "ray_calls_per_s" in r:
            print(
                f"{label}: start {r['direct_start_s']:.2f}s direct / {r['ray_start_s']:.2f}s via ray (3 nodes); "
                f"{r['direct_calls_per_s']:.1f} calls/s direct / {r['ray_calls_per_s']:.1f} calls/s via ray"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    show(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    sys.exit(0)
