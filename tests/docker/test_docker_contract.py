"""DockerBackend passes the shared backend contract suite, on a real engine, on a foreign image (one this
project did not build: no sandbox user, no /workspace) and on ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits
from alphora.sandbox.backend import Backend
from alphora.sandbox.testing import BackendContractTests
from alphora.sandbox_docker import DockerBackend


class TestDockerBackendContract(BackendContractTests):
    image = ""

    @pytest.fixture(autouse=True)
    def _on_image(self, image: str) -> None:
        # ``image`` is parametrized by conftest: every contract test runs on both images
        self.image = image

    async def make_backend(self, workspace: Path) -> Backend:
        return DockerBackend(
            sandbox_id="contract",
            workspace_path=workspace,
            resource_limits=ResourceLimits(memory_mb=256),
            options={"image": self.image},
        )
