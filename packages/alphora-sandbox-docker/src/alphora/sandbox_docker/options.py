"""DockerOptions: what a Docker sandbox's container looks like beyond ResourceLimits.

The Docker backend declares it as its ``options_class``, so the ``docker`` section of a
SandboxConfig (``backends.docker``, or the spec's top-level ``"docker": {...}``) and the
``SANDBOX_DOCKER_*`` variables are validated by this class through core's config converter, and
errors name the field (``$.docker.image: expected a string, got 5``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from alphora.sandbox.config import structure_options
from alphora.sandbox.rules import DEFAULT_IMAGE

__all__ = ["DockerOptions"]


def _opt_str(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise ValueError(f"{a.name} must be a non-empty string, got {value!r}")


def _opt_pos(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or value == float("inf")
    ):
        raise ValueError(f"{a.name} must be a finite positive number, got {value!r}")


def _is_bool(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{a.name} must be true or false, got {value!r}")


def _str_map(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{a.name} must map strings to strings, got {value!r}")


@attrs.frozen(kw_only=True)
class DockerOptions:
    """Options of the Docker backend (``Sandbox.create_docker(..., backend_options={...})`` or the
    ``docker`` section of a config). Limits come from ResourceLimits, not from here."""

    #: the image; must exist on the engine (``alphora-sandbox docker build`` makes the spec's images)
    image: str = attrs.field(default=DEFAULT_IMAGE, validator=_opt_str)
    #: which network when limits *and* policy enable it (None/``none``: ``bridge``); never turns it on
    #: (see :func:`alphora.sandbox.rules.network_mode`)
    network_mode: str | None = attrs.field(default=None, validator=_opt_str)
    #: engine address (``unix:///…``, ``tcp://host:2375``); None: ``DOCKER_HOST`` or the local socket
    docker_host: str | None = attrs.field(default=None, validator=_opt_str)
    #: uid:gid the code runs as (the images' ``sandbox`` user)
    user: str = attrs.field(default="1000:1000", validator=_opt_str)
    #: size of the /tmp tmpfs in MB (counts against the memory limit); None: min(disk_mb, memory_mb)
    tmp_size_mb: int | None = attrs.field(default=None, validator=_opt_pos)
    #: an OCI runtime other than the engine's default (e.g. ``runsc`` for gVisor)
    runtime: str | None = attrs.field(default=None, validator=_opt_str)
    #: extra container labels (ours are added on top)
    labels: dict[str, str] = attrs.field(factory=dict, validator=_str_map)
    #: extra environment of the container (the host's is never passed through)
    environment: dict[str, str] = attrs.field(factory=dict, validator=_str_map)
    #: seconds to wait for the container and its runner to come up
    start_timeout: float = attrs.field(default=60.0, validator=_opt_pos)
    #: seconds the docker SDK waits for one engine API call
    api_timeout: float = attrs.field(default=120.0, validator=_opt_pos)
    read_only_rootfs: bool = attrs.field(default=True, validator=_is_bool)
    #: a host directory of wheels, mounted read-only: pip's only package source (``--no-index
    #: --find-links``), so ``install_package`` works without any network (docs/egress.md)
    wheelhouse: str | None = attrs.field(default=None, validator=_opt_str)

    #: other names accepted by :meth:`from_mapping` (the original alphora's and the SDK's)
    ALIASES: ClassVar[dict[str, str]] = {"docker_image": "image", "base_url": "docker_host", "env": "environment"}

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> DockerOptions:
        """Build from a plain mapping (a backend's ``options``), through core's config converter:
        unknown keys, wrong types and validator failures are a ConfigurationError whose field is
        ``docker.<key>``. ``None`` values mean "default"; :attr:`ALIASES` are accepted."""
        plain = {cls.ALIASES.get(k, k): v for k, v in (options or {}).items() if v is not None}
        return structure_options(cls, plain, section="docker")
