"""Egress in the Docker tier: network mode "none", the host proxy's socket bound in, nothing else.

Real clients inside real containers (the foreign image and ours), loopback servers on the host
(tests/_support/egress_tiers.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import ResourceLimits, Sandbox, SecurityPolicy
from alphora.sandbox.egress import EgressPolicy
from alphora.sandbox.errors import DockerError

from .._support.egress_tiers import (
    PROBE_DIST,
    PROBE_VERSION,
    Servers,
    check_credentials_stay_outside,
    check_probe,
    install_requests,
    loopback_servers,
    matrix_rows,
    probe_code,
    read_json,
)
from .._support.packages import wheel
from .conftest import IMAGE_PARAMS, RUNSC, RUNSC_EGRESS, require_image, require_runtime

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with loopback_servers(tmp_path_factory.mktemp("tls")) as made:
        yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=IMAGE_PARAMS)
async def sandbox(
    request: pytest.FixtureRequest, servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Sandbox]:
    sb = Sandbox.create_docker(
        base_path=tmp_path_factory.mktemp("egress-docker"),
        docker_image=require_image(request.param),
        resource_limits=ResourceLimits(timeout_seconds=60, memory_mb=256),
        security_policy=servers.policy(),
    )
    sb.backend.egress_proxy_options.update(servers.proxy_options())
    await sb.start()
    try:
        yield sb
    finally:
        await sb.destroy()


async def test_allow_deny_matrix(sandbox: Sandbox, servers: Servers, docker_client: Any) -> None:
    info = docker_client.api.inspect_container(sandbox.backend.container_name)  # type: ignore[attr-defined]
    assert info["HostConfig"]["NetworkMode"] == "none"
    await install_requests(sandbox, servers)  # a real third-party client, installed through the proxy
    result = await sandbox.run(probe_code(servers), timeout=90)
    assert result.success, result.stderr
    probe = read_json(result.stdout)
    print("\n".join(matrix_rows(f"docker/{sandbox.backend.image}", probe)))  # type: ignore[attr-defined]
    check_probe(probe, servers)


async def test_pip_installs_from_the_allowed_index_only(sandbox: Sandbox, servers: Servers) -> None:
    servers.denied_index.seen.clear()
    await sandbox.set_env("PIP_INDEX_URL", servers.url(servers.denied_index, "/simple/"))
    refused = await sandbox.install_package(PROBE_DIST)
    assert not refused.success
    assert "No matching distribution found" in refused.stderr, refused.stderr[-2000:]
    assert not servers.denied_index.seen, "the proxy let pip reach the index that is not allowed"

    await sandbox.set_env("PIP_INDEX_URL", servers.url(servers.index, "/simple/"))
    installed = await sandbox.install_package(PROBE_DIST)
    assert installed.success, installed.stderr[-2000:]
    r = await sandbox.run(f"import {PROBE_DIST}; print({PROBE_DIST}.VERSION)")
    assert r.stdout == f"{PROBE_VERSION}\n", r.stderr


async def test_runsc_without_host_uds_is_refused_with_the_fix(servers: Servers, tmp_path_factory: Any) -> None:
    require_runtime(RUNSC)
    sb = Sandbox.create_docker(
        base_path=tmp_path_factory.mktemp("egress-runsc"),
        docker_image=require_image("alphora/sandbox:base", foreign=False),
        runtime=RUNSC,
        security_policy=SecurityPolicy(egress=EgressPolicy(allow=servers.allow_entries())),
    )
    with pytest.raises(DockerError, match="--host-uds=open"):
        await sb.start()
    await sb.destroy()


async def test_runsc_egress_runtime_enforces_the_policy_under_gvisor(
    servers: Servers, tmp_path_factory: Any, docker_client: Any
) -> None:
    """The "runsc-egress" runtime (runsc with --host-uds=open, registered by .ci/docker-setup.sh): the
    proxy's socket is reachable under gVisor, and the same matrix holds (urllib; requests is not
    installed here, to keep gVisor's slow pip out of the suite)."""
    require_runtime(RUNSC_EGRESS)
    sb = Sandbox.create_docker(
        base_path=tmp_path_factory.mktemp("egress-runsc-hostuds"),
        docker_image=require_image("alphora/sandbox:base", foreign=False),
        runtime=RUNSC_EGRESS,
        resource_limits=ResourceLimits(timeout_seconds=60, memory_mb=256),
        security_policy=servers.policy(),
    )
    sb.backend.egress_proxy_options.update(servers.proxy_options())
    await sb.start()
    try:
        info = docker_client.api.inspect_container(sb.backend.container_name)  # type: ignore[attr-defined]
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert info["HostConfig"]["Runtime"] == RUNSC_EGRESS
        result = await sb.run(probe_code(servers), timeout=90)
        assert result.success, result.stderr
        probe = read_json(result.stdout)
        print("\n".join(matrix_rows(f"docker+{RUNSC_EGRESS}", probe)))
        check_probe(probe, servers, required=("urllib",))
    finally:
        await sb.destroy()


async def test_credentials_are_injected_outside_and_absent_inside(sandbox: Sandbox, servers: Servers) -> None:
    await check_credentials_stay_outside(sandbox, servers, "docker")


@pytest.mark.usefixtures("spec_images")
async def test_the_example_runs_as_documented() -> None:
    root = Path(__file__).resolve().parents[2]
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "examples/egress_allowlist.py", "docker"],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=root,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "with X-Api-Key='sk-example-0123456789'" in out.stdout
    assert "allowed -> 200 hello from the allowed server" in out.stdout
    assert "other -> 403 refused by the egress proxy" in out.stdout
    assert "interfaces -> ['lo']" in out.stdout
    assert "API key in the sandbox's environment -> False" in out.stdout


async def test_a_wheelhouse_installs_packages_with_no_network(foreign_image: str, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"{PROBE_DIST}-{PROBE_VERSION}-py3-none-any.whl").write_bytes(wheel(PROBE_DIST, PROBE_VERSION))
    wheels.chmod(0o755)
    sb = Sandbox.create_docker(
        base_path=tmp_path / "ws", docker_image=foreign_image, backend_options={"wheelhouse": str(wheels)}
    )
    async with sb:
        installed = await sb.install_package(PROBE_DIST)
        assert installed.success, installed.stderr[-2000:]
        r = await sb.run(
            f"import {PROBE_DIST}; print({PROBE_DIST}.VERSION)\n"
            "try:\n    open('/run/alphora-sandbox/wheels/x', 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
        )
        assert r.stdout.splitlines() == [PROBE_VERSION, "Read-only file system"], r.stderr
