"""The egress policy: which destinations a sandbox may reach, and which headers the proxy adds.

An allow entry is one of

* a host name, ``pkgs.example.org``, optionally with a port, ``pkgs.example.org:443``;
* a wildcard host, ``*.example.com`` (any name *below* example.com, not example.com itself),
  optionally with a port;
* an IP address or CIDR, ``10.1.2.3``, ``10.1.2.0/24``, ``::1``, optionally with a port
  (``127.0.0.1:8080``, ``[::1]:8080``, ``[fd00::/8]:443``, ``10.1.2.0/24:443``).

Names are matched against the name the client asked for; addresses against the address the proxy
will connect to. A special address (private, loopback, link-local such as the 169.254.169.254
metadata service, shared, reserved, multicast, unspecified) is reachable only when an *address*
entry covers it: a name entry never admits one, so a name that resolves (or re-resolves, DNS
rebinding) to an internal address is refused.
"""

from __future__ import annotations

import ipaddress
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..errors import ConfigurationError

__all__ = ["AllowRule", "EgressPolicy", "is_special_address", "normalize_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
#: RFC 7230 token characters: what a header name may contain
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: headers the proxy owns; a credential may not set them
_FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "proxy-authorization"}
)


def normalize_host(host: str) -> str:
    """A host name as the policy compares it: lower case, no trailing dot, IDNA-encoded (``bücher.de`` ->
    ``xn--bcher-kva.de``); an IP address in its canonical form. ValueError when it is not a valid host."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.rstrip(".").lower()
    if not name:
        raise ValueError("empty host name")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid host name ({exc})") from None
    if len(name) > 253:
        raise ValueError("host name longer than 253 characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"invalid label {label!r} (letters, digits, '-' and '_' only, 1-63 characters)")
    return name


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
    return None


def is_special_address(ip: IPAddress) -> bool:
    """True for every address that is not plainly public: private, loopback, link-local (the cloud
    metadata service 169.254.169.254), IPv6 site-local, shared (100.64/10), reserved, multicast,
    unspecified, and IPv6 addresses that embed such an IPv4 address (``::ffff:127.0.0.1``, 6to4, Teredo)."""
    embedded = _embedded_v4(ip)
    if embedded is not None and is_special_address(embedded):
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return True  # fec0::/10: deprecated, yet routed inside networks, and `is_global` calls it global
    return not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_reserved


def _parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} must be a number from 1 to 65535")
    return int(text)


@attrs.frozen
class AllowRule:
    """One parsed allow entry. ``text`` is the entry as written (it names the rule in audit records)."""

    text: str
    host: str | None = None  # exact name, or the suffix (with leading dot) of a wildcard
    wildcard: bool = False
    network: IPNetwork | None = None
    port: int | None = None  # None: any port

    @classmethod
    def parse(cls, entry: str) -> AllowRule:
        """Parse one entry; ValueError saying what is wrong with it."""
        if not isinstance(entry, str):
            raise ValueError(f"must be a string, got {type(entry).__name__}")
        text = entry.strip()
        if not text:
            raise ValueError("empty entry")
        if "://" in text:
            raise ValueError("write the host (and port) only, without a scheme or path")
        if any(c in text for c in "?#@ \t"):
            raise ValueError("write the host (and port) only, without a path, query, user or spaces")
        if text.startswith("["):
            # [v6] or [v6/len] with an optional :port
            close = text.find("]")
            if close < 0:
                raise ValueError("missing ']' after an IPv6 address")
            inner, rest = text[1:close], text[close + 1 :]
            port = None
            if rest:
                if not rest.startswith(":"):
                    raise ValueError("expected ':port' after ']'")
                port = _parse_port(rest[1:])
            return cls(text=text, network=_parse_network(inner), port=port)
        if text.count(":") >= 2:  # a bare IPv6 address or network, no port
            return cls(text=text, network=_parse_network(text))
        host, port = text, None
        if ":" in text:
            host, port_text = text.rsplit(":", 1)
            port = _parse_port(port_text)
        if _looks_like_ip(host):
            return cls(text=text, network=_parse_network(host), port=port)
        if host == "*" or (host.startswith("*.") and host.count("*") == 1):
            if host == "*":
                raise ValueError(
                    "'*' would allow every host; turn the network on without an egress policy for unrestricted access"
                )
            return cls(text=text, host="." + normalize_host(host[2:]), wildcard=True, port=port)
        if "*" in host:
            raise ValueError("a wildcard may only be the whole leftmost label ('*.example.com')")
        if "/" in host:
            raise ValueError("not an IP network nor a host name")
        return cls(text=text, host=normalize_host(host), port=port)

    def _port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_name(self, host: str, port: int) -> bool:
        """Whether this is a name entry admitting ``host`` (normalized) on ``port``."""
        if self.host is None or not self._port_ok(port):
            return False
        if self.wildcard:
            return host.endswith(self.host) and len(host) > len(self.host)
        return host == self.host

    def matches_address(self, ip: IPAddress, port: int) -> bool:
        """Whether this is an address entry covering ``ip`` on ``port``."""
        if self.network is None or not self._port_ok(port):
            return False
        if ip.version != self.network.version:
            # ::ffff:a.b.c.d is a.b.c.d (a dual-stack socket dials it over IPv4); a 6to4 or Teredo address
            # only carries an IPv4 address in its bits and is another host, reached over IPv6
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            return mapped is not None and mapped in self.network
        return ip in self.network


def _looks_like_ip(text: str) -> bool:
    head = text.split("/", 1)[0]
    try:
        ipaddress.ip_address(head)
    except ValueError:
        return bool(re.fullmatch(r"[0-9./]+", text))
    return True


def _parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            suggestion = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {suggestion}?") from None
        raise ValueError(f"not an IP address or network ({exc})") from None


def _allow_converter(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigurationError(
            "egress.allow must be a list of entries, got a single string (write [" + repr(value) + "])",
            field="egress.allow",
            value=value,
        )
    if not isinstance(value, Iterable):
        raise ConfigurationError(
            f"egress.allow must be a list of entries, got {type(value).__name__}", field="egress.allow", value=value
        )
    return tuple(value)


def _credentials_converter(value: Any) -> Mapping[str, Mapping[str, str]]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"egress.credentials must be a mapping of host to headers, got {type(value).__name__}",
            field="egress.credentials",
            value="<redacted>",
        )
    out: dict[str, Mapping[str, str]] = {}
    for key, headers in value.items():
        field = f"egress.credentials[{key!r}]"
        if not isinstance(key, str):
            raise ConfigurationError(f"{field}: the key must be a host or host:port string", field=field)
        if not isinstance(headers, Mapping) or not headers:
            raise ConfigurationError(f"{field} must be a non-empty mapping of header name to value", field=field)
        clean: dict[str, str] = {}
        for name, val in headers.items():
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise ConfigurationError(f"{field}: invalid header name {name!r}", field=field)
            if name.lower() in _FORBIDDEN_HEADERS:
                raise ConfigurationError(
                    f"{field}: the proxy owns the {name!r} header; it cannot be injected", field=field
                )
            if not isinstance(val, str) or any(c in val for c in "\r\n\0"):
                # never echo the value: it is a secret
                raise ConfigurationError(
                    f"{field}: the value of {name!r} must be a string without CR, LF or NUL", field=field
                )
            clean[name] = val
        out[key] = types.MappingProxyType(clean)
    return types.MappingProxyType(out)


def _redacted(creds: Mapping[str, Mapping[str, str]]) -> str:
    return repr({host: dict.fromkeys(headers, "***") for host, headers in creds.items()})


def _credential_key(key: str) -> tuple[str, int | None]:
    text = key.strip()
    port: int | None = None
    if text.startswith("["):
        close = text.find("]")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            port = _parse_port(rest.lstrip(":"))
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _parse_port(port_text)
    else:
        host = text
    if "*" in host or "/" in host:
        raise ValueError("credentials are keyed by one host or host:port (no wildcards or networks)")
    return normalize_host(host), port


@attrs.frozen(kw_only=True)
class EgressPolicy:
    """Where a sandbox may connect, enforced by the egress proxy outside the sandbox.

    ``allow`` lists the destinations (default deny: an empty list allows nothing). ``credentials``
    maps a host or ``host:port`` to headers the proxy sets on every request to it, replacing any the
    client sent; the values never enter the sandbox. HTTPS to such a host is terminated by the proxy
    with a per-sandbox CA the sandbox trusts; every other host is tunnelled untouched.
    """

    allow: tuple[str, ...] = attrs.field(default=(), converter=_allow_converter)
    credentials: Mapping[str, Mapping[str, str]] = attrs.field(
        factory=dict, converter=_credentials_converter, repr=_redacted, hash=False
    )
    rules: tuple[AllowRule, ...] = attrs.field(init=False, repr=False, eq=False, hash=False)
    _credential_keys: tuple[tuple[str, int | None, str], ...] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        rules = []
        for i, entry in enumerate(self.allow):
            try:
                rules.append(AllowRule.parse(entry))
            except ValueError as exc:
                raise ConfigurationError(
                    f"egress.allow[{i}] {entry!r}: {exc}", field=f"egress.allow[{i}]", value=entry
                ) from None
        object.__setattr__(self, "rules", tuple(rules))
        keys = []
        for key in self.credentials:
            field = f"egress.credentials[{key!r}]"
            try:
                host, port = _credential_key(key)
            except ValueError as exc:
                raise ConfigurationError(f"{field}: {exc}", field=field) from None
            if not self._admits_name_or_ip(host, port):
                raise ConfigurationError(
                    f"{field}: no egress.allow entry admits {key!r}; credentials are only sent to allowed hosts",
                    field=field,
                )
            keys.append((host, port, key))
        object.__setattr__(self, "_credential_keys", tuple(keys))

    def _admits_name_or_ip(self, host: str, port: int | None) -> bool:
        ports = [port] if port is not None else [443, 80]
        try:
            ip: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        for p in ports:
            if ip is not None and any(r.matches_address(ip, p) for r in self.rules):
                return True
            if ip is None and any(r.matches_name(host, p) for r in self.rules):
                return True
        return False

    # -- construction from config --------------------------------------------------------------

    @classmethod
    def from_value(cls, value: Any, *, field: str = "egress") -> EgressPolicy | None:
        """A policy from what a config file or env variable holds: None (no policy), an
        ``EgressPolicy``, a list of allow entries, a comma/space-separated string of entries, or a
        mapping with the keys ``allow`` and ``credentials``. ConfigurationError naming the problem."""
        if value is None or isinstance(value, EgressPolicy):
            return value
        if isinstance(value, str):
            return cls(allow=tuple(p for p in re.split(r"[,\s]+", value) if p))
        if isinstance(value, Mapping):
            unknown = sorted(set(map(str, value)) - {"allow", "credentials"})
            if unknown:
                raise ConfigurationError(
                    f"{field}: unknown key(s) {', '.join(unknown)} (expected 'allow' and 'credentials')",
                    field=field,
                    value=unknown,
                )
            return cls(allow=value.get("allow") or (), credentials=value.get("credentials") or {})
        if isinstance(value, list | tuple):
            return cls(allow=tuple(value))
        raise ConfigurationError(
            f"{field} must be a list of allow entries or a mapping with 'allow'/'credentials', "
            f"got {type(value).__name__}",
            field=field,
            value=value,
        )

    def to_value(self, *, redact: bool = False) -> dict[str, Any]:
        """The plain form :meth:`from_value` reads back: ``{"allow": [...], "credentials": {...}}``.
        Credentials are included (a config round-trips; don't log it) unless ``redact=True``, which
        replaces every header value with ``"***"``."""
        return {
            "allow": list(self.allow),
            "credentials": {
                key: {name: "***" if redact else value for name, value in headers.items()}
                for key, headers in self.credentials.items()
            },
        }

    # -- matching ------------------------------------------------------------------------------

    def match_name(self, host: str, port: int) -> AllowRule | None:
        """The first name entry admitting ``host`` (any form; normalized here) on ``port``."""
        host = normalize_host(host)
        return next((r for r in self.rules if r.matches_name(host, port)), None)

    def match_address(self, ip: str | IPAddress, port: int) -> AllowRule | None:
        """The first address entry covering ``ip`` on ``port``."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        return next((r for r in self.rules if r.matches_address(addr, port)), None)

    def credentials_for(self, host: str, port: int) -> Mapping[str, str] | None:
        """The headers to inject for ``host:port``: a ``host:port`` key wins over a bare ``host`` key."""
        host = normalize_host(host)
        exact = next((k for h, p, k in self._credential_keys if h == host and p == port), None)
        if exact is None:
            exact = next((k for h, p, k in self._credential_keys if h == host and p is None), None)
        return None if exact is None else self.credentials[exact]

    @property
    def needs_tls_termination(self) -> bool:
        """True when some credential must be injected (so the proxy needs its per-sandbox CA)."""
        return bool(self.credentials)
