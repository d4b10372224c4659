"""One real multi-node Ray cluster per test session, every address on 127.0.0.1.

The nodes are separate raylets on this machine (``ray.cluster_utils.Cluster``), each with its own
custom resources, so placement is real Ray scheduling:

* ``head``: 1 CPU, resource ``head``; nothing of ours is placed there unless a test asks;
* ``node_a``: 2 CPUs, ``zone_a``; ``node_b``: 2 CPUs, ``zone_b`` and ``sandbox_docker``
  (the docker case asks for ``{"sandbox_docker": 1}``).

Loopback only: Ray resolves ``127.0.0.1``/``localhost`` in a cluster address to this machine's
interface address (``services.resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
— then ``get_node_ip_address()`` answers 127.0.0.1 — and every node gets ``node_ip_address=127.0.0.1``
with the dashboard off and usage stats off (no connection leaves the machine).
``test_cluster.py::test_every_ray_socket_is_on_loopback`` checks every socket of the Ray processes.

Without ray installed the tests are skipped with the reason, except under ``CI`` where it fails.
"""

from __future__ import annotations

import os

# before ray is imported anywhere: these are read at import time
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    pytest.skip(f"ray is not installed ({exc}): pip install alphora-sandbox[ray]", allow_module_level=True)

LOOPBACK = "127.0.0.1"
#: small nodes: object store at its minimum, no dashboard, health checks quick so a dead node is
#: noticed in seconds (the default needs ~30 s)
NODE: dict[str, Any] = {
    "node_ip_address": LOOPBACK,
    "object_store_memory": 80 * 1024 * 1024,
    "include_dashboard": False,
}
HEAD_SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}


@attrs.frozen
class RayTestCluster:
    """The session's cluster and its nodes by our name (``head``, ``node_a``, ``node_b``: node ids in hex)."""

    cluster: Cluster
    nodes: dict[str, str]

    @property
    def address(self) -> str:
        return str(self.cluster.address)


@pytest.fixture(scope="session")
def ray_cluster(_sandbox_home: Path) -> Iterator[RayTestCluster]:
    """The session's cluster; the test process is its driver."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "num_cpus": 1, "resources": {"head": 1}, "_system_config": HEAD_SYSTEM_CONFIG},
    )
    try:
        node_a = cluster.add_node(**NODE, num_cpus=2, resources={"zone_a": 100})
        node_b = cluster.add_node(**NODE, num_cpus=2, resources={"zone_b": 100, "sandbox_docker": 1})
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        nodes = {"head": cluster.head_node.node_id, "node_a": node_a.node_id, "node_b": node_b.node_id}
        yield RayTestCluster(cluster, nodes)
    finally:
        ray.shutdown()
        cluster.shutdown()
