"""The doctor's probes: each attacks one guarantee the way hostile sandbox code would.

They never touch anything outside the doctor's own temporary directory and sandboxes, with two
deliberate exceptions that cannot change anything: ``proc-sys-write`` writes the *current* value of
``/proc/sys/kernel/core_pattern`` back to it, and ``network`` only reads interfaces and routes (no
probe ever connects anywhere). The bombs run with small limits, and the fork bomb on the local
tiers only inside a pids cgroup the doctor made (see ``agent.py``).

This module holds the helpers every probe uses and the probes of the file API, the host and the
network; :mod:`.probes_proc` holds those of processes and resources (bombs, leftovers, the engine's
log). Importing :mod:`.probes_proc` registers both families, in scorecard order (this one first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..errors import SandboxError
from . import host
from .model import Outcome, ProbeContext, Verdict, probe

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
    tried = (
        f"{len(attempts)} attempts ('..', absolute, symlink, dir symlink, hard link; read/list/copy/write/delete/move)"
    )
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
    got = await _json_call(
        sb,
        f"import json, os\ntok = {token!r}\nprint(json.dumps({{'names': sorted(os.environ), "
        f"'hits': sorted(k for k, v in os.environ.items() if tok in v)}}))",
    )
    if got["hits"]:
        return Outcome(
            Verdict.FAILED,
            f"{name} (set in the agent's environment) is in sandbox code's environment as {', '.join(got['hits'])}",
        )
    return Outcome(
        Verdict.HELD,
        f"{name} not in sandbox code's environment ({len(got['names'])} variables: "
        f"{', '.join(got['names'][:8])}{', ...' if len(got['names']) > 8 else ''})",
    )


@probe("agent-files", "host files: a secret .env next to the agent's script (sys.path[0]) and in its cwd")
async def agent_files(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    secrets = ctx.spec["secrets"]
    places = {"the agent's script directory": secrets["script_file"], "the agent's cwd": secrets["cwd_file"]}
    got = await _json_call(
        sb,
        f"""
import json
out = {{}}
for what, path in {places!r}.items():
    try:
        out[what] = "secret read" if {secrets["file"]!r} in open(path).read() else "read, no secret"
    except OSError as e:
        out[what] = type(e).__name__
print(json.dumps(out))
""",
    )
    read = [f"{places[w]} ({w})" for w, res in got.items() if res == "secret read"]
    if read:
        return ctx.breach(
            f"sandbox code read the secret in {' and '.join(read)}", documented_on=("local",), why=LOCAL_DOC
        )
    return Outcome(Verdict.HELD, "; ".join(f"{places[w]}: {res}" for w, res in got.items()))


@probe("host-processes", "host processes: can sandbox code see the agent's process and read its environment?")
async def host_processes(sb: Sandbox, ctx: ProbeContext) -> Outcome:
    mark, env_tok = ctx.spec["agent_mark"], ctx.spec["secrets"]["env"]
    got = await _json_call(
        sb,
        f"""
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
""",
    )
    if got["found"]:
        what = f"sees the agent's process (pid {got['found'][0]}) among {got['seen']} processes"
        if got["environ"]:
            what += f" and read {ctx.spec['secrets']['env_name']} from its /proc/{got['environ'][0]}/environ"
        return ctx.breach(what, documented_on=("local",), why=LOCAL_DOC)
    return Outcome(Verdict.HELD, f"sees {got['seen']} processes, none of the host's (own PID namespace)")


_WAIT_FOR_GO = (
    "import os, time\nt = time.monotonic()\n"
    "while not os.path.exists('go') and time.monotonic() - t < 30:\n    time.sleep(0.02)\n"
)


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
            return Outcome(
                Verdict.NOT_RUN,
                "no host process carries the marker: under gVisor sandbox code runs inside gVisor's own kernel",
            )
        return Outcome(
            Verdict.ERROR, f"no host process carried the marker (call: {result.status.value} {result.error[-200:]})"
        )
    if uids.real == 0 or uids.effective == 0:
        return ctx.breach(
            f"the host sees sandbox code as uid {uids.real} (root)",
            documented_on=("local",),
            why=LOCAL_DOC + ", and you are root",
        )
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
        return ctx.breach(
            f"writing core_pattern ({got['value']!r}) back succeeded: /proc/sys is writable",
            documented_on=("local",),
            why=LOCAL_DOC,
        )
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
    return ctx.breach(
        f"network reachable with the network disabled: {seen}",
        documented_on=("local",),
        why="the local tier cannot switch the network off",
    )
