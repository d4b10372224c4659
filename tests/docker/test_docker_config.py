"""The spec's configuration examples that name the Docker backend, run for real (on the images the spec
names: python:3.11-slim and python:3.11, see the ``spec_images`` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphora.sandbox import DockerBackend, Sandbox, SandboxConfig, config_from_env, config_from_file

SPEC_SANDBOX_JSON = {
    "base_path": "/data/sandboxes",
    "backend_type": "docker",
    "resource_limits": {"timeout_seconds": 300, "memory_mb": 512, "cpu_cores": 1.0, "network_enabled": False},
    "security_policy": {"allow_shell": True, "allow_network": False},
    "docker": {"image": "python:3.11-slim", "network_mode": "none"},
}


async def _python_version(sandbox: Sandbox) -> str:
    async with sandbox:
        assert isinstance(sandbox.backend, DockerBackend)
        result = await sandbox.run("import sys; print(sys.version_info[:2])")
        await sandbox.destroy()
    return result.stdout.strip()


@pytest.mark.usefixtures("spec_images")
async def test_spec_sandbox_json(tmp_path: Path) -> None:
    # base_path names a directory this test cannot create: the docker backend never touches it
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps(SPEC_SANDBOX_JSON), encoding="utf-8")
    config = config_from_file(str(path))
    sandbox = Sandbox.from_config(config)
    assert sandbox.backend.resource_limits.memory_mb == 512
    assert await _python_version(sandbox) == "(3, 11)"


@pytest.mark.usefixtures("spec_images")
async def test_spec_env_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in {
        "SANDBOX_BASE_PATH": str(tmp_path),
        "SANDBOX_BACKEND": "docker",
        "SANDBOX_DOCKER_IMAGE": "python:3.11",
        "SANDBOX_TIMEOUT": "60",
        "SANDBOX_MEMORY_MB": "512",
    }.items():
        monkeypatch.setenv(key, value)
    config = config_from_env()
    sandbox = Sandbox.from_config(config)
    assert isinstance(sandbox.backend, DockerBackend)
    assert sandbox.backend.image == "python:3.11"
    assert await _python_version(sandbox) == "(3, 11)"


@pytest.mark.usefixtures("spec_images")
async def test_spec_factory_config_with_network(tmp_path: Path) -> None:
    config = SandboxConfig.docker(image="python:3.11", network_enabled=True)
    sandbox = Sandbox.from_config(config, base_path=tmp_path)
    assert isinstance(sandbox.backend, DockerBackend)
    assert sandbox.backend.network_enabled
    assert await _python_version(sandbox) == "(3, 11)"
