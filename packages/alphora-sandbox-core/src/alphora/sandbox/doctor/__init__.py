"""``alphora-sandbox doctor``: the hostile suite's essential probes, run against *your* machine
and configuration, for every tier available here, with a scorecard.

::

    alphora-sandbox doctor                       # every available tier, every probe
    alphora-sandbox doctor --tier isolated --json
    alphora-sandbox doctor --quick               # no bombs
    alphora-sandbox doctor --config sandbox.yaml --image alphora/sandbox:base

Per probe and tier the verdict is ``held``, ``documented limit`` (the docs say this tier does not
protect against it), ``FAILED``, or ``not run`` / ``n/a`` / ``enabled by configuration`` /
``error``, each with one line of evidence. Exit code: 0 nothing FAILED, 1 something FAILED,
2 bad command line or configuration, 3 nothing FAILED but a probe could not complete.

The probes run in a separate "agent" process (``agent.py``), set up the way an agent is: a secret
in its environment and ``.env`` files next to its script and in its working directory. See
docs/doctor.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import SandboxConfig, config_from_env, config_from_file
from ..errors import ConfigurationError
from . import host
from . import probes as _probes  # noqa: F401 - registers the file API, host and network probes
from . import probes_proc as _probes_proc  # noqa: F401 - then those of processes and resources
from .agent import AGENT_SCRIPT
from .model import PROBES, TIERS, Outcome, Verdict
from .report import EXIT_USAGE, Scorecard
from .tiers import TierInfo, detect_tiers

__all__ = ["PROBES", "TIERS", "DoctorError", "Outcome", "Scorecard", "Verdict", "main", "run_doctor"]

ENV_SECRET = "ALPHORA_DOCTOR_SECRET"
#: pids.max of the cgroup an agent process runs in, and of the one a fork bomb's sandbox is moved to
AGENT_PIDS_MAX = 512
BOMB_AGENT_PIDS_MAX = 256
BOMB_SANDBOX_PIDS_MAX = 128


class DoctorError(Exception):
    """A tier or probe that was asked for cannot run (exit code 2)."""


def run_doctor(
    config: SandboxConfig | None = None,
    *,
    tiers: Sequence[str] | None = None,
    probes: Sequence[str] | None = None,
    image: str | None = None,
    quick: bool = False,
    configuration: str = "",
    progress: Any = None,
) -> Scorecard:
    """Run the probes; ``tiers``/``probes`` None mean every available tier / every probe."""
    config = config or SandboxConfig()
    run = uuid.uuid4().hex[:12]
    infos = detect_tiers(config, image, run)
    chosen = [t for t in TIERS if t in tiers] if tiers else [t for t in TIERS if infos[t].available]
    for t in chosen:
        if not infos[t].available:
            raise DoctorError(f"tier {t!r} is not available here: {infos[t].detail}")
    probe_ids = [p for p in PROBES if (not probes or p in probes) and not (quick and PROBES[p].bomb)]
    card = Scorecard(
        run=run,
        host=_host_info(),
        configuration=configuration or _describe(config),
        tiers=infos,
        ran=chosen,
        probes=probe_ids,
    )
    if config.base_path:
        Path(config.base_path).expanduser().mkdir(parents=True, exist_ok=True)
    root = Path(
        tempfile.mkdtemp(
            prefix="alphora-doctor-", dir=Path(config.base_path).expanduser() if config.base_path else None
        )
    )
    card.workdir = str(root)
    try:
        setup = _setup(root, run, config)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        for tier in chosen:
            info = infos[tier]
            per: dict[str, Outcome] = {}
            mine = [p for p in probe_ids if tier in PROBES[p].tiers]
            groups = [[p for p in mine if not PROBES[p].alone]] + [[p] for p in mine if PROBES[p].alone]
            for n, group in enumerate(g for g in groups if g):
                if progress is not None:
                    progress(f"doctor: {tier}: {', '.join(group)}")
                per.update(_run_agent(root, setup, info, group, f"{tier.replace('+', '-')}-{n}", card.notes))
            card.results[tier] = {
                p: per.get(p, Outcome(Verdict.NOT_APPLICABLE, f"does not apply to {tier}")) for p in probe_ids
            }
    finally:
        _cleanup(root, setup["agent_mark"], infos, run, card.notes)
    return card


def _cleanup(root: Path, agent_mark: str, infos: dict[str, TierInfo], run: str, notes: list[str]) -> None:
    """Whatever the probes' sandboxes left (each step on its own: one failing must not skip the rest)."""
    try:
        killed = host.sweep(str(root), [agent_mark])
        if killed:
            notes.append(f"the doctor killed {killed} processes still running from its sandboxes")
    except Exception as exc:  # noqa: BLE001 - reported, and the other steps still run
        notes.append(f"could not look for leftover processes: {exc!r}")
    _remove_containers(infos, run, notes)
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        notes.append(f"could not remove {root}")


