"""session.fork() latency for a session holding a large state (default 100 MB), on each backend.

    python bench/fork_bench.py [--mb 100] [--forks 20] [--backends local,isolated,docker] [--json out.json]

Each sample is one ``await py.fork()`` (the runner round trip, the copy-on-write fork of the
interpreter, the new interpreter's answer) followed by a check that the fork sees the state and a
close; only the fork call is timed. The state is a bytearray of ``--mb`` MB, touched page by page so
it is resident. Docker needs a running engine and the image (``--image``, default ours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from alphora.sandbox import ResourceLimits, Sandbox
from alphora.sandbox.rules import DEFAULT_IMAGE


async def bench(backend: str, mb: int, forks: int, image: str) -> dict[str, Any]:
    limits = ResourceLimits(memory_mb=max(1024, 4 * mb), timeout_seconds=120)
    if backend == "docker":
        sandbox = Sandbox.create_docker(docker_image=image, resource_limits=limits)
    else:
        sandbox = Sandbox.create(backend, resource_limits=limits)
    async with sandbox, sandbox.session() as py:
        r = await py.run(
            f"state = bytearray({mb} << 20)\nfor i in range(0, len(state), 4096): state[i] = 1\nlen(state)"
        )
        assert r.success, r.error
        samples = []
        for _ in range(forks):
            t0 = time.perf_counter()
            fork = await py.fork()
            samples.append(time.perf_counter() - t0)
            check = await fork.run("state[0] = 2; len(state), sum(state[::4096]) // 1")
            assert check.success, check.error
            await fork.close()
        r = await py.run("state[0]")  # the forks' writes never reach the parent
        assert r.value == "1", r.value
    return {
        "backend": backend,
        "state_mb": mb,
        "forks": forks,
        "median_ms": statistics.median(samples) * 1e3,
        "min_ms": min(samples) * 1e3,
        "max_ms": max(samples) * 1e3,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--forks", type=int, default=20)
    ap.add_argument("--backends", default="local,isolated,docker")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = []
    for backend in args.backends.split(","):
        res = await bench(backend, args.mb, args.forks, args.image)
        results.append(res)
        print(
            f"{backend:9} {res['state_mb']} MB state: fork median {res['median_ms']:.1f} ms "
            f"(min {res['min_ms']:.1f}, max {res['max_ms']:.1f}, n={res['forks']})"
        )
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
