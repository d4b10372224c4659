"""Latency benchmark of alphora-sandbox against the physical floors, on this machine, in one run.

    python bench/run.py            # full run (about a minute)
    python bench/run.py --quick    # smoke mode for CI: a few iterations, asserts nothing about time
    python bench/run.py --json results.json

Rows: cold start of a local and of an isolated sandbox (create + start + first run + stop), warm per-call latency
of ``print(1)`` in fresh-process mode and in session mode, 8 concurrent sandboxes x 10 calls, a
1 MiB file round trip; floors: a raw ``python -c`` spawn, a persistent raw Python REPL over a pipe,
and (when a Docker engine answers and an image with python3 exists) a raw ``docker exec`` and a
persistent ``docker exec -i`` process. Every latency is measured with the same asyncio plumbing
the library uses, wall clock from the caller's side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from alphora.sandbox import LocalBackend
from alphora.sandbox.builtin.isolated_backend import IsolatedLocalBackend, bwrap_available

REPL = "import sys\nfor line in sys.stdin:\n    exec(line)\n    sys.stdout.write('\\x00\\n'); sys.stdout.flush()\n"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Row:
    def __init__(self, name: str, samples: list[float] | None, note: str = "") -> None:
        self.name = name
        self.samples = samples or []
        self.note = note

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def p95(self) -> float | None:
        return pct(self.samples, 0.95) if self.samples else None


async def timed(n: int, fn: Callable[[], Awaitable[Any]], warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


# -- floors ---------------------------------------------------------------------------------------


async def raw_spawn(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    assert out == b"1\n", out


class PipeRepl:
    """A persistent interpreter reading one line of code at a time over a pipe."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> PipeRepl:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        await self.call("pass")
        return self

    async def call(self, line: str = "print(1)") -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        while (await self.proc.stdout.readline()) != b"\x00\n":
            pass

    async def stop(self) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