def _setup(root: Path, run: str, config: SandboxConfig) -> dict[str, Any]:
    """The agent's directories and secrets, and the file API's sentinel outside every workspace."""
    root.chmod(0o755)  # visibility, not permissions, decides what the probes find
    agent, project, outside = root / "agent", root / "project", root / "host" / "outside"
    for d in (agent, project, outside, root / "sandboxes"):
        d.mkdir(parents=True)
        d.chmod(0o755)
    env_token, file_token, sentinel = (
        f"alphora-doctor-{what}-{uuid.uuid4().hex}" for what in ("env", "file", "sentinel")
    )
    (agent / "agent.py").write_text(AGENT_SCRIPT)
    for d in (agent, project):
        (d / ".env").write_text(f"OPENAI_API_KEY={file_token}\n")
        (d / ".env").chmod(0o644)
    (outside / "secret.txt").write_text(sentinel)
    return {
        "base_path": str(root / "sandboxes"),
        "limits_network": config.resource_limits.network_enabled,
        "policy_network": config.security_policy.allow_network,
        "network_enabled": config.network_enabled,
        "run": run,
        "agent_mark": f"alphora-doctor-agent-{run}",
        "secrets": {
            "env_name": ENV_SECRET,
            "env": env_token,
            "file": file_token,
            "script_file": str(agent / ".env"),
            "cwd_file": str(project / ".env"),
        },
        "sentinel": {"dir": str(outside), "token": sentinel},
        "agent_script": str(agent / "agent.py"),
        "project": str(project),
    }


