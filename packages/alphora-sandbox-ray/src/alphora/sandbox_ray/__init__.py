"""alphora-sandbox-ray: sandboxes as Ray actors across a cluster (the ``ray`` backend).

``Sandbox.create("ray", inner="docker" | "isolated" | "local", ...)`` places the sandbox on a
cluster node; see docs/cluster.md."""

from __future__ import annotations

from .backend import NAMESPACE, RayBackend, RaySession, SandboxNodeLostError
from .cluster import list_sandbox_actors, shutdown_sandbox_actors
from .options import RayOptions

__all__ = [
    "NAMESPACE",
    "RayBackend",
    "RayOptions",
    "RaySession",
    "SandboxNodeLostError",
    "list_sandbox_actors",
    "shutdown_sandbox_actors",
]
