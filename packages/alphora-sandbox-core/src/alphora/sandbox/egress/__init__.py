"""Network egress by policy: the allowlist, the proxy that enforces it outside the sandbox, the
decision hook's request/answer types and the audit record. See ``docs/egress.md``.

::

    policy = EgressPolicy(allow=["pkgs.example.org", "*.example.com:443", "10.1.2.0/24"])
    async with EgressProxy(policy, sandbox_id="sb-1") as proxy:   # listens on 127.0.0.1, a free port
        ...  # point the sandbox's HTTP(S)_PROXY at proxy.url
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .decision import AuditRecord, EgressDecision, EgressRequest, log_audit
from .policy import AllowRule, EgressPolicy, is_special_address, normalize_host

if TYPE_CHECKING:
    from .proxy import Connector, EgressProxy, Resolver, default_resolver

#: the proxy (asyncio, h11, ssl) loads on first use: SecurityPolicy needs only the policy model
_PROXY_NAMES = frozenset({"Connector", "EgressProxy", "Resolver", "default_resolver"})


def __getattr__(name: str) -> Any:
    if name in _PROXY_NAMES:
        value = getattr(importlib.import_module(".proxy", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AllowRule",
    "AuditRecord",
    "Connector",
    "EgressDecision",
    "EgressPolicy",
    "EgressProxy",
    "EgressRequest",
    "Resolver",
    "default_resolver",
    "is_special_address",
    "log_audit",
    "normalize_host",
]
