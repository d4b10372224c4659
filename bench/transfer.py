"""File transfer and first-sandbox cost of alphora-sandbox against the raw floors, on this machine, in one run.

    python bench/transfer.py              # local and Docker (when an engine answers), about a minute
    python bench/transfer.py --quick      # a few iterations; asserts nothing about time
    python bench/transfer.py --no-docker  # local only
    python bench/transfer.py --json results.json

Rows:

* file write+read round trip through the facade (``write_file_bytes`` then ``read_file_bytes``) of
  1 MiB and 50 MiB, local and Docker, in MB/s (bytes moved both ways / wall), against the floor: the
  same bytes written to a long-lived process over a pipe, kept by it, and read back from it (local: a
  ``python3`` subprocess; Docker: ``docker exec -i`` into the *same* container), measured in the same
  run;
* a 200 MiB streamed write+read (``write_file_stream`` / ``read_file_stream``, when the installed
  version has them) with the host's RSS growth (peak sampled every 5 ms, minus the RSS before);
* the first sandbox of a fresh process against the second one in the same process: ``Sandbox()``
  alone (plugin discovery happens there) and a whole cycle (construct + start + ``print(1)`` +
  stop); medians (and the minimum) over several fresh processes, in wall time and in CPU time of the
  process (``time.process_time``: what the work costs, much less moved by other jobs on the machine);
* ``import alphora.sandbox`` after ``import asyncio`` (``python -X importtime``: the cumulative time
  of ``alphora.sandbox``; and its CPU time), median over several fresh processes.

Every latency is wall clock from the caller's side; medians, and ratios to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

MiB = 1024 * 1024

#: the floor's process: reads an 8-byte big-endian length and that many bytes (keeping them, as a
#: write keeps a file), then writes them all back (as a read returns it); forever
ECHO = (
    "import sys\n"
    "i, o = sys.stdin.buffer, sys.stdout.buffer\n"
    "while True:\n"
    "    h = i.read(8)\n"
    "    if len(h) < 8: break\n"
    "    data = i.read(int.from_bytes(h, 'big'))\n"
    "    o.write(data); o.flush()\n"
)


async def timed(n: int, fn: Callable[[], Awaitable[Any]], warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


class EchoFloor:
    """A long-lived process that takes length-prefixed bytes and gives them back over its pipes."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    async def __aenter__(self) -> EchoFloor:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 22
        )
        return self

    async def round_trip(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        stdin, stdout = self.proc.stdin, self.proc.stdout

        async def send() -> None:
            stdin.write(len(data).to_bytes(8, "big"))
            for i in range(0, len(data), MiB):
                stdin.write(data[i : i + MiB])
                await stdin.drain()

        async def receive() -> bytes:
            parts, left = [], len(data)
            while left:
                c = await stdout.read(min(left, MiB))
                if not c:
                    raise RuntimeError("echo floor process ended")
                parts.append(c)
                left -= len(c)
            return b"".join(parts)

        _, back = await asyncio.gather(send(), receive())
        assert back == data

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


def docker_ready() -> bool:
    try:
        from alphora.sandbox import is_docker_available
    except ImportError:
        return False
    return bool(is_docker_available())


def image() -> str:
    return os.environ.get("ALPHORA_BENCH_IMAGE", "alphora/sandbox:base")


def mbps(size: int, seconds: float) -> float:
    return 2 * size / MiB / seconds  # bytes moved both ways


async def transfer_rows(kind: str, base: Path, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    from alphora.sandbox import Sandbox, SecurityPolicy

    policy = SecurityPolicy(max_file_size_mb=256)  # the default (100) refuses the 200 MiB row
    if kind == "docker":
        sandbox = Sandbox.create_docker(base_path=base, docker_image=image(), security_policy=policy)
    else:
        sandbox = Sandbox.create_local(base_path=base, security_policy=policy)
    rows = []
    async with sandbox:
        for size, n in sizes:
            data = os.urandom(size)

            async def facade(data: bytes = data) -> None:
                await sandbox.write_file_bytes("blob.bin", data)
                assert await sandbox.read_file_bytes("blob.bin") == data

            if kind == "docker":
                cid = sandbox.backend._container_id  # the floor runs in the same container
                assert cid
                argv = ["docker", "exec", "-i", cid, sandbox.backend.python, "-u", "-c", ECHO]
            else:
                argv = [sys.executable, "-u", "-c", ECHO]
            async with EchoFloor(argv) as floor:
                lib = await timed(n, facade)
                raw = await timed(n, lambda data=data: floor.round_trip(data))
            lm, fm = statistics.median(lib), statistics.median(raw)
            rows.append(
                {
                    "row": f"{kind}: {size // MiB} MiB write+read",
                    "lib_ms": lm * 1000,
                    "floor_ms": fm * 1000,
                    "lib_MBps": mbps(size, lm),
                    "floor_MBps": mbps(size, fm),
                    "ratio": lm / fm,
                    "n": n,
                }
            )
        rows.append(await streamed_rss(sandbox, kind, 200 * MiB))
    return rows


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def streamed_rss(sandbox: Any, kind: str, size: int) -> dict[str, Any]:
    row = f"{kind}: {size // MiB} MiB streamed write+read"
    if not hasattr(sandbox, "write_file_stream"):
        return {"row": row, "note": "n/a: this version has no streaming file API"}
    chunk = os.urandom(MiB)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            yield chunk

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    before = rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        await sandbox.write_file_stream("big.bin", source())
        got = 0
        async for part in sandbox.read_file_stream("big.bin"):
            got += len(part)
        assert got == size, got
    finally:
        stop.set()
        sampler.join()
    wall = time.perf_counter() - t0
    await sandbox.delete_file("big.bin")
    return {
        "row": row,
        "lib_ms": wall * 1000,
        "lib_MBps": mbps(size, wall),
        "rss_growth_MiB": max(0, peak[0] - before) / MiB,
    }


FIRST = """
import asyncio, json, sys, tempfile, time
from alphora.sandbox import Sandbox
async def one(base):
    t, c = time.perf_counter(), time.process_time()
    s = Sandbox.create_local(base_path=base)
    made, made_cpu = time.perf_counter() - t, time.process_time() - c
    async with s:
        r = await s.run("print(1)")
        assert r.stdout == "1\\n", r
    return made, time.perf_counter() - t, made_cpu, time.process_time() - c
async def main():
    with tempfile.TemporaryDirectory() as base:
        first = await one(base)
        second = await one(base)
    print(json.dumps({"first": first, "second": second}))
asyncio.run(main())
"""


def first_sandbox(n: int) -> list[dict[str, Any]]:
    """``Sandbox()`` (where plugin discovery happens) and a whole cycle, first vs second in a process."""
    series: list[list[tuple[float, float]]] = [[], [], [], []]
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", FIRST], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        for i, pairs in enumerate(series):
            pairs.append((r["first"][i], r["second"][i]))
    names = (
        "Sandbox.create_local(), wall",
        "create+start+print(1)+stop, wall",
        "Sandbox.create_local(), CPU of this process",
        "create+start+print(1)+stop, CPU of this process",
    )
    rows = []
    for name, pairs in zip(names, series, strict=True):
        rows.append(
            {
                "row": f"first local sandbox of a process vs the second: {name}",
                "first_ms": statistics.median(p[0] for p in pairs) * 1000,
                "second_ms": statistics.median(p[1] for p in pairs) * 1000,
                "extra_ms": statistics.median(p[0] - p[1] for p in pairs) * 1000,
                "extra_min_ms": min(p[0] - p[1] for p in pairs) * 1000,
                "n": n,
            }
        )
    return rows


#: the CPU time ``import alphora.sandbox`` takes after ``import asyncio`` (less sensitive to a busy machine)
IMPORT_CPU = "import time, asyncio; c = time.process_time(); import alphora.sandbox; print(time.process_time() - c)"


def import_time(n: int) -> dict[str, Any]:
    us, cpu = [], []
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", IMPORT_CPU], capture_output=True, text=True, check=True).stdout
        cpu.append(float(out.strip()))
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import asyncio; import alphora.sandbox"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for line in err.splitlines():
            m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s?(\s*)(\S+)$", line)
            if m and m.group(3) == "alphora.sandbox" and not m.group(2):
                us.append(int(m.group(1)))
    return {
        "row": "import alphora.sandbox after import asyncio (-X importtime)",
        "import_ms": statistics.median(us) / 1000,
        "import_min_ms": min(us) / 1000,
        "import_cpu_ms": statistics.median(cpu) * 1000,
    }


def show(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if "note" in r:
            print(f"{r['row']:<60} {r['note']}")
        elif "floor_ms" in r:
            print(
                f"{r['row']:<60} lib {r['lib_ms']:8.1f} ms {r['lib_MBps']:7.1f} MB/s | "
                f"floor {r['floor_ms']:7.1f} ms {r['floor_MBps']:7.1f} MB/s | {r['ratio']:.2f}x floor (n={r['n']})"
            )
        elif "rss_growth_MiB" in r:
            print(
                f"{r['row']:<60} {r['lib_ms']:8.0f} ms {r['lib_MBps']:7.1f} MB/s | "
                f"host RSS growth {r['rss_growth_MiB']:.1f} MiB"
            )
        elif "extra_ms" in r:
            print(
                f"{r['row']:<60} first {r['first_ms']:.1f} ms, second {r['second_ms']:.1f} ms: "
                f"+{r['extra_ms']:.1f} ms (median of {r['n']} processes; min +{r['extra_min_ms']:.1f})"
            )
        else:
            print(
                f"{r['row']:<60} {r['import_ms']:.1f} ms (min {r['import_min_ms']:.1f}); "
                f"CPU {r['import_cpu_ms']:.1f} ms"
            )


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    small, big = (3, 1) if args.quick else (30, 5)
    sizes = [(MiB, small), (50 * MiB, big)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="alphora-bench-") as tmp:
        rows += await transfer_rows("local", Path(tmp) / "local", sizes)
        if args.no_docker:
            rows.append({"row": "docker", "note": "skipped (--no-docker)"})
        elif not docker_ready():
            rows.append({"row": "docker", "note": "n/a: no Docker engine or plugin"})
        else:
            rows += await transfer_rows("docker", Path(tmp) / "docker", sizes)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = asyncio.run(main_async(args))
    procs = 3 if args.quick else 15
    rows += first_sandbox(procs)
    rows.append(import_time(procs))
    show(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
