"""The doctor's probes: each attacks one guarantee the way hostile sandbox code would.

They never touch anything outside the doctor's own temporary directory and sandboxes, with two
deliberate exceptions that cannot change anything: ``proc-sys-write`` writes the *current* value of
``/proc/sys/kernel/core_pattern`` back to it, and ``network`` only reads interfaces and routes (no
probe ever connects anywhere). The bombs run with small limits, and the fork bomb on the local
tiers only inside a pids cgroup the doctor made (see ``agent.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..errors import SandboxError
from . import host
from .model import DOCKER_TIERS, Outcome, ProbeContext, Verdict, probe

if TYPE_CHECKING:
    from ..sandbox import Sandbox

MiB = 1024 * 1024
LOCAL_DOC = "the local tier runs sandbox code as your user, on your machine"


class ProbeError(Exception):
    """The probe could not observe what it needed (reported as verdict ``error``)."""


async def _json_call(sb: Sandbox, code: str, timeout: float = 30.0) -> Any:
    """Run ``code`` (which prints one JSON document last) and return it parsed."""
    r = await sb.run(code, timeout=timeout)
    lines = r.stdout.strip().splitlines()
    if not lines:
        raise ProbeError(f"probe code printed nothing ({r.status.value}: {(r.error or r.stderr)[-300:]})")
    try:
        return json.loads(lines[-1])
    except ValueError as exc:
        raise ProbeError(f"probe code printed no JSON: {lines[-1][:200]!r}") from exc


def _mb(n: float) -> str:
    return f"{n / MiB:.1f} MB"


# -- the file API -------------------------------------------------------------------------------

_PLANT = """
import json, os
target, outside = {target!r}, {outside!r}
{setup}
out = {{}}
for name, make in (("link", lambda: os.symlink(target, "link")), ("dirlink", lambda: os.symlink(outside, "dirlink")),
                   ("hard", lambda: os.link(target, "hard"))):
    try:
        make()
        out[name] = "planted"
    except OSError as e:
        out[name] = e.strerror or type(e).__name__
