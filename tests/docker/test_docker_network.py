"""Network egress: off by default (not even the host is reachable), on when enabled (on a foreign image and
on ours); pip inside."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import ResourceLimits, Sandbox, SandboxConfig, SecurityPolicy

CONNECT = """
import socket, sys
try:
    s = socket.create_connection(({host!r}, {port}), timeout=3)
    print("connected", s.recv(100).decode().strip())
except OSError as exc:
    print("refused", type(exc).__name__, exc)
"""


@pytest_asyncio.fixture
async def host_server(docker_client: Any) -> AsyncIterator[tuple[str, int]]:
    """A TCP server on the host's side of the docker bridge (never an outside address)."""
    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello-from-host\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, gateway, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield gateway, port
    finally:
        server.close()
        await server.wait_closed()


async def test_no_network_by_default(tmp_path: Path, image: str, host_server: tuple[str, int]) -> None:
    host, port = host_server
    async with Sandbox.create_docker(base_path=tmp_path, docker_image=image) as sandbox:
        result = await sandbox.run(CONNECT.format(host=host, port=port))
        assert result.stdout.startswith("refused"), result.stdout
        dns = await sandbox.run(
            "import socket\ntry:\n    socket.getaddrinfo('localhost', 80); print('ok')\n"
            "except OSError as e:\n    print('err', e)"
        )
        assert dns.success
        await sandbox.destroy()


async def test_network_enabled_reaches_the_host_server(
    tmp_path: Path, image: str, host_server: tuple[str, int]
) -> None:
    host, port = host_server
    sandbox = Sandbox.create_docker(
        base_path=tmp_path,
        docker_image=image,
        resource_limits=ResourceLimits(network_enabled=True),
        security_policy=SecurityPolicy(allow_network=True),
    )
    async with sandbox:
        result = await sandbox.run(CONNECT.format(host=host, port=port))
        assert result.stdout.strip() == "connected hello-from-host", result
        await sandbox.destroy()


async def test_half_enabled_network_fails_closed(tmp_path: Path, image: str, host_server: tuple[str, int]) -> None:
    host, port = host_server
    sandbox = Sandbox.create_docker(
        base_path=tmp_path, docker_image=image, resource_limits=ResourceLimits(network_enabled=True)
    )
    async with sandbox:
        result = await sandbox.run(CONNECT.format(host=host, port=port))
        assert result.stdout.startswith("refused"), result.stdout
        await sandbox.destroy()


async def test_config_network_mode_none_wins(tmp_path: Path, image: str, host_server: tuple[str, int]) -> None:
    host, port = host_server
    config = SandboxConfig.docker(path=str(tmp_path), image=image)
    sandbox = Sandbox.from_config(config, resource_limits=ResourceLimits(network_enabled=True))
    async with sandbox:
        result = await sandbox.run(CONNECT.format(host=host, port=port))
        assert result.stdout.startswith("refused"), result.stdout
        await sandbox.destroy()


@pytest.mark.network
async def test_install_package_inside_the_container(tmp_path: Path, our_image: str) -> None:
    # the spec's SandboxConfig.docker(..., network_enabled=True). Needs our image: pip reaches the index
    # through this host's TLS-intercepting proxy only with the CA bundle our builder bakes in (pip --user
    # on a foreign image is tested offline in test_docker_sandbox.py)
    config = SandboxConfig.docker(path=str(tmp_path), image=our_image, network_enabled=True)
    sandbox = Sandbox.from_config(
        config,
        security_policy=SecurityPolicy(allow_network=True),
        resource_limits=ResourceLimits(network_enabled=True, timeout_seconds=240),
    )
    async with sandbox:
        assert not await sandbox.package_installed("six")
        result = await sandbox.install_package("six")
        assert result.success, result.stderr[-2000:]
        assert await sandbox.package_installed("six")
        used = await sandbox.run("import six, sys; print(six.__file__.startswith('/home/sandbox/.local'))")
        assert used.stdout == "True\n", used
        removed = await sandbox.uninstall_package("six")
        assert removed.success, removed.stderr
        assert not await sandbox.package_installed("six")
        await sandbox.destroy()