def _run_agent(
    root: Path, setup: dict[str, Any], info: TierInfo, group: list[str], name: str, notes: list[str]
) -> dict[str, Outcome]:
    alone = len(group) == 1 and PROBES[group[0]].alone
    cgroup = sub = None
    reason = ""
    if info.name in ("local", "isolated"):
        cgroup, reason = host.PidsCgroup.create(
            f"alphora-doctor-{setup['run']}-{name}", BOMB_AGENT_PIDS_MAX if alone else AGENT_PIDS_MAX
        )
        if cgroup is not None and alone:
            sub, reason = host.PidsCgroup.create("sandbox", BOMB_SANDBOX_PIDS_MAX, parent=cgroup)
    out = root / f"out-{name}.json"
    spec = {
        **setup,
        "tier": info.name,
        "backend": info.backend,
        "backend_options": info.options,
        "docker_host": info.docker_host,
        "probes": group,
        "out": str(out),
        "cgroup": str(cgroup.path) if cgroup else None,
        "cgroup_sandbox": str(sub.path) if sub else None,
        "cgroup_reason": reason,
    }
    spec_path = root / f"spec-{name}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = root / f"agent-{name}.log"
    env = {**os.environ, ENV_SECRET: setup["secrets"]["env"]}
    timeout = 120 + 160 * len(group)
    code: int | str
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, setup["agent_script"], str(spec_path), setup["agent_mark"]],
                cwd=setup["project"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = f"killed after {timeout} s"
    finally:
        if cgroup is not None:
            left = len(cgroup.procs())
            if left:
                notes.append(f"{info.name}: the doctor killed {left} processes left in the cgroup of {group}")
            if not cgroup.remove():
                notes.append(f"could not remove the cgroup {cgroup.path}")
    results: dict[str, Outcome] = {}
    if out.exists():
        results = {k: Outcome.from_dict(v) for k, v in json.loads(out.read_text()).items()}
    if len(results) < len(group):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
        why = f"the agent process ended ({code}) before this probe finished: {' | '.join(tail)[-300:]}"
        results.update({p: Outcome(Verdict.ERROR, why) for p in group if p not in results})
    return results


def _remove_containers(infos: dict[str, TierInfo], run: str, notes: list[str]) -> None:
    docker = next((t for t in infos.values() if t.backend == "docker" and t.available), None)
    if docker is None:
        return
    try:
        client = host.docker_client(docker.docker_host)
        flt = {"label": [f"org.alphora.doctor={run}"]}
        found = client.containers.list(all=True, filters=flt)
        for c in found:
            c.remove(force=True)
        vols = client.volumes.list(filters=flt)
        for v in vols:
            v.remove(force=True)
        if found or vols:
            notes.append(f"the doctor removed {len(found)} containers and {len(vols)} volumes its sandboxes left")
    except Exception as exc:  # noqa: BLE001 - cleanup of the doctor's own objects must not hide the scorecard
        notes.append(f"could not check for leftover containers: {exc}")


def _host_info() -> dict[str, Any]:
    uid = os.geteuid()
    py = platform.python_version()
    cg, why = "?", ""
    if Path("/sys/fs/cgroup/pids/cgroup.procs").exists():
        cg = "cgroup v1 pids"
    elif Path("/sys/fs/cgroup/cgroup.controllers").exists():
        cg = "cgroup v2"
    else:
        cg, why = "none", " (fork bombs on the local tiers will not be run)"
    summary = (
        f"uid {uid}{' (root)' if uid == 0 else ''}, {platform.system()} {platform.release()}, Python {py}, {cg}{why}"
    )
    return {"uid": uid, "kernel": platform.release(), "python": py, "cgroup": cg, "summary": summary}


def _describe(config: SandboxConfig) -> str:
    egress = config.security_policy.egress
    if egress is not None:  # rules.network_access: the proxy only (the probes still run with no network)
        net = f"network: egress through the proxy only ({len(egress.allow)} allow entries)"
    else:
        net = "network enabled" if config.network_enabled else "network disabled"
    return f"{net}; configured backend {config.backend_type!r}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alphora-sandbox doctor",
        description="Attack the sandbox the way hostile code would, on this machine, for every available tier, "
        "and print a scorecard (held / documented limit / FAILED). Exit code 1 when a probe FAILED.",
    )
    p.add_argument("--tier", action="append", choices=TIERS, help="only this tier (repeatable; default: all available)")
    p.add_argument("--probe", action="append", choices=list(PROBES), help="only this probe (repeatable)")
    p.add_argument("--quick", action="store_true", help="leave out the bombs (fork, memory, output, engine log)")
    p.add_argument(
        "--image",
        help="Docker image of the docker tiers (default: your configuration's, else the spec's python:3.11-slim)",
    )
    p.add_argument("--config", type=Path, help="a sandbox config file (.json/.yaml); default: SANDBOX_* variables")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        if ns.config is not None:
            config, where = config_from_file(ns.config), f"file {ns.config}"
        else:
            config = config_from_env()
            names = sorted(k for k in os.environ if k.startswith("SANDBOX_"))
            where = f"SANDBOX_* environment ({', '.join(names)})" if names else "defaults (no --config, no SANDBOX_*)"
    except ConfigurationError as exc:
        print(f"alphora-sandbox doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    t0 = time.monotonic()
    try:
        card = run_doctor(
            config,
            tiers=ns.tier,
            probes=ns.probe,
            image=ns.image,
            quick=ns.quick,
            configuration=f"{where}; {_describe(config)}",
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except (DoctorError, ConfigurationError) as exc:
        print(f"alphora-sandbox doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if ns.json:
        print(json.dumps({**card.to_dict(), "seconds": round(time.monotonic() - t0, 1)}, indent=2))
    else:
        print(card.render(width=shutil.get_terminal_size((100, 20)).columns))
    return card.exit_code