print(json.dumps(out))
"""

_INSPECT = """
import hashlib, json, os
d = {outside!r}
print(json.dumps({{n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest() for n in sorted(os.listdir(d))}}))
"""


@probe("file-api-escape", "file API: '..', absolute paths, planted symlinks and hard links to a sentinel outside")
async def file_api_escape(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    token = ctx.spec["sentinel"]["token"]
    if ctx.docker:  # "outside" is the container's own filesystem: sandbox code makes the sentinel there
        outside = f"/tmp/alphora-doctor-{uuid.uuid4().hex[:8]}"
        setup = f"os.makedirs(outside)\nopen(target, 'w').write({token!r})"
    else:  # a sentinel the doctor made on the host, next to the workspaces
        outside = ctx.spec["sentinel"]["dir"]
        setup = ""
    target = f"{outside}/secret.txt"

    async def snapshot() -> Any:
        if ctx.docker:
            return await _json_call(sb, _INSPECT.format(outside=outside))
        return _host_snapshot(outside)

    planted = await _json_call(sb, _PLANT.format(target=target, outside=outside, setup=setup))
    before = await snapshot()
    climb = "../" * 16 + target.lstrip("/")
    attempts: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("read '..'", lambda: sb.read_file_bytes(climb)),
        ("read absolute", lambda: sb.read_file_bytes(target)),
        ("read symlink", lambda: sb.read_file_bytes("link")),
        ("read via dir symlink", lambda: sb.read_file_bytes("dirlink/secret.txt")),
        ("read hard link", lambda: sb.read_file_bytes("hard")),
        ("list dir symlink", lambda: sb.list_files("dirlink")),
        ("copy symlink", lambda: sb.copy_file("link", "copied")),
        ("write via dir symlink", lambda: sb.write_file("dirlink/secret.txt", "overwritten")),
        ("write absolute", lambda: sb.write_file(target, "overwritten")),
        ("write '..'", lambda: sb.write_file("../" * 16 + outside.lstrip("/") + "/new.txt", "x")),
        ("delete via dir symlink", lambda: sb.delete_file("dirlink/secret.txt")),
        ("move via dir symlink", lambda: sb.move_file("dirlink/secret.txt", "moved")),
    ]
    if planted.get("hard") != "planted":
        attempts = [a for a in attempts if a[0] != "read hard link"]
    refused, allowed, leaks = [], [], []
    for name, attempt in attempts:
        try:
            got = await attempt()
        except (SandboxError, OSError):
            refused.append(name)
            continue
        allowed.append(name)
        if token in repr(got) or "secret.txt" in repr(got):
            leaks.append(name)
    for name in ("copied", "moved"):  # whatever a permitted copy/move produced must not hold the secret
        with contextlib.suppress(SandboxError, OSError):
            if token.encode() in await sb.read_file_bytes(name):
                leaks.append(f"{name} file")
    after = await snapshot()
    links = ", ".join(f"{k}: {v}" for k, v in planted.items() if v != "planted")
    tried = f"{len(attempts)} attempts ('..', absolute, symlink, dir symlink, hard link; read/list/copy/write/delete/move)"
    if leaks or after != before:
        what = f"secret returned by: {', '.join(leaks)}" if leaks else "the sentinel outside the workspace changed"
        return Outcome(Verdict.FAILED, f"{what} ({tried})")
    inside = f", {len(allowed)} stayed inside the workspace ({', '.join(allowed)})" if allowed else ""
    note = f"; not plantable by sandbox code: {links}" if links else ""
    return Outcome(Verdict.HELD, f"{tried}: {len(refused)} refused{inside}; sentinel unchanged{note}")


def _host_snapshot(directory: str) -> dict[str, tuple[bytes, int, int]]:
    """name -> (content, inode, mtime) of every file in ``directory``."""
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(Path(directory).iterdir())}


# -- the host: environment, files, processes, user, /proc/sys -----------------------------------

@probe("host-env", "host environment: a secret variable of the agent process")
async def host_env(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    name, token = ctx.spec["secrets"]["env_name"], ctx.spec["secrets"]["env"]
    got = await _json_call(sb, f"import json, os\ntok = {token!r}\nprint(json.dumps({{'names': sorted(os.environ), "
                               f"'hits': sorted(k for k, v in os.environ.items() if tok in v)}}))")
    if got["hits"]:
        return Outcome(Verdict.FAILED, f"{name} (set in the agent's environment) is in sandbox code's environment as "
                                       f"{', '.join(got['hits'])}")
    return Outcome(Verdict.HELD, f"{name} not in sandbox code's environment ({len(got['names'])} variables: "
                                 f"{', '.join(got['names'][:8])}{', ...' if len(got['names']) > 8 else ''})")


@probe("agent-files", "host files: a secret .env next to the agent's script (sys.path[0]) and in its cwd")
async def agent_files(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    secrets = ctx.spec["secrets"]
    places = {"the agent's script directory": secrets["script_file"], "the agent's cwd": secrets["cwd_file"]}
    got = await _json_call(sb, f"""
import json
out = {{}}
for what, path in {places!r}.items():
    try:
        out[what] = "secret read" if {secrets["file"]!r} in open(path).read() else "read, no secret"
    except OSError as e:
        out[what] = type(e).__name__
print(json.dumps(out))
""")
    read = [f"{places[w]} ({w})" for w, res in got.items() if res == "secret read"]
    if read:
        return ctx.breach(f"sandbox code read the secret in {' and '.join(read)}", documented_on=("local",),
                          why=LOCAL_DOC)
    return Outcome(Verdict.HELD, "; ".join(f"{places[w]}: {res}" for w, res in got.items()))


@probe("host-processes", "host processes: can sandbox code see the agent's process and read its environment?")
async def host_processes(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    mark, env_tok = ctx.spec["agent_mark"], ctx.spec["secrets"]["env"]
    got = await _json_call(sb, f"""
