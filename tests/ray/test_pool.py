"""A SandboxPool of ray sandboxes: spread over the nodes, reset in place on release, and nothing
left on any node after shutdown."""

from __future__ import annotations

import asyncio

import pytest

from alphora.sandbox.pool import SandboxPool
from alphora.sandbox_ray import RayBackend, list_sandbox_actors

from .conftest import RayTestCluster

pytestmark = pytest.mark.timeout(150)


async def test_pool_of_ray_sandboxes_spreads_resets_and_cleans_up(ray_cluster: RayTestCluster) -> None:
    before = set(list_sandbox_actors())
    pool = SandboxPool(
        "ray", size=3, backend_options={"inner": "local", "scheduling_strategy": "SPREAD", "num_cpus": 0.1}
    )
    async with pool:
        held = [await pool.get(timeout=60) for _ in range(3)]
        nodes = set()
        for i, sandbox in enumerate(held):
            assert isinstance(sandbox.backend, RayBackend)
            nodes.add(sandbox.backend.node_id)
            await sandbox.write_file("mine.txt", str(i))
            r = await sandbox.run("import subprocess; subprocess.Popen(['sleep', '300']); print('ok')")
            assert r.stdout == "ok\n", r
        assert len(nodes) >= 2, nodes  # SPREAD: not all on one node
        assert len(set(list_sandbox_actors()) - before) == 3
        first_nodes = {s.sandbox_id: s.backend.node_id for s in held}  # type: ignore[attr-defined]
        for sandbox in held:
            await pool.put(sandbox)
        await pool.settle()
        again = await pool.get(timeout=60)
        assert isinstance(again.backend, RayBackend)
        # reset in place: same actor, same node, a clean workspace
        assert again.backend.node_id == first_nodes[again.sandbox_id]
        assert [f.path for f in await again.list_files()] == []
        await pool.put(again)
    await asyncio.sleep(0)
    assert set(list_sandbox_actors()) - before == set()
