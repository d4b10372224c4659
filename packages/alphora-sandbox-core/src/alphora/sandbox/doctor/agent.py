"""The doctor's stand-in for your agent: a separate Python process that creates sandboxes and runs
probes in them, set up the way an agent usually is.

The doctor starts it as ``python <tmp>/agent/agent.py <spec.json> <mark>`` with its working
directory in ``<tmp>/project`` and a secret variable in its environment, next to secret ``.env``
files in both directories, so probes can check that none of that reaches sandbox code. Running
probes in their own process also lets the doctor put the fork bomb's agent inside a pids cgroup
(joined first thing, below) and kill whatever a probe leaves behind without touching itself.

The spec (JSON, written by the doctor):

``tier``, ``backend``, ``backend_options``, ``limits_network``/``policy_network`` (your
configuration's network switches), ``base_path``, ``probes`` (ids), ``out`` (where to write the
results), ``cgroup``/``cgroup_sandbox``/``cgroup_reason`` (the pids cgroups to join and to move
the sandbox into, or why there are none), ``secrets``, ``sentinel``, ``agent_mark``, ``docker_host``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SandboxError
from ..sandbox import Sandbox
from ..types import ResourceLimits, SecurityPolicy
from . import probes as _probes  # noqa: F401 - registers the file API, host and network probes
from . import probes_proc as _probes_proc  # noqa: F401 - then those of processes and resources
from .model import PROBES, Outcome, Probe, ProbeContext, Verdict

__all__ = ["AGENT_SCRIPT", "main"]

#: the file the doctor writes as ``<tmp>/agent/agent.py`` (so ``sys.path[0]`` is that directory)
AGENT_SCRIPT = "import sys\nfrom alphora.sandbox.doctor.agent import main\nraise SystemExit(main(sys.argv[1]))\n"

#: the limits of every probe's sandbox, before the probe's own (small, so bombs are quick and safe)
BASE_LIMITS: dict[str, Any] = {
    "timeout_seconds": 30.0,
    "memory_mb": 256,
    "max_processes": 64,
    "max_output_size": 1024 * 1024,
}
PROBE_TIMEOUT = 150.0


def _sandbox(spec: Mapping[str, Any], p: Probe) -> Sandbox:
    limits = ResourceLimits(**{**BASE_LIMITS, **p.limits, "network_enabled": bool(spec["limits_network"])})
    # Your policy's static checks (blocked imports, shell switch ...) are a guard rail, not a
    # boundary: the probes test the boundary, so only the policy's network switch is kept.
    policy = SecurityPolicy(allow_network=bool(spec["policy_network"]))
    return Sandbox(
        spec["backend"],
        base_path=spec["base_path"],
        resource_limits=limits,
        security_policy=policy,
        backend_options=dict(spec["backend_options"]),
        keep_workspace=False,
    )


async def run_probe(spec: Mapping[str, Any], p: Probe) -> Outcome:
    ctx = ProbeContext(tier=spec["tier"], spec=spec)
    sb = _sandbox(spec, p)
    try:
        await sb.start()
    except (SandboxError, OSError) as exc:
        await _quietly_destroy(sb)
        return Outcome(Verdict.ERROR, f"the sandbox did not start: {exc}")
    try:
        return await p.fn(sb, ctx)
    finally:
        await _quietly_destroy(sb)


async def _quietly_destroy(sb: Sandbox) -> None:
    try:
        await asyncio.wait_for(sb.destroy(), 60)
    except Exception:  # noqa: BLE001 - the doctor's own cleanup; leftovers are swept by the parent
        traceback.print_exc()


async def run_tier(spec: Mapping[str, Any]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for pid in spec["probes"]:
        p = PROBES[pid]
        t0 = time.monotonic()
        try:
            outcome = await asyncio.wait_for(run_probe(spec, p), PROBE_TIMEOUT)
        except asyncio.TimeoutError:
            outcome = Outcome(Verdict.ERROR, f"the probe did not finish within {PROBE_TIMEOUT:.0f} s")
        except Exception as exc:  # noqa: BLE001 - one broken probe must not hide the others' results
            traceback.print_exc()
            outcome = Outcome(Verdict.ERROR, f"{type(exc).__name__}: {exc}"[:400])
        out[pid] = Outcome(outcome.verdict, outcome.evidence, time.monotonic() - t0)
        _write(spec, out)  # partial results survive a crash of a later probe
    return out


def _write(spec: Mapping[str, Any], results: Mapping[str, Outcome]) -> None:
    tmp = Path(spec["out"] + ".tmp")
    tmp.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}))
    tmp.replace(spec["out"])


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("cgroup"):  # before anything else: every process this agent starts stays inside it
        Path(spec["cgroup"], "cgroup.procs").write_text("0")
    asyncio.run(run_tier(spec))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1]))