import json, os
seen, found, environ = 0, [], []
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    seen += 1
    try:
        cmd = open(f"/proc/{{p}}/cmdline", "rb").read()
    except OSError:
        continue
    if {mark.encode()!r} in cmd:
        found.append(int(p))
        try:
            if {env_tok.encode()!r} in open(f"/proc/{{p}}/environ", "rb").read():
                environ.append(int(p))
        except OSError:
            pass
print(json.dumps({{"seen": seen, "found": found, "environ": environ}}))
""")
    if got["found"]:
        what = f"sees the agent's process (pid {got['found'][0]}) among {got['seen']} processes"
        if got["environ"]:
            what += f" and read {ctx.spec['secrets']['env_name']} from its /proc/{got['environ'][0]}/environ"
        return ctx.breach(what, documented_on=("local",), why=LOCAL_DOC)
    return Outcome(Verdict.HELD, f"sees {got['seen']} processes, none of the host's (own PID namespace)")


_WAIT_FOR_GO = ("import os, time\nt = time.monotonic()\n"
                "while not os.path.exists('go') and time.monotonic() - t < 30:\n    time.sleep(0.02)\n")


@probe("host-uid", "host user: which uid the host sees for sandbox code")
async def host_uid(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    mark = f"alphora-doctor-uid-{uuid.uuid4().hex}"
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {_WAIT_FOR_GO!r}, {mark!r}])\n"
    call = asyncio.ensure_future(sb.run(code, timeout=40))
    found: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 15
        while not found and not call.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            found = await asyncio.to_thread(host.processes_with, mark)
        uids = None
        with contextlib.suppress(psutil.Error):
            uids = found[0].uids() if found else None
    finally:
        with contextlib.suppress(SandboxError, OSError):
            await sb.write_file("go", "")
        result = await call
    if uids is None:
        if ctx.tier == "docker+runsc":
            return Outcome(Verdict.NOT_RUN, "no host process carries the marker: under gVisor sandbox code runs "
                                            "inside gVisor's own kernel")
        return Outcome(Verdict.ERROR, f"no host process carried the marker (call: {result.status.value} "
                                      f"{result.error[-200:]})")
    if uids.real == 0 or uids.effective == 0:
        return ctx.breach(f"the host sees sandbox code as uid {uids.real} (root)", documented_on=("local",),
                          why=LOCAL_DOC + ", and you are root")
    return Outcome(Verdict.HELD, f"the host sees sandbox code as uid {uids.real}, not root")


_CORE_PATTERN = """
import json
p = "/proc/sys/kernel/core_pattern"
try:
    cur = open(p, "rb").read()
except OSError as e:
    print(json.dumps({"read": e.strerror or type(e).__name__})); raise SystemExit
try:
    with open(p, "wb") as f:   # the value just read, written back unchanged
        f.write(cur)
    res = "written"
except OSError as e:
    res = f"{type(e).__name__}: {e.strerror}"
print(json.dumps({"value": cur.decode(errors="replace").strip(), "write": res}))
"""


@probe("proc-sys-write", "/proc/sys: write the current core_pattern back (a path to host root if writable)")
async def proc_sys_write(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    got = await _json_call(sb, _CORE_PATTERN)
    if "read" in got:
        return Outcome(Verdict.HELD, f"/proc/sys/kernel/core_pattern is not even readable: {got['read']}")
    if got["write"] == "written":
        return ctx.breach(f"writing core_pattern ({got['value']!r}) back succeeded: /proc/sys is writable",
                          documented_on=("local",), why=LOCAL_DOC)
    return Outcome(Verdict.HELD, f"write-back of core_pattern refused ({got['write']})")


# -- the network --------------------------------------------------------------------------------

_NET = r"""
import json, os, socket
ifaces, errors, routes = set(), [], []
try:
    ifaces.update(n for _, n in socket.if_nameindex())
except OSError as e:
    errors.append(f"if_nameindex: {e}")
for src in ("/sys/class/net", "/proc/net/if_inet6"):
    try:
        ifaces.update(os.listdir(src) if src.startswith("/sys") else (l.split()[-1] for l in open(src)))
    except OSError as e:
        errors.append(f"{src}: {e.strerror}")
