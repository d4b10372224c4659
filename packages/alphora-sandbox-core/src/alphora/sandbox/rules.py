"""The cross-cutting rules, each written once; every layer that needs one calls it from here.

* :func:`network_access` — what network a sandbox gets: none, egress through the proxy only (an
  egress policy is set), or unrestricted (both switches on). Config, CLI, Docker, isolated, local,
  MCP and doctor all ask this one function (or :func:`network_allowed`, its "unrestricted" answer).
* :func:`network_mode` — the container network mode that follows from it (fails closed).
* :func:`validate_sandbox_id` — what a sandbox id may look like (facade and config).
* :func:`resolve_timeout` — a call's timeout: validated, defaulted from the limits (``run()``,
  sessions, the agent tools).
* :data:`DEFAULT_IMAGE` — the Docker image a sandbox uses when none is named (the spec's).
* :func:`is_loopback_host` — whether a host name or address is this machine's loopback (MCP over
  HTTP without auth, a local Docker engine for egress).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .types import ResourceLimits, SecurityPolicy

__all__ = [
    "DEFAULT_IMAGE",
    "MAX_SANDBOX_ID_LENGTH",
    "NetworkAccess",
    "is_loopback_host",
    "name_key",
    "network_access",
    "network_allowed",
    "network_mode",
    "resolve_timeout",
    "sandbox_id_problem",
    "validate_sandbox_id",
]

#: the image of ``Sandbox.create_docker()`` and ``SandboxConfig.docker()`` when none is named
DEFAULT_IMAGE = "python:3.11-slim"

#: sandbox ids name directories, containers and volumes: keep them short and plain
MAX_SANDBOX_ID_LENGTH = 64
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); any other name is not (it is
    not resolved: a name that resolves to loopback today may not tomorrow)."""
    host = host.strip().lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def name_key(value: Any) -> str:
    """The registry key of a backend, storage or exporter name: an enum member's value or a string,
    stripped and lower-cased (``BackendType.DOCKER``, ``"Docker "`` and ``"docker"`` are one key)."""
    return str(getattr(value, "value", value)).strip().lower()


#: what network a sandbox gets (see :func:`network_access`)
NetworkAccess = Literal["none", "egress", "open"]


def network_access(limits: ResourceLimits, policy: SecurityPolicy) -> NetworkAccess:
    """What network a sandbox gets, the one rule:

    * ``"egress"`` when ``SecurityPolicy.egress`` is set: no network of its own, only loopback and
      the library's egress proxy, which allows what the policy allows (default deny);
    * ``"open"`` (unrestricted) when ``ResourceLimits.network_enabled`` *and*
      ``SecurityPolicy.allow_network`` are both true and no egress policy is set;
    * ``"none"`` otherwise (half-enabled fails closed).

    An egress policy together with both switches on is a contradiction (an allowlist and the whole
    network): :class:`ConfigurationError` naming both, never a silent choice."""
    unrestricted = bool(limits.network_enabled and policy.allow_network)
    if policy.egress is not None:
        if unrestricted:
            raise ConfigurationError(
                "security_policy.egress limits the network to an allowlist, but resource_limits.network_enabled "
                "and security_policy.allow_network are both true (the whole network): turn one of those off to "
                "use the allowlist, or drop the egress policy for unrestricted access",
                field="security_policy.egress",
            )
        return "egress"
    return "open" if unrestricted else "none"


def network_allowed(limits: ResourceLimits, policy: SecurityPolicy) -> bool:
    """True when the sandbox has an *unrestricted* network: ``ResourceLimits.network_enabled``
    *and* ``SecurityPolicy.allow_network`` are both true and no egress policy is set (see
    :func:`network_access`). Half-enabled fails closed."""
    return network_access(limits, policy) == "open"


def network_mode(limits: ResourceLimits, policy: SecurityPolicy, requested: str | None = None) -> str:
    """The container network mode: ``"none"`` unless :func:`network_allowed` (with an egress policy
    too: its only way out is the proxy's socket, see docs/egress.md); then ``requested``
    (a Docker network name or mode), with ``None``/``"none"`` meaning the default ``"bridge"``.

    A requested mode only chooses *which* network; it can never turn the network on."""
    if not network_allowed(limits, policy):
        return "none"
    if requested is None or requested == "none":
        return "bridge"
    return requested


def sandbox_id_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid sandbox id, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_SANDBOX_ID_LENGTH:
        return f"must be at most {MAX_SANDBOX_ID_LENGTH} characters, got {len(value)}"
    if not _SANDBOX_ID.match(value):
        return "may contain ASCII letters, digits, '-' and '_' only"
    return None


def validate_sandbox_id(value: Any, *, field: str = "sandbox_id") -> str:
    """``value`` when it is a valid sandbox id, else :class:`ConfigurationError` naming the field."""
    problem = sandbox_id_problem(value)
    if problem is not None:
        raise ConfigurationError(f"invalid {field} {value!r}: {problem}", field=field, value=value)
    return str(value)


def resolve_timeout(timeout: Any, limits: ResourceLimits, *, field: str = "timeout") -> float:
    """A call's timeout in seconds: ``timeout`` when it is a finite positive number, the sandbox's
    ``limits.timeout_seconds`` when it is None; anything else (a string, a bool, NaN, infinity,
    zero or less) is a :class:`ConfigurationError`."""
    if timeout is None:
        return float(limits.timeout_seconds)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(f"{field} must be a number of seconds, got {timeout!r}", field=field, value=timeout)
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigurationError(
            f"{field} must be a finite positive number of seconds, got {timeout!r}", field=field, value=timeout
        )
    return float(timeout)
