"""The container a sandbox runs in: hardening, limits, labels and volumes, as engine API parameters.

Pure functions of (sandbox id, ResourceLimits, SecurityPolicy, DockerOptions): tested without an
engine, and the single place that says what "hardened" means.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import attrs

from alphora.sandbox.backend import STANDARD_PATH
from alphora.sandbox.egress_bridge import INSIDE_DIR as EGRESS_DIR
from alphora.sandbox.packages import WHEELHOUSE_DIR, wheelhouse_dir
from alphora.sandbox.rules import network_mode
from alphora.sandbox.types import ResourceLimits, SecurityPolicy

from ._setup import SETUP_CAPS, is_root_user, setup_argv
from .options import DockerOptions

__all__ = [
    "DEFAULT_PATH",
    "HOME_DIR",
    "LABEL",
    "WORKSPACE_DIR",
    "ContainerSpec",
    "container_spec",
    "owner_labels",
    "search_path",
]

LABEL = "org.alphora.sandbox"
L_ID = f"{LABEL}.id"
L_HOST = f"{LABEL}.host"
L_PID = f"{LABEL}.pid"
L_PID_START = f"{LABEL}.pid-start"
L_CREATED = f"{LABEL}.created"
L_ROLE = f"{LABEL}.role"

WORKSPACE_DIR = "/workspace"
HOME_DIR = "/home/sandbox"
MiB = 1024 * 1024
#: processes of the runner itself (the runner and one pre-forked spare child), on top of max_processes
RUNNER_PROCESSES = 2
#: under gVisor the container's pids cgroup counts the Sentry's own host threads, not the sandbox's
#: processes: about 45 with one process, 190 with 30 idle ones, a peak of 779 under a fork bomb held at
#: RLIMIT_NPROC 32 (Debian's runsc 0.0~20221219, ptrace platform), and the whole sandbox dies (exit 2)
#: when the Sentry hits the limit. So ``max_processes`` is an RLIMIT_NPROC inside gVisor's kernel
#: (which counts only this sandbox's processes) and the pids cgroup a host backstop sized for the Sentry.
GVISOR_SENTRY_PIDS = 256
GVISOR_PIDS_PER_PROCESS = 32
#: the engine's PATH for an image that sets none
DEFAULT_PATH = STANDARD_PATH  # an image that sets no PATH gets the standard one
#: the engine's log of the container: none. Everything the container prints is the runner's protocol
#: (every byte of output and of every file read or written); it reaches the backend over the attach
#: stream, and a json-file log would keep all of it on the engine's disk until the container is removed.
LOG_CONFIG = {"type": "none"}


def search_path(image_env: Sequence[str] | None) -> str:
    """PATH inside the sandbox: the user's ``~/.local/bin`` (pip ``--user`` scripts), then the image's
    own PATH (python3 may live anywhere, e.g. ``/opt/conda/bin``), else the engine's default."""
    image_path = next((e.partition("=")[2] for e in image_env or () if e.startswith("PATH=")), "") or DEFAULT_PATH
    local_bin = f"{HOME_DIR}/.local/bin"
    return image_path if local_bin in image_path.split(":") else f"{local_bin}:{image_path}"


def _process_start_time(pid: int) -> str:
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, OSError):
        return ""


