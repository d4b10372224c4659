"""What the proxy asks (an :class:`EgressRequest`), what a hook may answer (an :class:`EgressDecision`),
and what it records (an :class:`AuditRecord`)."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import attrs

__all__ = ["AuditRecord", "EgressDecision", "EgressRequest", "log_audit"]

log = logging.getLogger("alphora.sandbox.egress")

Kind = Literal["connect", "http"]


@attrs.frozen(kw_only=True)
class EgressRequest:
    """One connection (CONNECT) or one plain-HTTP request a sandbox asked the proxy for.

    ``allowed``/``rule`` are the policy's verdict before any hook ran: the allow entry that admitted
    the destination, or the reason it was refused (``"no allow entry"``)."""

    sandbox_id: str
    kind: Kind
    host: str
    port: int
    method: str = "CONNECT"
    target: str = ""  # the request target of a plain-HTTP request (absolute URI); "" for CONNECT
    allowed: bool = False
    rule: str = ""

    @property
    def destination(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # a hook's mistake fails where the hook made it (the proxy then refuses the request), not in the proxy
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535):
        raise ValueError(f"EgressDecision.port must be a number from 1 to 65535 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class EgressDecision:
    """A hook's answer: ``"allow"`` or ``"deny"``, optionally sending the request to another
    ``host``/``port`` (a rewrite). ``reason`` goes to the audit record as the rule.

    A rewritten destination is still resolved and checked by the proxy: an allow or a rewrite never
    reaches a special (private, loopback, link-local) address that no address entry of the policy
    names."""

    action: Literal["allow", "deny"] = attrs.field(validator=attrs.validators.in_(("allow", "deny")))
    reason: str = ""
    host: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    port: int | None = attrs.field(default=None, validator=_port_or_none)

    @classmethod
    def allow(cls, reason: str = "hook", *, host: str | None = None, port: int | None = None) -> EgressDecision:
        return cls(action="allow", reason=reason, host=host, port=port)

    @classmethod
    def deny(cls, reason: str = "hook") -> EgressDecision:
        return cls(action="deny", reason=reason)


@attrs.frozen(kw_only=True)
class AuditRecord:
    """One decision of the proxy, written when the connection or request ends (denials at once)."""

    sandbox_id: str
    kind: Kind
    destination: str  # host:port the sandbox asked for
    decision: Literal["allow", "deny"]
    rule: str  # the allow entry, "hook: <reason>", or why it was denied
    address: str = ""  # the checked address the proxy connected to ("" when it did not connect)
    method: str = ""
    target: str = ""  # the URL of an http record (plain, or inside an intercepted tunnel)
    status: int | None = None  # the HTTP status the proxy answered or relayed, when known
    bytes_up: int = 0  # sandbox -> destination
    bytes_down: int = 0  # destination -> sandbox
    intercepted: bool = False  # TLS terminated to inject credentials
    started: float = attrs.field(factory=time.time)
    duration: float = 0.0


def log_audit(record: AuditRecord) -> None:
    """The default audit sink: one INFO line per decision on the ``alphora.sandbox.egress`` logger."""
    log.info(
        "egress %s sandbox=%s %s %s rule=%r address=%s up=%d down=%d",
        record.decision,
        record.sandbox_id,
        record.kind,
        record.destination,
        record.rule,
        record.address or "-",
        record.bytes_up,
        record.bytes_down,
    )