def docker_target() -> tuple[str, str] | None:
    """(docker cli, image with python3) when an engine answers, else None."""
    docker = shutil.which("docker")
    if docker is None or not (os.path.exists("/var/run/docker.sock") or os.environ.get("DOCKER_HOST")):
        return None
    if subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode != 0:
        return None
    wanted = [os.environ.get("ALPHORA_BENCH_IMAGE", ""), "alphora/sandbox:minimal", "python:3.11-slim"]
    listed = subprocess.run(
        [docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, timeout=20
    ).stdout.split()
    for image in [w for w in wanted if w] + [i for i in listed if "python" in i or "alphora" in i]:
        if image in listed:
            return docker, image
    return None


async def docker_floors(n: int) -> tuple[Row, Row]:
    target = docker_target()
    if target is None:
        return (
            Row("floor: raw docker exec python3 -c", None, "n/a: no Docker engine or python image"),
            Row("floor: persistent docker exec -i REPL", None, "n/a: no Docker engine or python image"),
        )
    docker, image = target
    cid = subprocess.run(
        [docker, "run", "-d", "--rm", "--network", "none", "--entrypoint", "sleep", image, "3600"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    try:
        exec_samples = await timed(
            max(3, n // 4), lambda: raw_spawn([docker, "exec", cid, "python3", "-c", "print(1)"])
        )
        repl = await PipeRepl([docker, "exec", "-i", cid, "python3", "-u", "-c", REPL]).start()
        try:
            repl_samples = await timed(n, repl.call)
        finally:
            await repl.stop()
    finally:
        subprocess.run([docker, "rm", "-f", cid], capture_output=True, timeout=60)
    return (
        Row("floor: raw docker exec python3 -c", exec_samples, image),
        Row("floor: persistent docker exec -i REPL", repl_samples, image),
    )


async def docker_backend_rows(base: Path, n: int) -> list[Row]:
    """The Docker backend (runner as the container's PID 1): cold start, warm calls."""
    target = docker_target()
    names = (
        "docker backend: cold start (create+start+first run+stop)",
        "docker backend: warm call, fresh process",
        "docker backend: warm call, session",
    )
    try:
        from alphora.sandbox_docker import DockerBackend
    except ImportError:
        return [Row(name, None, "n/a: alphora-sandbox-docker not installed") for name in names]
    if target is None:
        return [Row(name, None, "n/a: no Docker engine or python image") for name in names]
    image = target[1]
    cold = []
    for i in range(max(2, n // 40)):
        t0 = time.perf_counter()
        b = DockerBackend(sandbox_id=f"benchd{i}", workspace_path=base / f"d{i}", options={"image": image})
        await b.initialize()
        await b.start()
        r = await b.execute_code("print(1)")
        await b.destroy()
        cold.append(time.perf_counter() - t0)
        assert r.stdout == "1\n", r
    b = DockerBackend(sandbox_id="benchdw", workspace_path=base / "dw", options={"image": image})
    await b.initialize()
    await b.start()
    try:
        fresh = await timed(n, lambda: b.execute_code("print(1)"))
        py = await b.open_session()
        sess = await timed(n, lambda: py.run("print(1)"))
        await py.close()
    finally:
        await b.destroy()
    return [Row(names[0], cold, image), Row(names[1], fresh, image), Row(names[2], sess, image)]


# -- the library ----------------------------------------------------------------------------------


async def cold_starts(
    base: Path, n: int, backend: type[LocalBackend] = LocalBackend
) -> tuple[list[float], list[float]]:
    """(create+start+first run+stop, create+start+first run) per sandbox, fresh workspace each."""
    full, first = [], []
    for i in range(n + 1):
        t0 = time.perf_counter()
        b = backend(sandbox_id=f"cold{i}", workspace_path=base / f"{backend.name}-cold{i}")
        await b.initialize()
        await b.start()
        r = await b.execute_code("print(1)")
        t1 = time.perf_counter()
        await b.stop()
        t2 = time.perf_counter()
        assert r.stdout == "1\n", r
        if i:  # the first one warms the page cache
            first.append(t1 - t0)
            full.append(t2 - t0)
    return full, first


async def concurrent(base: Path, sandboxes: int, calls: int) -> tuple[list[float], float]:
    backends = [LocalBackend(sandbox_id=f"conc{i}", workspace_path=base / f"conc{i}") for i in range(sandboxes)]
    await asyncio.gather(*(b.start() for b in backends))
    try:
        await asyncio.gather(*(b.execute_code("print(1)") for b in backends))
        lat: list[float] = []

        async def worker(b: LocalBackend) -> None:
            for _ in range(calls):
                t0 = time.perf_counter()
                r = await b.execute_code("print(1)")
                lat.append(time.perf_counter() - t0)
                assert r.stdout == "1\n"

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(b) for b in backends))
        return lat, time.perf_counter() - t0
    finally:
        await asyncio.gather(*(b.stop() for b in backends))


async def main(quick: bool, json_path: str | None, skip_docker: bool = False, skip_pool: bool = False) -> int:
    n = 3 if quick else 200
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory(prefix="alphora-bench-") as tmp:
        base = Path(tmp)
        full, first = await cold_starts(base, 3 if quick else 20)
        rows["cold"] = Row("cold start: create+start+first run+stop", full)
        rows["cold_first"] = Row("cold start: create+start+first run", first)
        if bwrap_available():
            full, first = await cold_starts(base, 3 if quick else 20, IsolatedLocalBackend)
            rows["iso_cold"] = Row("isolated cold start: create+start+first run+stop", full)
            rows["iso_cold_first"] = Row("isolated cold start: create+start+first run", first)
        else:
            rows["iso_cold"] = Row("isolated cold start: create+start+first run+stop", None, "skipped (no bwrap)")

        b = LocalBackend(sandbox_id="warm", workspace_path=base / "warm")
        await b.start()
        try:
            rows["fresh"] = Row("warm call print(1), fresh process", await timed(n, lambda: b.execute_code("print(1)")))
            py = await b.open_session()
            rows["session"] = Row("warm call print(1), session", await timed(n * 2, lambda: py.run("print(1)")))
            await py.close()
            data = os.urandom(1024 * 1024)

            async def round_trip() -> None:
                await b.write_bytes("blob.bin", data)
                assert await b.read_bytes("blob.bin") == data

            rows["file"] = Row("1 MiB file write+read", await timed(max(3, n // 4), round_trip))
            rows["rusage"] = Row("get_resource_usage()", await timed(max(3, n // 10), b.get_resource_usage))
        finally:
            await b.stop()

        lat, wall = await concurrent(base, 8, 2 if quick else 10)
        rows["conc"] = Row(
            f"8 sandboxes x {2 if quick else 10} calls, per call",
            lat,
            f"wall {wall * 1000:.0f} ms for {len(lat)} calls",
        )
        if not skip_docker:
            for i, row in enumerate(await docker_backend_rows(base, 3 if quick else 100)):
                rows[f"docker{i}"] = row

    rows["pyc"] = Row(
        "floor: raw python -c spawn", await timed(max(3, n // 4), lambda: raw_spawn([sys.executable, "-c", "print(1)"]))
    )
    repl = await PipeRepl([sys.executable, "-u", "-c", REPL]).start()
    try:
        rows["repl"] = Row("floor: persistent python REPL over a pipe", await timed(n * 2, repl.call))
    finally:
        await repl.stop()
    if skip_docker:
        rows["dexec"] = Row("floor: raw docker exec python3 -c", None, "skipped (--no-docker)")
        rows["drepl"] = Row("floor: persistent docker exec -i REPL", None, "skipped (--no-docker)")
    else:
        rows["dexec"], rows["drepl"] = await docker_floors(n if not quick else 3)

    ratios = {
        "fresh": ("pyc", "x python -c"),
        "session": ("repl", "x REPL floor"),
        "cold_first": ("pyc", "x python -c"),
        "iso_cold_first": ("cold_first", "x local"),
        "drepl": ("repl", "x REPL floor"),
        "docker1": ("dexec", "x docker exec"),
        "docker2": ("drepl", "x exec -i REPL"),
    }
    print(
        f"\nalphora-sandbox bench ({'quick smoke' if quick else 'full'}), python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores\n"
    )
    print(f"| {'measure':<56} | {'n':>4} | {'median ms':>9} | {'p95 ms':>8} | {'ratio':<16} | note")
    print(f"|{'-' * 58}|{'-' * 6}|{'-' * 11}|{'-' * 10}|{'-' * 18}|------")
    for key, row in rows.items():
        med = f"{row.median * 1000:.3f}" if row.median is not None else "n/a"
        p95 = f"{row.p95 * 1000:.3f}" if row.p95 is not None else "n/a"
        ratio = ""
        if key in ratios and row.median is not None and rows[ratios[key][0]].median:
            ratio = f"{row.median / rows[ratios[key][0]].median:.2f}{ratios[key][1]}"  # type: ignore[operator]
        print(f"| {row.name:<56} | {len(row.samples):>4} | {med:>9} | {p95:>8} | {ratio:<16} | {row.note}")

    def ms(key: str) -> float:
        return (rows[key].median or 0.0) * 1000

    checks = [
        (
            "session call <= max(2 x REPL floor, 1 ms)",
            ms("session") <= max(2 * ms("repl"), 1.0),
            f"{ms('session'):.3f} ms vs {max(2 * ms('repl'), 1.0):.3f} ms",
        ),
        (
            "fresh-process call <= 0.5 x python -c",
            ms("fresh") <= 0.5 * ms("pyc"),
            f"{ms('fresh'):.2f} ms vs {0.5 * ms('pyc'):.2f} ms",
        ),
        ("create+start+first run < 150 ms (median)", ms("cold_first") < 150, f"{ms('cold_first'):.1f} ms"),
    ]
    print("\ntargets" + (" (quick mode: informational only)" if quick else "") + ":")
    for name, ok, detail in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {name}: {detail}")
    if not skip_pool:  # the warm pool's rows (bench/pool_bench.py; the many-at-once rows are there only)
        from pool_bench import docker_image, pool_rows, print_pool_rows

        image = None if skip_docker else docker_image()
        print_pool_rows(await pool_rows(3 if quick else 20, image, ["local", "isolated", "docker"]))
    if json_path:
        Path(json_path).write_text(  # noqa: ASYNC240 - once, after measuring
            json.dumps(
                {
                    k: {"name": r.name, "n": len(r.samples), "median_s": r.median, "p95_s": r.p95, "note": r.note}
                    for k, r in rows.items()
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke mode: few iterations, no timing assertions")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker rows even if an engine is up")
    parser.add_argument("--no-pool", action="store_true", help="skip the warm pool rows (bench/pool_bench.py)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick, args.json_path, args.no_docker, args.no_pool)))
