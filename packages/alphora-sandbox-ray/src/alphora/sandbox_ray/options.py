"""RayOptions: where and how a ray sandbox's actor runs, and what it owns on its node.

The Ray backend declares it as its ``options_class``: ``Sandbox.create("ray", inner="docker",
num_cpus=1)``, ``backend_options={...}``, the ``ray`` section of a config and ``SANDBOX_RAY_*``
variables are all validated by it (errors name the field: ``ray.num_cpus``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from alphora.sandbox.config import structure_options

__all__ = ["RayOptions"]


def _pos(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf")
    ):
        raise ValueError(f"{a.name} must be a finite positive number, got {value!r}")


def _nonneg(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf")
    ):
        raise ValueError(f"{a.name} must be a finite number >= 0, got {value!r}")


def _name(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{a.name} must be a backend name like 'local', 'isolated' or 'docker', got {value!r}")
    if value.strip().lower() == "ray":
        raise ValueError(f"{a.name} cannot be 'ray' (a ray sandbox owns a sandbox on its node, not another actor)")


def _resources(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ValueError(f"{a.name} must map resource names to amounts >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class RayOptions:
    """Options of the ray backend. Limits (timeout, memory, CPU of the *code*) come from
    ResourceLimits and apply to the inner sandbox; the fields here are about the actor."""

    #: the backend of the sandbox the actor owns on its node: ``local``, ``isolated``, ``docker`` or
    #: any backend registered on the node
    inner: str = attrs.field(default="local", validator=_name)
    #: the inner backend's own options (``{"image": "python:3.11-slim"}`` for docker)
    inner_options: dict[str, Any] = attrs.field(factory=dict)
    #: cluster address for ``ray.init`` when this process is not connected yet; None: Ray's usual
    #: lookup (``RAY_ADDRESS``, then a running local cluster, else a new local Ray)
    address: str | None = None
    #: CPUs the actor reserves (Ray's ``num_cpus``); None: Ray's default for actors
    num_cpus: float | None = attrs.field(default=None, validator=_nonneg)
    #: bytes of memory the actor reserves for scheduling (Ray's ``memory``)
    memory: int | None = attrs.field(default=None, validator=_pos)
    #: custom resources the actor needs, e.g. ``{"sandbox_docker": 1}``
    resources: dict[str, float] = attrs.field(factory=dict, validator=_resources)
    #: Ray's ``scheduling_strategy``: ``"SPREAD"``, ``"DEFAULT"`` or a strategy object
    #: (``PlacementGroupSchedulingStrategy``, ``NodeAffinitySchedulingStrategy`` …)
    scheduling_strategy: Any = None
    #: place the actor on exactly this node (a hex node id); shorthand for a hard node affinity
    node_id: str | None = None
    #: anything else Ray's ``.options()`` takes for the actor (``runtime_env``, ``label_selector`` …)
    actor_options: dict[str, Any] = attrs.field(factory=dict)
    #: parent directory of workspaces on the node; None: the node's default sandbox home
    #: (``$ALPHORA_SANDBOX_HOME`` or the XDG data dir there) plus ``ray/<node id>``
    node_base_path: str | None = None
    #: seconds a call that is not a run may take before it fails (the actor or its node is gone)
    call_timeout: float = attrs.field(default=60.0, validator=_pos)
    #: extra seconds a run may take beyond its own timeout before the call fails
    run_slack: float = attrs.field(default=30.0, validator=_pos)
    #: seconds to place the actor and start the inner sandbox (includes waiting for resources)
    start_timeout: float = attrs.field(default=120.0, validator=_pos)
    #: workspace persistence: a ``StorageConfig`` (or its mapping) reachable from every node; the
    #: actor restores the workspace from it when it starts and saves it after calls
    storage: Any = None
    #: key prefix of this sandbox's workspace in the storage; None: ``ray-sandboxes/<sandbox id>``
    storage_prefix: str | None = None
    #: with a storage: save the workspace after every call that may change it (else only on
    #: ``stop()`` and ``checkpoint()``)
    checkpoint_every_call: bool = True
    #: with a storage: when the actor's node dies, re-create the sandbox on another node with the
    #: last saved workspace (the failing call still raises SandboxNodeLostError)
    recover: bool = False

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> RayOptions:
        """Build from a plain mapping (a backend's ``options``): unknown keys, wrong types and
        validator failures are a ConfigurationError naming ``ray.<key>``; None means default."""
        plain = {k: v for k, v in (options or {}).items() if v is not None}
        return structure_options(cls, plain, section="ray")
