"""DockerBackend passes the shared backend contract suite, on a real engine."""

from __future__ import annotations

from pathlib import Path

from alphora.sandbox import ResourceLimits
from alphora.sandbox.backend import Backend
from alphora.sandbox.testing import BackendContractTests
from alphora.sandbox_docker import DockerBackend


class TestDockerBackendContract(BackendContractTests):
    async def make_backend(self, workspace: Path) -> Backend:
        return DockerBackend(
            sandbox_id="contract",
            workspace_path=workspace,
            resource_limits=ResourceLimits(memory_mb=256),
            options={"image": "python:3.11-slim"},
        )
