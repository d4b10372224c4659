"""Warm pool numbers: acquire from a pool with a ready sandbox vs a cold create, per backend; memory
per idle sandbox; and many Docker sandboxes at once (wall clock, errors, host memory, leftovers).

    python bench/pool_bench.py                       # local, isolated, Docker; 50 and 100 at once
    python bench/pool_bench.py --quick               # a few iterations, 4 at once (smoke)
    python bench/pool_bench.py --concurrent 50 100 --image python:3.11-slim --json out.json

``bench/run.py`` runs the acquire/cold rows too (``--no-pool`` skips them). *Acquire* is
``await pool.get()`` with a ready sandbox in the pool (the pool's health check included); the reset
after each release is waited for outside the timing. *Cold create* is ``Sandbox(...)`` + ``start()``
(ready for its first call). *Memory per idle sandbox*: ``get_resource_usage().memory_mb`` of a ready
sandbox (local and isolated: the PSS of its runner and pre-forked spare; Docker: the container's
memory cgroup usage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from alphora.sandbox import ResourceLimits, Sandbox, SandboxPool
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from alphora.sandbox.runner import safefs

LIMITS = ResourceLimits(timeout_seconds=60, memory_mb=256, max_processes=64)


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _options(backend: str, image: str | None) -> dict[str, Any]:
    return {"backend_options": {"image": image}} if backend == "docker" and image else {}


async def acquire_vs_cold(backend: str, base: Path, n: int, image: str | None = None) -> dict[str, Any]:
    """Median of ``n`` pool acquires (a ready sandbox waiting) and of cold creates; idle memory."""
    kwargs: dict[str, Any] = {"base_path": base, "resource_limits": LIMITS, **_options(backend, image)}
    cold: list[float] = []
    for i in range(max(3, n // 2) + 1):
        t0 = time.perf_counter()
        sandbox = Sandbox(backend, **kwargs)
        await sandbox.start()
        elapsed = time.perf_counter() - t0
        assert (await sandbox.run("print(1)")).stdout == "1\n"
        await sandbox.destroy()
        if i:  # the first one warms caches (plugin discovery, page cache, the image's layers)
            cold.append(elapsed)
    acquire: list[float] = []
    async with SandboxPool(backend, size=2, **kwargs) as pool:
        memory = [(await s.get_resource_usage()).memory_mb for s in _idle_of(pool)]
        for _ in range(n):
            await pool.settle()
            t0 = time.perf_counter()
            sandbox = await pool.get(timeout=60)
            acquire.append(time.perf_counter() - t0)
            assert (await sandbox.run("print(1)")).stdout == "1\n"
            await pool.put(sandbox)
        await pool.settle()
        stats = pool.stats()
    return {
        "backend": backend,
        "acquire_median_ms": _ms(acquire),
        "acquire_p95_ms": sorted(acquire)[round(0.95 * (len(acquire) - 1))] * 1e3,
        "cold_median_ms": _ms(cold),
        "speedup": _ms(cold) / _ms(acquire),
        "idle_memory_mb": statistics.median(memory) if memory else None,
        "acquires": len(acquire),
        "resets": stats.resets,
        "reset_failures": stats.reset_failures,
    }


def _idle_of(pool: SandboxPool) -> list[Sandbox]:
    return [slot.sandbox for slot in pool._idle]


def _our_containers() -> tuple[list[str], list[str]]:
    """Containers and volumes (any state) labelled as owned by this process."""
    import docker

    client = docker.from_env()
    try:
        flt = {"label": [f"org.alphora.sandbox.pid={os.getpid()}"]}
        containers = [c.name for c in client.containers.list(all=True, filters=flt)]
        volumes = [v.name for v in client.volumes.list(filters=flt)]
        return containers, volumes
    finally:
        client.close()


async def docker_concurrent(count: int, image: str, base: Path) -> dict[str, Any]:
    """``count`` Docker sandboxes started at once, each runs one call, all alive together, then destroyed."""
    mem0 = psutil.virtual_memory().used
    sandboxes = [
        Sandbox.create_docker(base_path=base, docker_image=image, resource_limits=LIMITS) for _ in range(count)
    ]

    async def one(sandbox: Sandbox) -> None:
        await sandbox.start()
        r = await sandbox.run("print(1)")
        if r.stdout != "1\n":
            raise RuntimeError(f"unexpected result {r}")

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(s) for s in sandboxes), return_exceptions=True)
    wall = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r, BaseException)]
    mem_peak = psutil.virtual_memory().used
    t1 = time.perf_counter()
    destroyed = await asyncio.gather(*(s.destroy() for s in sandboxes), return_exceptions=True)
    teardown = time.perf_counter() - t1
    containers, volumes = _our_containers()
    return {
        "count": count,
        "wall_s": wall,
        "errors": len(errors),
        "first_error": repr(errors[0])[:300] if errors else "",
        "host_memory_mb": (mem_peak - mem0) / 2**20,
        "per_sandbox_mb": (mem_peak - mem0) / 2**20 / count,
        "destroy_s": teardown,
        "destroy_errors": sum(isinstance(d, BaseException) for d in destroyed),
        "leftover_containers": len(containers),
        "leftover_volumes": len(volumes),
    }


def docker_image() -> str | None:
    """The image for the Docker rows when an engine answers and has it, else None."""
    from alphora.sandbox import is_docker_available

    if not is_docker_available():
        return None
    import docker
    import docker.errors

    client = docker.from_env()
    try:
        for image in (os.environ.get("ALPHORA_BENCH_IMAGE"), "python:3.11-slim", "alphora/sandbox:base"):
            if image:
                try:
                    client.images.get(image)
                    return image
                except docker.errors.ImageNotFound:
                    continue
        return None
    finally:
        client.close()


async def pool_rows(n: int, image: str | None, backends: list[str]) -> list[dict[str, Any]]:
    rows = []
    for backend in backends:
        if backend == "isolated" and not bwrap_available():
            continue
        if backend == "docker" and image is None:
            continue
        base = Path(tempfile.mkdtemp(prefix=f"alphora-pool-bench-{backend}-"))
        try:
            rows.append(await acquire_vs_cold(backend, base, n, image))
        finally:
            safefs.rmtree(str(base))
    return rows


def print_pool_rows(rows: list[dict[str, Any]]) -> None:
    print(f"\n| {'pool: acquire vs cold create':<30} | {'acquire ms':>10} | {'p95 ms':>7} | {'cold ms':>8} | ", end="")
    print(f"{'speedup':>8} | {'idle MB':>7} |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    for r in rows:
        mem = f"{r['idle_memory_mb']:.1f}" if r["idle_memory_mb"] is not None else "n/a"
        label = f"{r['backend']} ({r['acquires']} acquires)"
        print(
            f"| {label:<30} | {r['acquire_median_ms']:>10.3f} | "
            f"{r['acquire_p95_ms']:>7.3f} | {r['cold_median_ms']:>8.1f} | {r['speedup']:>7.0f}x | {mem:>7} |"
        )


async def main(quick: bool, counts: list[int], image: str | None, json_path: str | None) -> int:
    image = image or docker_image()
    rows = await pool_rows(3 if quick else 20, image, ["local", "isolated", "docker"])
    print_pool_rows(rows)
    conc = []
    if image is None:
        print("\nDocker rows: n/a (no engine answers, or no image with python3)")
    else:
        for count in [4] if quick else counts:
            base = Path(tempfile.mkdtemp(prefix="alphora-pool-bench-conc-"))
            try:
                conc.append(await docker_concurrent(count, image, base))
            finally:
                safefs.rmtree(str(base))
        print(f"\n| {'docker sandboxes at once':<26} | {'wall s':>7} | {'errors':>6} | {'host MB':>8} | ", end="")
        print(f"{'MB each':>7} | {'destroy s':>9} | leftovers (containers, volumes)")
        print(f"|{'-' * 28}|{'-' * 9}|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 11}|------")
        for c in conc:
            print(
                f"| {c['count']:<26} | {c['wall_s']:>7.1f} | {c['errors']:>6} | {c['host_memory_mb']:>8.0f} | "
                f"{c['per_sandbox_mb']:>7.1f} | {c['destroy_s']:>9.1f} | "
                f"{c['leftover_containers']}, {c['leftover_volumes']} {c['first_error']}"
            )
    if json_path:
        Path(json_path).write_text(json.dumps({"pool": rows, "concurrent": conc}, indent=2))  # noqa: ASYNC240
    failed = any(c["errors"] or c["leftover_containers"] or c["leftover_volumes"] for c in conc)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke mode: few iterations, 4 Docker sandboxes at once")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[50, 100], help="Docker sandboxes at once")
    parser.add_argument("--image", help="Docker image (default: python:3.11-slim, else alphora/sandbox:base)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick, args.concurrent, args.image, args.json_path)))
