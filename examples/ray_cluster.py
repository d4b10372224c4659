"""Sandboxes on a Ray cluster: a three-node cluster on this machine (every address on 127.0.0.1),
sandboxes placed by resource, streaming and a session through the actor, a cluster-wide count,
and a clean shutdown.

    pip install 'alphora-sandbox[ray]'      # from a checkout: pip install ./packages/alphora-sandbox-ray
    python examples/ray_cluster.py

Against a real cluster, drop the Cluster part and set RAY_ADDRESS (see docs/cluster.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray's addresses on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import asyncio

import ray
from ray.cluster_utils import Cluster

from alphora.sandbox import Sandbox
from alphora.sandbox_ray import list_sandbox_actors

NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20, "include_dashboard": False}


async def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 1})
    cluster.add_node(**NODE, num_cpus=2, resources={"sandbox_light": 8})
    cluster.add_node(**NODE, num_cpus=2, resources={"sandbox_light": 8, "sandbox_docker": 4})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        boxes = [Sandbox.create("ray", inner="local", resources={"sandbox_light": 1}, num_cpus=0.5) for _ in range(3)]
        for box in boxes:
            await box.start()
        print("sandbox actors on the cluster:", len(list_sandbox_actors()))
        for box in boxes:
            r = await box.run("import os; print(os.getpid())")
            print(f"{box.sandbox_id} on node {box.backend.node_id[:12]}: pid {r.stdout.strip()}")  # type: ignore[attr-defined]

        first = boxes[0]
        async for item in first.stream(
            "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)"
        ):
            print("  stream:", item)
        async with first.session() as py:
            await py.run("total = sum(range(10))")
            print("  session:", (await py.run("total * 2")).value)

        for box in boxes:
            await box.destroy()
        print("sandbox actors after destroy:", len(list_sandbox_actors()))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