try:
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if len(f) > 2 and f[1] == "00000000":
            routes.append(f"default via {f[0]}")
except OSError as e:
    errors.append(f"/proc/net/route: {e.strerror}")
try:
    for line in open("/proc/net/ipv6_route"):
        f = line.split()
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
            routes.append(f"default6 via {f[9]}")
except OSError as e:
    errors.append(f"/proc/net/ipv6_route: {e.strerror}")
print(json.dumps({"ifaces": sorted(ifaces), "routes": sorted(set(routes)), "errors": errors}))
"""


@probe("network", "network egress: interfaces and routes seen from inside (nothing is ever connected to)")
async def network(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    got = await _json_call(sb, _NET)
    seen = f"interfaces: {', '.join(got['ifaces']) or 'none'}; routes: {', '.join(got['routes']) or 'no default route'}"
    if ctx.network_enabled:
        return Outcome(Verdict.CONFIGURED, f"network enabled by configuration; {seen}")
    if not got["ifaces"] and got["errors"]:
        return Outcome(Verdict.ERROR, f"could not read interfaces: {'; '.join(got['errors'])}")
    if set(got["ifaces"]) <= {"lo"} and not got["routes"]:
        return Outcome(Verdict.HELD, seen)
    return ctx.breach(f"network reachable with the network disabled: {seen}", documented_on=("local",),
                      why="the local tier cannot switch the network off")


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
    seen = (f"{name}: the call ended {r.status.value} after {took:.1f} s; "
            + (f"{left} of its processes still running {settle:.0f} s later" if left else
               f"no process left {settle:.0f} s later") + f" ({before} before, {after} after); {usable}")
    return not left and nxt.stdout == "ok\n", seen


#: the forks survive EAGAIN, the first process exits at once: the call ends, the bomb goes on
FORK_BOMB = "import os\nif os.fork() == 0:\n    while True:\n        try:\n            os.fork()\n" \
            "        except OSError:\n            pass\n"
#: issue 9's reproducer: every process dies at its first EAGAIN, the first one among them
FORK_BOMB_NAIVE = "import os\nwhile True:\n    os.fork()\n"


@probe("fork-bomb", "fork bombs whose first process exits (max_processes=16): are the forks reaped?",
       limits={"max_processes": 16, "timeout_seconds": 10}, bomb=True, alone=True)
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


_OUTPUT_BOMB = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(50):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\n"


@probe("output-bomb", "output bomb: print 50 MB with max_output_size=1 MB; the host's memory must not grow with it",
       limits={"max_output_size": MiB}, bomb=True)
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
    seen = (f"result {_mb(got)}, truncated={r.stdout_truncated}; the agent's RSS grew by {_mb(growth)} "
            f"(bound {_mb(bound)})")
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


_FLOOD = ("import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(20):\n    sys.stdout.write(chunk)\nsys.stdout.flush()\n"
          "open('big.bin', 'wb').write(b'z' * (8 << 20))\n")


@probe("engine-log", "engine log: a 20 MB print and an 8 MB file read must not pile up in the engine's log",
       tiers=tuple(sorted(DOCKER_TIERS)), limits={"max_output_size": MiB}, bomb=True)
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
        return Outcome(Verdict.NOT_RUN, f"not run: log driver {driver!r}, and its file ({log_path or 'no LogPath'}) "
                                        "is not readable from here")
    await sb.run(_FLOOD, timeout=60)
    await sb.read_file_bytes("big.bin")
    after = size() or 0
    opts = cfg.get("Config") or {}
    caps = f"max-size={opts['max-size']}" if "max-size" in opts else "no max-size"
    grew = f"log driver {driver!r} ({caps}): its file grew by {_mb(after - before)} to {_mb(after)}"
    if after - before > MiB:
        return Outcome(Verdict.FAILED, f"{grew} after a 20 MB print and an 8 MB file read")
    return Outcome(Verdict.HELD, f"{grew} after a 20 MB print and an 8 MB file read")
