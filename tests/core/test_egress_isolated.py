"""Egress in the isolated tier: the sandbox has loopback only; the host proxy is its one way out.

Real clients inside a real bubblewrap sandbox, loopback servers on the host (tests/_support/egress_tiers.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from alphora.sandbox import Sandbox, SecurityPolicy
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from alphora.sandbox.egress import EgressDecision, EgressPolicy, EgressRequest
from alphora.sandbox.plugins import PluginRegistry, hookimpl, make_plugin_manager

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

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must provide bubblewrap (bwrap): .ci/run installs it")
    pytest.skip("bubblewrap (bwrap) is not installed: apt install bubblewrap", allow_module_level=True)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with loopback_servers(tmp_path_factory.mktemp("tls")) as made:
        yield made


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    sb = Sandbox.create("isolated", base_path=tmp_path_factory.mktemp("egress-iso"), security_policy=servers.policy())
    sb.backend.egress_proxy_options.update(servers.proxy_options())
    async with sb:
        yield sb


async def test_allow_deny_matrix(sandbox: Sandbox, servers: Servers) -> None:
    await install_requests(sandbox, servers)  # a real third-party client, installed through the proxy
    result = await sandbox.run(probe_code(servers), timeout=90)
    assert result.success, result.stderr
    probe = read_json(result.stdout)
    print("\n".join(matrix_rows("isolated", probe)))
    # the host's /usr is bound in: curl runs in the sandbox when the host has it
    check_probe(probe, servers, required=("urllib", "requests", *(("curl",) if shutil.which("curl") else ())))


async def test_pip_installs_from_the_allowed_index_only(sandbox: Sandbox, servers: Servers) -> None:
    await sandbox.set_env("PIP_INDEX_URL", servers.url(servers.denied_index, "/simple/"))
    refused = await sandbox.install_package(PROBE_DIST)
    assert not refused.success
    # pip logs the proxy's 403 for the index page at debug level only: what it says is "none found"
    assert "No matching distribution found" in refused.stderr, refused.stderr[-2000:]
    assert not servers.denied_index.seen, "the proxy let pip reach the index that is not allowed"

    await sandbox.set_env("PIP_INDEX_URL", servers.url(servers.index, "/simple/"))
    installed = await sandbox.install_package(PROBE_DIST)
    assert installed.success, installed.stderr[-2000:]
    r = await sandbox.run(f"import {PROBE_DIST}; print({PROBE_DIST}.VERSION)")
    assert r.stdout == f"{PROBE_VERSION}\n", r.stderr
    assert any(s["path"].startswith("/files/") for s in servers.index.seen)


async def test_the_proxy_lives_and_dies_with_the_sandbox(servers: Servers, tmp_path: Path) -> None:
    policy = SecurityPolicy(egress=EgressPolicy(allow=servers.allow_entries()))
    sb = Sandbox.create("isolated", base_path=tmp_path, security_policy=policy)
    await sb.start()
    bridge = sb.backend.egress  # type: ignore[attr-defined]
    host_dir = bridge.host_dir
    assert (host_dir / "proxy.sock").is_socket()
    assert oct(host_dir.stat().st_mode & 0o777) == "0o700"
    await sb.destroy()
    assert not host_dir.exists()


async def test_credentials_are_injected_outside_and_absent_inside(sandbox: Sandbox, servers: Servers) -> None:
    await check_credentials_stay_outside(sandbox, servers, "isolated")


class _Decider:
    """A sandbox_egress_decide plugin: denies one path of an allowed server, records every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def sandbox_egress_decide(self, request: EgressRequest) -> EgressDecision | None:
        self.seen.append((request.sandbox_id, request.target))
        return EgressDecision.deny("budget spent") if request.target.endswith("/expensive") else None


async def test_the_sandboxs_registry_decides(servers: Servers, tmp_path: Path) -> None:
    decider = _Decider()
    registry = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[decider]))
    policy = SecurityPolicy(egress=EgressPolicy(allow=servers.allow_entries()))
    sb = Sandbox.create("isolated", base_path=tmp_path, security_policy=policy, registry=registry)
    code = (
        "import urllib.request, urllib.error\n"
        "for path in ('/cheap', '/expensive'):\n"
        "    try:\n"
        f"        print(urllib.request.urlopen('{servers.url(servers.allowed, '')}' + path, timeout=15).status)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(e.code)\n"
    )
    async with sb:
        result = await sb.run(code)
    assert result.stdout.split() == ["200", "403"], result.stderr
    assert [target.rsplit("/", 1)[-1] for _sid, target in decider.seen] == ["cheap", "expensive"]
    assert {sid for sid, _t in decider.seen} == {sb.sandbox_id}


async def test_a_wheelhouse_installs_packages_with_no_network(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"{PROBE_DIST}-{PROBE_VERSION}-py3-none-any.whl").write_bytes(wheel(PROBE_DIST, PROBE_VERSION))
    sb = Sandbox.create("isolated", base_path=tmp_path / "ws", backend_options={"wheelhouse": str(wheels)})
    async with sb:
        await sb.set_env("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # ignored: the wheelhouse is the only source
        installed = await sb.install_package(PROBE_DIST)
        assert installed.success, installed.stderr[-2000:]
        r = await sb.run(
            f"import {PROBE_DIST}; print({PROBE_DIST}.VERSION)\n"
            "try:\n    open('/run/alphora-sandbox/wheels/x', 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
        )
        assert r.stdout.splitlines() == [PROBE_VERSION, "Read-only file system"], r.stderr


CRASH = """
import asyncio, os, sys
from alphora.sandbox import EgressPolicy, Sandbox, SecurityPolicy

async def main():
    policy = SecurityPolicy(egress=EgressPolicy(allow=["127.0.0.1:9"]))
    sb = Sandbox.create("isolated", base_path=sys.argv[1], security_policy=policy)
    await sb.start()
    print(sb.backend.egress.socket_path, flush=True)
    os._exit(1)  # the host process dies without stop()

asyncio.run(main())
"""


async def test_a_crash_leaves_a_dead_socket_file_and_nothing_running(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CRASH, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    sock_path = Path(out.stdout.strip())
    assert sock_path.name == "proxy.sock", out.stderr
    try:
        assert sock_path.is_socket()  # left behind: a file in a private temp directory ...
        probe = socket.socket(socket.AF_UNIX)
        with pytest.raises(ConnectionRefusedError):  # ... that nothing listens on
            probe.connect(str(sock_path))
        probe.close()
        # and no process of that sandbox outlives its host (bubblewrap's --die-with-parent; give the
        # kernel a moment to take the namespace down)
        deadline = time.monotonic() + 20
        while True:
            ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False).stdout
            left = [line for line in ps.splitlines() if str(tmp_path) in line]
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert left == []
    finally:
        shutil.rmtree(sock_path.parent, ignore_errors=True)
