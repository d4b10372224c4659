"""The doctor's probes of processes and resources: fork, memory and output bombs, what destroy()
leaves behind, and the engine's log. The file API, host and network probes (and the helpers
shared by all) are in :mod:`.probes`, imported first so the scorecard order stays the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from . import host
from .model import DOCKER_TIERS, Outcome, ProbeContext, Verdict, probe
from .probes import MiB, ProbeError, _mb

if TYPE_CHECKING:
    from ..sandbox import Sandbox


# -- bombs --------------------------------------------------------------------------------------


async def _docker_pids(sb: Sandbox, ctx: ProbeContext) -> tuple[int, int]:
    """(processes in the sandbox's container now, its pids limit)."""

    def read() -> tuple[int, int]:
        container = _container(ctx, sb)
        limit = int(container.attrs["HostConfig"].get("PidsLimit") or 0)
        stats = container.stats(stream=False)
        return int((stats.get("pids_stats") or {}).get("current", -1)), limit

    current, limit = await asyncio.to_thread(read)
    if current >= 0 and ctx.tier != "docker+runsc":
        return current, limit
    # gVisor: the container's pids cgroup counts the Sentry's host threads (45 and more when idle), not
    # the sandbox's processes; they are in gVisor's own /proc. Count there (also when the runtime
    # reports no pids count), minus the counting call
    r = await sb.run("import os\nprint(sum(p.isdigit() for p in os.listdir('/proc')) - 1)", timeout=15)
    if not r.stdout.strip().isdigit():
        raise ProbeError(f"cannot count the container's processes: {r.status.value} {r.error[-160:]}")
    return int(r.stdout), limit


def _container(ctx: ProbeContext, sb: Sandbox) -> Any:
    from alphora.sandbox_docker._spec import L_ID

    client = host.docker_client(ctx.spec.get("docker_host"))
    found = client.containers.list(all=True, filters={"label": [f"{L_ID}={sb.sandbox_id}"]})
    if not found:
        raise ProbeError(f"no container labelled {L_ID}={sb.sandbox_id}")
    return found[0]


def _local_sandbox_pids() -> set[int]:
    return {p.pid for p in host.descendants()}


async def _contain_local(ctx: ProbeContext) -> str:
    """Move the sandbox's processes into the doctor's capped pids cgroup; "" or why it could not."""
    sub = ctx.spec.get("cgroup_sandbox")
    if not sub:
        return ctx.spec.get("cgroup_reason") or "no pids cgroup"
    own = host.pids_cgroup_of(os.getpid())
    for _ in range(3):  # the runner may pre-fork a spare meanwhile: repeat until every process is in
        for pid in _local_sandbox_pids():
            where = host.pids_cgroup_of(pid)
            if where == own:
                with contextlib.suppress(OSError):
                    host.PidsCgroup(Path(sub)).add(pid)
        await asyncio.sleep(0.2)
    loose = [pid for pid in _local_sandbox_pids() if not host.capped(host.pids_cgroup_of(pid) or "/")]
    return f"processes {loose} are in no capped pids cgroup" if loose else ""


async def _count(sb: Sandbox, ctx: ProbeContext) -> int:
    if ctx.docker:
        return (await _docker_pids(sb, ctx))[0]
    return len(_local_sandbox_pids() | host.PidsCgroup(Path(ctx.spec["cgroup_sandbox"])).procs())


async def _one_bomb(sb: Sandbox, ctx: ProbeContext, name: str, code: str, settle: float = 1.0) -> tuple[bool, str]:
    """Run one bomb; (whether the sandbox came out clean and usable, what was seen)."""
    before = await _count(sb, ctx)
    t0 = time.monotonic()
    r = await sb.run(code, timeout=5)
    took = time.monotonic() - t0
    await asyncio.sleep(settle)
    after = await _count(sb, ctx)
    left = max(0, after - before)
    nxt = await sb.run("print('ok')", timeout=15)
    usable = "next call ok" if nxt.stdout == "ok\n" else f"next call {nxt.status.value}: {nxt.error[-120:]}"
    seen = (
        f"{name}: the call ended {r.status.value} after {took:.1f} s; "
        + (
            f"{left} of its processes still running {settle:.0f} s later"
            if left
            else f"no process left {settle:.0f} s later"
        )
        + f" ({before} before, {after} after); {usable}"
    )
    return not left and nxt.stdout == "ok\n", seen


#: the forks survive EAGAIN, the first process exits at once: the call ends, the bomb goes on
FORK_BOMB = (
    "import os\nif os.fork() == 0:\n    while True:\n        try:\n            os.fork()\n"
    "        except OSError:\n            pass\n"
)
#: issue 9's reproducer: every process dies at its first EAGAIN, the first one among them
FORK_BOMB_NAIVE = "import os\nwhile True:\n    os.fork()\n"


@probe(
    "fork-bomb",
    "fork bombs whose first process exits (max_processes=16): are the forks reaped?",
    limits={"max_processes": 16, "timeout_seconds": 10},
    bomb=True,
    alone=True,
)
async def fork_bomb(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    await sb.run("print('warm')")
    await asyncio.sleep(0.3)
    if ctx.docker:
        _, limit = await _docker_pids(sb, ctx)
        if limit <= 0:
            return Outcome(Verdict.NOT_RUN, "not run: the container has no pids limit to contain it")
    else:
        why = await _contain_local(ctx)
        if why:
            return Outcome(Verdict.NOT_RUN, f"not run: no pids cgroup to contain it ({why})")
    seen = []
    for name, code in (("forks that survive EAGAIN", FORK_BOMB), ("'while True: os.fork()'", FORK_BOMB_NAIVE)):
        clean, what = await _one_bomb(sb, ctx, name, code)
        seen.append(what)
        if not clean:  # the sandbox is not clean any more: the next bomb would prove nothing
            return Outcome(Verdict.FAILED, "; ".join(seen))
    return Outcome(Verdict.HELD, "; ".join(seen))


_MEMORY_BOMB = """
import sys
chunks = []
for i in range(32):   # 32 x 16 MB = 512 MB, four times the limit
    chunks.append(b"x" * (16 << 20))
    print(len(chunks) * 16, flush=True)
print("allocated all", flush=True)
"""


@probe("memory-bomb", "memory bomb: allocate 512 MB with memory_mb=128", limits={"memory_mb": 128}, bomb=True)
async def memory_bomb(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    r = await sb.run(_MEMORY_BOMB, timeout=60)
    reached = next((t for t in reversed(r.stdout.split()) if t.isdigit()), "0")
    nxt = await sb.run("print('ok')", timeout=15)
    usable = "next call ok" if nxt.stdout == "ok\n" else f"next call {nxt.status.value}: {nxt.error[-160:]}"
    if "allocated all" in r.stdout:
        return Outcome(Verdict.FAILED, f"allocated 512 MB with memory_mb=128; {usable}")
    how = "a MemoryError" if "MemoryError" in r.stderr else ("an OOM kill" if r.oom_killed else r.status.value)
    stopped = f"stopped after {reached} MB of 512 MB by {how} (memory_mb=128, oom_killed={r.oom_killed})"
    if nxt.stdout != "ok\n":
        return Outcome(Verdict.FAILED, f"{stopped}, but {usable}")
    return Outcome(Verdict.HELD, f"{stopped}; {usable}")


_OUTPUT_BOMB = (
    "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(50):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\n"
)


@probe(
    "output-bomb",
    "output bomb: print 50 MB with max_output_size=1 MB; the host's memory must not grow with it",
    limits={"max_output_size": MiB},
    bomb=True,
)
async def output_bomb(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    cap = MiB
    bound = 4 * cap + 8 * MiB
    me = psutil.Process()
    await sb.run("print('warm')")
    base = me.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        r = await sb.run(_OUTPUT_BOMB, timeout=60)
    finally:
        stop.set()
        sampler.join()
    growth = peak[0] - base
    got = len(r.stdout.encode())
    seen = (
        f"result {_mb(got)}, truncated={r.stdout_truncated}; the agent's RSS grew by {_mb(growth)} (bound {_mb(bound)})"
    )
    if growth > bound or got > cap or not r.stdout_truncated:
        return Outcome(Verdict.FAILED, f"printed 50 MB: {seen}")
    return Outcome(Verdict.HELD, f"printed 50 MB: {seen}")


# -- what is left behind ------------------------------------------------------------------------

_DAEMON = """
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", {mark!r}])
    os._exit(0)
print("started")
"""


@probe("leftovers", "after destroy(): no process, container or volume of the sandbox is left")
async def leftovers(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    mark = f"alphora-doctor-daemon-{uuid.uuid4().hex}"
    r = await sb.run(_DAEMON.format(mark=mark))
    if r.stdout.strip() != "started":
        raise ProbeError(f"could not start a background daemon: {r.error[-200:]}")
    await asyncio.sleep(0.3)
    runsc = ctx.tier == "docker+runsc"
    daemon = [p.pid for p in host.processes_with(mark)]
    if not daemon and not runsc:
        raise ProbeError("the background daemon is not visible from the host")
    procs = _local_sandbox_pids() if not ctx.docker else set()
    objects = await asyncio.to_thread(_docker_objects, ctx, sb.sandbox_id) if ctx.docker else (0, 0)
    await sb.destroy()
    deadline = time.monotonic() + 5
    while True:
        alive = [p.pid for p in host.processes_with(mark)] + [p for p in procs if _alive(p)]
        left = await asyncio.to_thread(_docker_objects, ctx, sb.sandbox_id) if ctx.docker else (0, 0)
        if (not alive and left == (0, 0)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    ws = str(sb.workspace_path)
    problems = []
    if alive:
        problems.append(f"{len(set(alive))} processes still running (pids {sorted(set(alive))[:8]})")
    if left != (0, 0):
        problems.append(f"{left[0]} containers and {left[1]} volumes still exist")
    if not ctx.docker and await asyncio.to_thread(os.path.exists, ws):
        problems.append(f"workspace {ws} still exists")
    if problems:
        return Outcome(Verdict.FAILED, "after destroy(): " + "; ".join(problems))
    if ctx.docker:
        gone = f"its container and {objects[1]} volumes removed" + ("" if runsc else ", the background daemon gone")
    else:
        gone = f"all {len(procs)} processes gone (runner, background daemon ...), workspace removed"
    return Outcome(Verdict.HELD, f"after destroy(): {gone}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _docker_objects(ctx: ProbeContext, sandbox_id: str) -> tuple[int, int]:
    from alphora.sandbox_docker._spec import L_ID

    client = host.docker_client(ctx.spec.get("docker_host"))
    flt = {"label": [f"{L_ID}={sandbox_id}"]}
    return len(client.containers.list(all=True, filters=flt)), len(client.volumes.list(filters=flt))


_FLOOD = (
    "import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(20):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\n"
    "open('big.bin', 'wb').write(b'z' * (8 << 20))\n"
)


@probe(
    "engine-log",
    "engine log: a 20 MB print and an 8 MB file read must not pile up in the engine's log",
    tiers=tuple(sorted(DOCKER_TIERS)),
    limits={"max_output_size": MiB},
    bomb=True,
)
async def engine_log(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    container = await asyncio.to_thread(_container, ctx, sb)
    cfg = container.attrs["HostConfig"].get("LogConfig") or {}
    driver = cfg.get("Type") or "?"
    if driver == "none":
        return Outcome(Verdict.HELD, "log driver 'none': the engine stores nothing")
    log_path = container.attrs.get("LogPath") or ""

    def size() -> int | None:
        try:
            return os.stat(log_path).st_size
        except OSError:
            return None

    before = size()
    if before is None:
        return Outcome(
            Verdict.NOT_RUN,
            f"not run: log driver {driver!r}, and its file ({log_path or 'no LogPath'}) is not readable from here",
        )
    await sb.run(_FLOOD, timeout=60)
    await sb.read_file_bytes("big.bin")
    after = size() or 0
    opts = cfg.get("Config") or {}
    caps = f"max-size={opts['max-size']}" if "max-size" in opts else "no max-size"
    grew = f"log driver {driver!r} ({caps}): its file grew by {_mb(after - before)} to {_mb(after)}"
    if after - before > MiB:
        return Outcome(Verdict.FAILED, f"{grew} after a 20 MB print and an 8 MB file read")
    return Outcome(Verdict.HELD, f"{grew} after a 20 MB print and an 8 MB file read")
