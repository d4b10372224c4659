"""DockerOptions: what a Docker sandbox's container looks like beyond ResourceLimits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from attrs import validators as v

from alphora.sandbox.errors import ConfigurationError
from alphora.sandbox.rules import DEFAULT_IMAGE

__all__ = ["DockerOptions"]


def _opt_str(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise ConfigurationError(f"docker.{a.name} must be a non-empty string, got {value!r}",
                                 field=f"docker.{a.name}", value=value)


def _opt_pos(_i: Any, a: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
        raise ConfigurationError(f"docker.{a.name} must be a positive number, got {value!r}",
                                 field=f"docker.{a.name}", value=value)


def _str_map(value: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(val) for k, val in (value or {}).items()}


@attrs.frozen(kw_only=True)
class DockerOptions:
    """Options of the Docker backend (``Sandbox.create_docker(..., backend_options={...})`` or the
    ``docker:`` section of a config file). Limits come from ResourceLimits, not from here."""

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
    labels: dict[str, str] = attrs.field(factory=dict, converter=_str_map)
    #: extra environment of the container (the host's is never passed through)
    environment: dict[str, str] = attrs.field(factory=dict, converter=_str_map)
    #: seconds to wait for the container and its runner to come up
    start_timeout: float = attrs.field(default=60.0, validator=_opt_pos)
    #: seconds the docker SDK waits for one engine API call
    api_timeout: float = attrs.field(default=120.0, validator=_opt_pos)
    read_only_rootfs: bool = attrs.field(default=True, validator=v.instance_of(bool))

    _ALIASES = {"docker_image": "image", "base_url": "docker_host", "env": "environment"}

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> DockerOptions:
        """Build from a plain mapping; unknown keys are an error naming the key. ``None`` values
        mean "default"."""
        fields = {a.name for a in attrs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in (options or {}).items():
            name = cls._ALIASES.get(key, key)
            if name not in fields:
                raise ConfigurationError(
                    f"unknown docker option {key!r}; known: {sorted(fields)}", field=f"docker.{key}", value=value
                )
            if value is not None:
                kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigurationError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"invalid docker options: {exc}", field="docker") from exc
