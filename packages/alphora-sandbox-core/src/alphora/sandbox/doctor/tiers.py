"""Which tiers this machine has, and how the doctor builds each from your configuration."""

from __future__ import annotations

import contextlib
import platform
from typing import Any

import attrs

from ..config import SandboxConfig
from ..rules import DEFAULT_IMAGE
from .model import TIERS

__all__ = ["TierInfo", "detect_tiers"]


@attrs.frozen(kw_only=True)
class TierInfo:
    """One tier: whether it can run here, and with which backend and options."""

    name: str
    available: bool
    #: why it is not available, or what it runs on (bwrap version, engine, image, runtime)
    detail: str
    backend: str = ""
    options: dict[str, Any] = attrs.field(factory=dict)
    docker_host: str | None = None


def detect_tiers(config: SandboxConfig, image: str | None, run_label: str) -> dict[str, TierInfo]:
    """Every tier of :data:`~.model.TIERS`, available or not (with the reason)."""
    from ..plugins import get_registry

    backends = get_registry().backends
    out: dict[str, TierInfo] = {}
    local_opts = config.backend_options("local")
    out["local"] = TierInfo(
        name="local",
        available="local" in backends,
        backend="local",
        options=local_opts,
        detail=f"{platform.system()} {platform.release()}, runner on this host",
    )
    out["isolated"] = _isolated(config, backends)
    docker, runsc = _docker(config, image, run_label, backends)
    out["docker"], out["docker+runsc"] = docker, runsc
    assert tuple(out) == TIERS
    return out


def _isolated(config: SandboxConfig, backends: Any) -> TierInfo:
    import shutil
    import subprocess

    if "isolated" not in backends:
        return TierInfo(name="isolated", available=False, detail="no 'isolated' backend is registered")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return TierInfo(
            name="isolated", available=False, detail="bubblewrap (bwrap) is not installed: apt install bubblewrap"
        )
    version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return TierInfo(
        name="isolated",
        available=True,
        backend="isolated",
        options=config.backend_options("isolated"),
        detail=f"{version or bwrap}",
    )


def _engine_problem(docker_host: str | None) -> str:
    """Why no engine answers, as a sandbox would say it: the address, the socket's error and the fix
    ("Permission denied ... add it to the 'docker' group", "No such file or directory ... start it")."""
    from alphora.sandbox_docker._client import make_client  # the plugin's one wording of this error

    try:
        make_client(docker_host, timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - DockerError from make_client, or the SDK's error from ping
        return str(exc)
    return "no Docker engine answered the probe in time (DOCKER_HOST or the local socket)"


def _docker(config: SandboxConfig, image: str | None, run_label: str, backends: Any) -> tuple[TierInfo, TierInfo]:
    def off(why: str) -> tuple[TierInfo, TierInfo]:
        return (
            TierInfo(name="docker", available=False, detail=why),
            TierInfo(name="docker+runsc", available=False, detail=why),
        )

    if "docker" not in backends:
        return off("the Docker plugin is not installed: pip install 'alphora-sandbox[docker]'")
    from alphora.sandbox_docker import DockerOptions, is_docker_available

    opts: dict[str, Any] = config.backend_options("docker")
    if image:
        opts["image"] = image
    opts.setdefault("image", DEFAULT_IMAGE)
    opts["labels"] = {**dict(opts.get("labels") or {}), "org.alphora.doctor": run_label}
    parsed = DockerOptions.from_mapping(opts)
    if not is_docker_available(parsed.docker_host):
        return off(_engine_problem(parsed.docker_host))
    from .host import docker_client

    client = docker_client(parsed.docker_host)
    info = client.info()
    try:
        client.api.inspect_image(parsed.image)
    except Exception as exc:  # noqa: BLE001 - docker.errors.ImageNotFound or an API error
        why = (
            f"image {parsed.image!r} is not on the engine ({type(exc).__name__}); build it with "
            "`alphora-sandbox docker build` or choose one with --image"
        )
        return off(why)
    runtimes = sorted(info.get("Runtimes") or {})
    engine = f"engine {info.get('ServerVersion', '?')}, image {parsed.image}"
    docker = TierInfo(
        name="docker",
        available=True,
        backend="docker",
        options=opts,
        docker_host=parsed.docker_host,
        detail=f"{engine}, runtime {parsed.runtime or info.get('DefaultRuntime', 'runc')}",
    )
    if "runsc" not in runtimes:
        runsc = TierInfo(
            name="docker+runsc",
            available=False,
            detail=f"no runsc runtime registered with the engine (runtimes: {', '.join(runtimes)})",
        )
    else:
        runsc = TierInfo(
            name="docker+runsc",
            available=True,
            backend="docker",
            options={**opts, "runtime": "runsc"},
            docker_host=parsed.docker_host,
            detail=f"{engine}, runtime runsc (gVisor)",
        )
    return docker, runsc
