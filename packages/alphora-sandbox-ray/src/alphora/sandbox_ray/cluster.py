"""Cluster-wide view of ray sandboxes: count them and clean them up on every node.

Each sandbox actor is named ``alphora-sandbox-<id>-<random>`` in the :data:`NAMESPACE` namespace,
so any process connected to the cluster can list them (the GCS keeps the names; no dashboard
needed) and shut them down, whichever driver made them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .backend import NAMESPACE

__all__ = ["list_sandbox_actors", "shutdown_sandbox_actors"]


def list_sandbox_actors() -> list[str]:
    """Names of the live sandbox actors on the whole cluster (this process must be connected)."""
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and str(a.get("name", "")).startswith("alphora-sandbox-")
    )


async def shutdown_sandbox_actors(*, destroy: bool = False, timeout: float = 30.0) -> list[str]:
    """Stop (or destroy) the inner sandbox of every sandbox actor on the cluster, then kill the
    actor; returns the names handled. An actor that does not answer within ``timeout`` is killed
    anyway (its inner sandbox is then left to the node: see docs/cluster.md)."""
    import ray

    names = list_sandbox_actors()

    async def one(name: str) -> None:
        with contextlib.suppress(ValueError):
            actor: Any = ray.get_actor(name, namespace=NAMESPACE)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_await(actor.shutdown.remote(destroy)), timeout)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    await asyncio.gather(*(one(n) for n in names))
    return names


async def _await(ref: Any) -> Any:
    return await ref
