"""Docker backend numbers: container create + first run, warm per-call latency next to a raw
``docker exec``, and 8 concurrent docker sandboxes; then start and warm-call latency under each container
runtime (runc, and gVisor's runsc when the engine has it) with medians and ratios to runc.

    python bench/docker_bench.py [--image python:3.11-slim] [--calls 200] [--json out.json]
    python bench/docker_bench.py --image alphora/sandbox:base --runtimes-only   # just runc vs runsc

Needs a running engine and the base image (``alphora-sandbox docker build base``); runsc is measured
when it is registered with the engine (``.ci/docker-setup.sh`` does it; see docs/docker.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alphora.sandbox import ResourceLimits, Sandbox


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * 1e3,
        "p95_ms": p95 * 1e3,
        "min_ms": ordered[0] * 1e3,
    }


async def _timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def create_and_first_run(image: str, n: int, runtime: str | None = None) -> dict[str, Any]:
    starts, firsts, destroys = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        sandbox = Sandbox.create_docker(docker_image=image, runtime=runtime)
        await sandbox.start()
        t1 = time.perf_counter()
        result = await sandbox.run("print('hi')")
        t2 = time.perf_counter()
        assert result.stdout == "hi\n", result
        await sandbox.destroy()
        t3 = time.perf_counter()
        starts.append(t1 - t0)
        firsts.append(t2 - t0)
        destroys.append(t3 - t2)
    return {"start": _stats(starts), "create_plus_first_run": _stats(firsts), "destroy": _stats(destroys)}


async def warm_calls(image: str, calls: int, runtime: str | None = None) -> dict[str, Any]:
    sandbox = Sandbox.create_docker(docker_image=image, runtime=runtime)
    await sandbox.start()
    try:
        for _ in range(10):
            await sandbox.run("pass")
        py = await _timed(lambda: sandbox.run("pass"), calls)
        sh = await _timed(lambda: sandbox.execute_shell("true"), calls)
        rd = await _timed(lambda: sandbox.write_file("x.txt", "x"), calls)
    finally:
        await sandbox.destroy()
    return {"run_python_pass": _stats(py), "execute_shell_true": _stats(sh), "write_file_small": _stats(rd)}


def raw_docker_exec(image: str, calls: int) -> dict[str, Any]:
    """A plain long-running container and ``docker exec`` per call, as peers do it."""
    import docker

    client = docker.from_env()
    c = client.containers.run(
        image,
        ["python3", "-c", "import time; time.sleep(1e9)"],
        detach=True,
        network_mode="none",
        user="1000:1000",
        labels={"org.alphora.bench": "1"},
    )
    try:
        sdk_py, sdk_true, cli_py = [], [], []
        for _ in range(5):
            c.exec_run(["true"])
        for _ in range(calls):
            t0 = time.perf_counter()
            c.exec_run(["python3", "-c", "pass"])
            sdk_py.append(time.perf_counter() - t0)
        for _ in range(calls):
            t0 = time.perf_counter()
            c.exec_run(["true"])
            sdk_true.append(time.perf_counter() - t0)
        for _ in range(max(10, calls // 4)):
            t0 = time.perf_counter()
            subprocess.run(["docker", "exec", c.id, "python3", "-c", "pass"], check=True, capture_output=True)
            cli_py.append(time.perf_counter() - t0)
    finally:
        c.remove(force=True)
        client.close()
    return {
        "sdk_exec_python_pass": _stats(sdk_py),
        "sdk_exec_true": _stats(sdk_true),
        "cli_docker_exec_python_pass": _stats(cli_py),
    }


async def concurrent(image: str, k: int, calls_each: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    sandboxes = [
        Sandbox.create_docker(docker_image=image, resource_limits=ResourceLimits(memory_mb=256)) for _ in range(k)
    ]
    await asyncio.gather(*(s.start() for s in sandboxes))
    t_started = time.perf_counter()
    try:
        firsts = await asyncio.gather(*(s.run("print('ready')") for s in sandboxes))
        assert all(r.stdout == "ready\n" for r in firsts)
        t_first = time.perf_counter()
        per_call: list[float] = []

        async def worker(s: Sandbox) -> None:
            for i in range(calls_each):
                t = time.perf_counter()
                r = await s.run(f"print({i} * 2)")
                per_call.append(time.perf_counter() - t)
                assert r.stdout == f"{i * 2}\n"

        t_calls = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in sandboxes))
        t_done = time.perf_counter()
        cpu = await asyncio.gather(*(s.run("sum(i*i for i in range(3_000_000))") for s in sandboxes))
        t_cpu = time.perf_counter()
        assert all(r.success for r in cpu)
    finally:
        t_d = time.perf_counter()
        await asyncio.gather(*(s.destroy() for s in sandboxes))
        t_destroyed = time.perf_counter()
    return {
        "sandboxes": k,
        "start_all_s": t_started - t0,
        "start_all_plus_first_run_s": t_first - t0,
        "calls_total": k * calls_each,
        "calls_wall_s": t_done - t_calls,
        "calls_per_s": k * calls_each / (t_done - t_calls),
        "per_call_under_load": _stats(per_call),
        "cpu_bound_8x_wall_s": t_cpu - t_done,
        "destroy_all_s": t_destroyed - t_d,
    }


def registered_runtimes() -> list[str]:
    """runc, and runsc when the engine has a runtime of that name."""
    import docker

    client = docker.from_env()
    try:
        runtimes = client.info().get("Runtimes") or {}
    finally:
        client.close()
    return ["runc"] + (["runsc"] if "runsc" in runtimes else [])


async def per_runtime(image: str, runtimes: list[str], starts: int, calls: int) -> dict[str, Any]:
    """Start and warm-call latency of the same sandbox under each runtime."""
    out: dict[str, Any] = {}
    for runtime in runtimes:
        out[runtime] = {
            "create_first_run": await create_and_first_run(image, starts, runtime),
            "warm": await warm_calls(image, calls, runtime),
        }
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"image": args.image}
    if not args.runtimes_only:
        results["create_first_run"] = await create_and_first_run(args.image, args.starts)
        results["warm"] = await warm_calls(args.image, args.calls)
        results["raw_docker_exec"] = await asyncio.to_thread(raw_docker_exec, args.image, args.calls)
        results["concurrent"] = await concurrent(args.image, args.concurrency, args.calls_each)
    runtimes = args.runtime or await asyncio.to_thread(registered_runtimes)
    results["runtimes"] = await per_runtime(args.image, runtimes, args.starts, args.calls)
    return results


#: (label, section, key) of the per-runtime table
_RUNTIME_ROWS = [
    ("create + start", "create_first_run", "start"),
    ("create + first run", "create_first_run", "create_plus_first_run"),
    ("destroy", "create_first_run", "destroy"),
    ("warm run('pass')", "warm", "run_python_pass"),
    ("warm execute_shell('true')", "warm", "execute_shell_true"),
    ("warm write_file (small)", "warm", "write_file_small"),
]


def _print_runtimes(per: dict[str, Any]) -> None:
    names = list(per)
    base = names[0]
    head = f"{'median ms':<28}" + "".join(f"{n:>10}" for n in names)
    head += "".join(f"{n + '/' + base:>14}" for n in names[1:])
    print(head)
    for label, section, key in _RUNTIME_ROWS:
        meds = [per[n][section][key]["median_ms"] for n in names]
        row = f"{label:<28}" + "".join(f"{m:>10.1f}" for m in meds)
        row += "".join(f"{m / meds[0]:>13.1f}x" for m in meds[1:])
        print(row)


def _print(results: dict[str, Any]) -> None:
    if "create_first_run" not in results:
        print(f"image: {results['image']}")
        _print_runtimes(results["runtimes"])
        return
    cf = results["create_first_run"]
    w = results["warm"]
    raw = results["raw_docker_exec"]
    c = results["concurrent"]
    print(f"image: {results['image']}")
    print(f"container create + start           median {cf['start']['median_ms']:.0f} ms")
    print(
        f"container create + first run       median {cf['create_plus_first_run']['median_ms']:.0f} ms"
        f"  (p95 {cf['create_plus_first_run']['p95_ms']:.0f} ms, n={cf['start']['n']})"
    )
    print(f"destroy (container + volumes)      median {cf['destroy']['median_ms']:.0f} ms")
    print(
        f"warm run('pass')                   median {w['run_python_pass']['median_ms']:.2f} ms"
        f"  p95 {w['run_python_pass']['p95_ms']:.2f} ms"
    )
    print(f"warm execute_shell('true')         median {w['execute_shell_true']['median_ms']:.2f} ms")
    print(f"warm write_file (small)            median {w['write_file_small']['median_ms']:.2f} ms")
    print(
        f"raw docker exec python -c pass     median {raw['sdk_exec_python_pass']['median_ms']:.1f} ms (SDK)"
        f", {raw['cli_docker_exec_python_pass']['median_ms']:.1f} ms (CLI)"
    )
    print(f"raw docker exec true               median {raw['sdk_exec_true']['median_ms']:.1f} ms (SDK)")
    print(
        f"{c['sandboxes']} concurrent sandboxes: start all {c['start_all_s']:.2f} s, + first run "
        f"{c['start_all_plus_first_run_s']:.2f} s; {c['calls_total']} calls in {c['calls_wall_s']:.2f} s "
        f"({c['calls_per_s']:.0f}/s, median {c['per_call_under_load']['median_ms']:.1f} ms); "
        f"8 CPU-bound calls {c['cpu_bound_8x_wall_s']:.2f} s; destroy all {c['destroy_all_s']:.2f} s"
    )
    print("per container runtime (same image):")
    _print_runtimes(results["runtimes"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="python:3.11-slim")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--calls-each", type=int, default=25)
    p.add_argument(
        "--runtime",
        action="append",
        help="container runtime to compare (repeatable; default: runc, "
        "and runsc when the engine has it); the first is the ratios' base",
    )
    p.add_argument("--runtimes-only", action="store_true", help="only the per-runtime start and warm-call table")
    p.add_argument("--json", help="write the raw numbers here")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    _print(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