def owner_labels() -> dict[str, str]:
    """Labels naming this host process, so a reaper can tell live owners from dead ones."""
    pid = os.getpid()
    return {
        LABEL: "1",
        L_HOST: socket.gethostname(),
        L_PID: str(pid),
        L_PID_START: _process_start_time(pid),
        L_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@attrs.frozen(kw_only=True)
class ContainerSpec:
    """Everything needed to create the container and its volumes."""

    name: str
    image: str
    #: the container's entrypoint (the image's own ENTRYPOINT and CMD are replaced)
    command: tuple[str, ...]
    #: the user the container starts as: root for the setup step, which then drops to ``sandbox_user``
    user: str
    #: who runs the runner and the sandbox's code
    sandbox_user: str
    #: True: the container starts with the setup step (see :mod:`._setup`)
    setup: bool
    labels: dict[str, str]
    environment: dict[str, str]
    volumes: dict[str, str]  # volume name -> mount point
    host_config: dict[str, Any]
    network_disabled: bool


def pids_limit(max_processes: int, gvisor: bool = False) -> int:
    """The container's pids cgroup limit for ``max_processes`` (see :data:`GVISOR_SENTRY_PIDS`)."""
    processes = max_processes + RUNNER_PROCESSES
    return GVISOR_SENTRY_PIDS + GVISOR_PIDS_PER_PROCESS * processes if gvisor else processes


def container_spec(
    *,
    sandbox_id: str,
    instance: str,
    command: Sequence[str],
    limits: ResourceLimits,
    policy: SecurityPolicy,
    opts: DockerOptions,
    image_env: Sequence[str] | None = None,
    gvisor: bool = False,
    egress_dir: str | None = None,
) -> ContainerSpec:
    """The hardened container of one sandbox. ``command``: the runner's bootstrap argv;
    ``image_env``: the image's ``Config.Env`` (for its PATH).

    * no network unless enabled; no-new-privileges; read-only root filesystem; writable
      ``/workspace`` and ``/home/sandbox`` (named volumes of this sandbox) and ``/tmp`` (a
      size-capped tmpfs); private IPC; no engine log (see :data:`LOG_CONFIG`).
    * code runs as the non-root ``user`` option with no capability: the container starts as root
      with only :data:`~._setup.SETUP_CAPS`, and the setup step gives the volumes to that user and
      drops every privilege for good before the runner starts (any image with python3 works, see
      :mod:`._setup`). A ``user`` option of root (``0:0``) runs as such, without the setup step and
      without any capability.
    * memory (swap off), CPU, pids (``max_processes`` + 2: the runner and its pre-forked spare), open files, and
      the largest file a process may write (``disk_mb``: RLIMIT_FSIZE) from ResourceLimits.
    * ``gvisor`` (the runtime is gVisor's runsc): the pids limit leaves room for the Sentry's threads
      (:data:`GVISOR_SENTRY_PIDS`); the runner enforces ``max_processes`` as RLIMIT_NPROC instead.
    * ``egress_dir`` (an egress policy; the host directory of the sandbox's egress proxy, see
      :mod:`alphora.sandbox.egress_bridge`): still no network (``none``), the directory bound
      read-only at :data:`~alphora.sandbox.egress_bridge.INSIDE_DIR`, one process more for the
      runner's forwarder.
    """
    base = f"alphora-{sandbox_id}-{instance}"
    labels = {**opts.labels, **owner_labels(), L_ID: sandbox_id, L_ROLE: "sandbox"}
    mode = network_mode(limits, policy, opts.network_mode)
    net_on = mode != "none"
    tmp_mb = opts.tmp_size_mb or max(16, min(limits.disk_mb, limits.memory_mb))
    file_limit = limits.disk_mb * MiB
    volumes = {f"{base}-workspace": WORKSPACE_DIR, f"{base}-home": HOME_DIR}
    setup = not is_root_user(opts.user)
    host_config: dict[str, Any] = {
        "network_mode": mode,
        "cap_drop": ["ALL"],
        "cap_add": list(SETUP_CAPS) if setup else [],
        "security_opt": ["no-new-privileges:true"],
        "read_only": opts.read_only_rootfs,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_mb}m,mode=1777"},
        "mem_limit": limits.memory_mb * MiB,
        "memswap_limit": limits.memory_mb * MiB,
        "nano_cpus": int(limits.cpu_cores * 1e9),
        "pids_limit": pids_limit(limits.max_processes + (1 if egress_dir else 0), gvisor),
        "ulimits": [
            {"Name": "nofile", "Soft": limits.max_open_files, "Hard": limits.max_open_files},
            {"Name": "fsize", "Soft": file_limit, "Hard": file_limit},
            {"Name": "core", "Soft": 0, "Hard": 0},
        ],
        "ipc_mode": "private",
        "init": False,
        "log_config": dict(LOG_CONFIG),
        "binds": {name: {"bind": target, "mode": "rw"} for name, target in volumes.items()},
    }
    if egress_dir:
        host_config["binds"][egress_dir] = {"bind": EGRESS_DIR, "mode": "ro"}
    wheels = wheelhouse_dir(opts.wheelhouse, field="docker.wheelhouse")
    if wheels:
        host_config["binds"][wheels] = {"bind": WHEELHOUSE_DIR, "mode": "ro"}
    if opts.runtime:
        host_config["runtime"] = opts.runtime
    env = {
        "HOME": HOME_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "PATH": search_path(image_env),
        **opts.environment,
    }
    entry = setup_argv(command[0], opts.user, (WORKSPACE_DIR, HOME_DIR), command) if setup else list(command)
    return ContainerSpec(
        name=base,
        image=opts.image,
        command=tuple(entry),
        user="0:0" if setup else opts.user,
        sandbox_user=opts.user,
        setup=setup,
        labels=labels,
        environment=env,
        volumes=volumes,
        host_config=host_config,
        network_disabled=not net_on,
    )
