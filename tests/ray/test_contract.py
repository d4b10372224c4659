"""The backend contract suite through the ray backend: every primitive crosses the actor hop to a
real sandbox on another node (local inner, the light one; one isolated and one docker case in
test_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox.backend import Backend
from alphora.sandbox.testing import BackendContractTests
from alphora.sandbox_ray import RayBackend

from .conftest import RayTestCluster

pytestmark = pytest.mark.timeout(120)


class TestRayLocalContract(BackendContractTests):
    @pytest.fixture(autouse=True)
    def _cluster(self, ray_cluster: RayTestCluster) -> None:
        pass

    async def make_backend(self, workspace: Path) -> Backend:
        return RayBackend(
            f"contract-{workspace.parent.name[-12:]}".replace("_", "-"),
            workspace,
            options={"inner": "local", "resources": {"zone_a": 1}, "node_base_path": str(workspace.parent)},
        )
