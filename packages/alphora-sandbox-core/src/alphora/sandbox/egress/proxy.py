"""The egress proxy: an asyncio HTTP proxy run by the library, outside the sandbox, for one sandbox.

Every connection the sandbox makes goes through :meth:`EgressProxy._admit`, the one place a
destination is decided:

1. the policy matches the name (or, for an address target, the address) and port;
2. the decision hook (``sandbox_egress_decide``), when given, may allow, deny or rewrite;
3. a name is resolved *by the proxy*; every resolved address is checked, and a special address
   (private, loopback, link-local, ...) that no address entry names refuses the whole request;
4. the proxy connects to a checked address, never re-resolving the name (no DNS rebinding window).

Refusals happen before any connection is attempted. ``CONNECT`` is tunnelled untouched after its
TLS ClientHello's SNI is checked against the CONNECT host; when credentials apply to the host the
proxy terminates TLS with a leaf of the per-sandbox CA and injects the headers. Plain HTTP is
proxied request by request (absolute-URI requests, parsed with ``h11``). Every decision is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import h11

from ..rules import validate_sandbox_id
from .decision import AuditRecord, EgressDecision, EgressRequest, Kind, log_audit
from .policy import EgressPolicy, IPAddress, is_special_address, normalize_host
from .streams import ByteStream, PrefixedStream, SocketStream

__all__ = ["Connector", "EgressProxy", "Resolver", "default_resolver"]

log = logging.getLogger("alphora.sandbox.egress")

#: host name -> the addresses (strings) it resolves to
Resolver = Callable[[str], Awaitable[Sequence[str]]]
#: (checked address, port) -> an open connection; injectable so tests can prove no connect happened
Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    }
)


#: response heads from real servers may carry large cookies; the sandbox's request heads keep h11's 16 KiB
_MAX_UPSTREAM_HEAD = 256 * 1024


async def default_resolver(host: str) -> list[str]:
    """The event loop's ``getaddrinfo``: every address of ``host``, in order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


async def _open(address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(address, port)


class _Refused(Exception):
    """A request the proxy will not carry: ``status`` and ``reason`` go to the client and the audit."""

    def __init__(self, status: int, rule: str, *, decision: str = "deny") -> None:
        super().__init__(rule)
        self.status = status
        self.rule = rule
        self.decision = decision


@attrs.define
class _Tally:
    """What one connection or request carried so far (kept current, so an audit after an error is right)."""

    up: int = 0
    down: int = 0
    status: int | None = None
    address: str = ""
    problem: str = ""  # why an allowed connection was cut after all (SNI or Host mismatch)


@attrs.define
class _Admitted:
    host: str  # the destination after any rewrite
    port: int
    addresses: list[IPAddress]
    rule: str


class EgressProxy:
    """The egress proxy of one sandbox.

    ``resolver`` (host -> addresses) defaults to the event loop's getaddrinfo; ``decide`` is the
    ``sandbox_egress_decide`` hook (called as ``decide(request=EgressRequest)``; may return an
    :class:`EgressDecision`, None, or an awaitable of either); ``audit`` receives every
    :class:`AuditRecord` (default: an INFO log line); ``upstream_ssl_context`` verifies the real
    servers of intercepted hosts (default: the system trust store); ``connector`` opens the
    connection to a checked address (default: ``asyncio.open_connection``).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        sandbox_id: str,
        resolver: Resolver | None = None,
        decide: Callable[..., Any] | None = None,
        audit: Callable[[AuditRecord], Any] | None = None,
        upstream_ssl_context: ssl.SSLContext | None = None,
        connector: Connector | None = None,
        connect_timeout: float = 10.0,
        header_timeout: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        if not isinstance(policy, EgressPolicy):
            raise TypeError(f"policy must be an EgressPolicy, got {type(policy).__name__}")
        self.policy = policy
        self.sandbox_id = validate_sandbox_id(sandbox_id)
        self._resolver: Resolver = resolver if resolver is not None else default_resolver
        self._decide = decide
        self._audit = audit if audit is not None else log_audit
        self._upstream_ssl = upstream_ssl_context
        self._connector: Connector = connector if connector is not None else _open
        self._connect_timeout = connect_timeout
        self._header_timeout = header_timeout
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unix_path: str | None = None
        self.address: str | tuple[str, int] | None = None
        self._ca: Any = None
        if policy.needs_tls_termination:
            from .tls import CertificateAuthority

            self._ca = CertificateAuthority(f"alphora-sandbox egress CA for {self.sandbox_id}")

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes | None:
        """The per-sandbox CA certificate (PEM) the sandbox must trust, when the policy has
        credentials (the proxy terminates TLS for those hosts); None otherwise."""
        return None if self._ca is None else self._ca.cert_pem

    @property
    def url(self) -> str:
        """``http://host:port`` of a TCP proxy (what ``HTTP(S)_PROXY`` holds)."""
        if not isinstance(self.address, tuple):
            raise RuntimeError("the proxy is not listening on TCP")
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def start(
        self, *, unix_path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """Listen on ``unix_path`` (a unix socket, created with the process umask: the caller sets the
        owner and mode its sandbox needs) or on ``host:port`` (loopback by default; port 0 picks a free
        one). ``address`` tells where."""
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        if unix_path is not None:
            path = os.fspath(unix_path)
            self._server = await asyncio.start_unix_server(self._client, path=path)
            self._unix_path = path
            self.address = path
        else:
            self._server = await asyncio.start_server(self._client, host=host, port=port)
            sockname = self._server.sockets[0].getsockname()
            self.address = (str(sockname[0]), int(sockname[1]))

    async def aclose(self) -> None:
        """Stop listening and cut every open connection. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)
            self._unix_path = None

    async def __aenter__(self) -> EgressProxy:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the decision --------------------------------------------------------------------------

    async def _admit(self, kind: Kind, host: str, port: int, *, method: str, target: str = "") -> _Admitted:
        """Decide ``host:port`` and return the checked addresses to connect to; :class:`_Refused` otherwise."""
        try:
            host = normalize_host(host)
        except ValueError as exc:
            raise _Refused(400, f"invalid host {host!r}: {exc}") from None
        if not 1 <= port <= 65535:
            raise _Refused(400, f"invalid port {port}")
        literal = _ip_or_none(host)
        rule = self.policy.match_address(literal, port) if literal else self.policy.match_name(host, port)
        request = EgressRequest(
            sandbox_id=self.sandbox_id,
            kind=kind,
            host=host,
            port=port,
            method=method,
            target=target,
            allowed=rule is not None,
            rule=rule.text if rule is not None else f"no allow entry admits {_dest(host, port)}",
        )
        allowed, why = request.allowed, request.rule
        if self._decide is not None:
            decision = await self._ask_hook(request)
            if decision is not None:
                allowed, why = decision.action == "allow", f"hook: {decision.reason or decision.action}"
                if allowed and (decision.host or decision.port):
                    try:
                        host = normalize_host(decision.host or host)
                    except ValueError as exc:
                        raise _Refused(502, f"{why}: the hook rewrote to an invalid host ({exc})") from None
                    port = decision.port or port
                    if not 1 <= port <= 65535:
                        raise _Refused(502, f"{why}: the hook rewrote to an invalid port {port}")
                    why = f"{why} (rewritten to {_dest(host, port)})"
        if not allowed:
            raise _Refused(403, why)
        literal = _ip_or_none(host)
        if literal is not None:
            names = [str(literal)]
        else:
            try:
                names = list(await asyncio.wait_for(self._resolver(host), self._connect_timeout))
            except Exception as exc:  # noqa: BLE001 - gaierror, a timeout, whatever an injected resolver raises
                raise _Refused(502, f"{why}; but {host} does not resolve ({exc or type(exc).__name__})") from None
        if not names:
            raise _Refused(502, f"{why}; but {host} resolves to no address")
        addresses: list[IPAddress] = []
        for name in names:
            ip = _ip_or_none(str(name).split("%", 1)[0])
            if ip is None:
                raise _Refused(502, f"the resolver returned {name!r} for {host}, not an IP address")
            if is_special_address(ip) and self.policy.match_address(ip, port) is None:
                raise _Refused(
                    403, f"{host} resolves to {ip}, a non-public address that no allow entry names (port {port})"
                )
            addresses.append(ip)
        return _Admitted(host=host, port=port, addresses=addresses, rule=why)

    async def _decide_inside(self, host: str, port: int, method: str, url: str, rule: str) -> _Refused | None:
        """The decisions hook about one request inside an intercepted tunnel (the tunnel itself was
        allowed): None to carry it, else why not. A rewrite cannot apply there: it refuses."""
        if self._decide is None:
            return None
        request = EgressRequest(
            sandbox_id=self.sandbox_id,
            kind="http",
            host=host,
            port=port,
            method=method,
            target=url,
            allowed=True,
            rule=rule,
        )
        try:
            decision = await self._ask_hook(request)
        except _Refused as refused:
            return refused
        if decision is None:
            return None
        why = f"hook: {decision.reason or decision.action}"
        if decision.action == "deny":
            return _Refused(403, why)
        if decision.host or decision.port:
            return _Refused(403, f"{why}: a request inside an intercepted TLS tunnel cannot be rewritten")
        return None

    async def _ask_hook(self, request: EgressRequest) -> EgressDecision | None:
        assert self._decide is not None
        try:
            result = self._decide(request=request)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a broken hook fails closed
            log.exception("sandbox_egress_decide failed for %s", request.destination)
            raise _Refused(403, f"the decision hook failed ({type(exc).__name__}: {exc})") from None
        if isinstance(result, list):  # a non-firstresult hook caller: take the first answer
            result = next((r for r in result if r is not None), None)
        if result is not None and not isinstance(result, EgressDecision):
            raise _Refused(403, f"the decision hook returned {type(result).__name__}, not an EgressDecision")
        return result

    async def _connect(self, admitted: _Admitted) -> tuple[SocketStream, str]:
        """Connect to the first reachable checked address (never to the name)."""
        errors = []
        for ip in admitted.addresses:
            try:
                reader, writer = await asyncio.wait_for(self._connector(str(ip), admitted.port), self._connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(f"{ip}: {exc or 'timeout'}")
                continue
            return SocketStream(reader, writer), str(ip)
        raise _Refused(502, f"{admitted.rule}; connecting failed ({'; '.join(errors)})", decision="allow")

    async def _record(self, record: AuditRecord) -> None:
        try:
            result = self._audit(record)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("the egress audit sink failed on %r", record)

    # -- connections ---------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        client = SocketStream(reader, writer)
        try:
            if len(self._tasks) > self._max_connections:
                # the proxy lives in the application's process: a sandbox must not exhaust its file descriptors
                conn = h11.Connection(h11.SERVER)
                await _send_error(conn, client, 503, f"too many open connections (max {self._max_connections})")
                await self._record(
                    AuditRecord(
                        sandbox_id=self.sandbox_id,
                        kind="connect",
                        destination="-",
                        decision="deny",
                        rule=f"connection limit {self._max_connections}",
                        status=503,
                    )
                )
                return
            await self._serve(client)
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.debug("egress connection ended: %s", exc)
        except asyncio.CancelledError:
            pass  # aclose() cut the connection; this task is the root of the connection, nobody awaits its result
        except Exception:
            log.exception("egress proxy of sandbox %s: a connection failed", self.sandbox_id)
        finally:
            self._tasks.discard(task)
            await client.close()

    async def _serve(self, client: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                event = await asyncio.wait_for(_next_event(conn, client), self._header_timeout)
            except asyncio.TimeoutError:
                return
            except h11.RemoteProtocolError as exc:
                await _send_error(conn, client, exc.error_status_hint, f"bad request: {exc}")
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            if event.method == b"CONNECT":
                await self._tunnel(conn, client, event)
                return
            if not await self._plain(conn, client, event):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _refuse(
        self,
        conn: h11.Connection,
        client: ByteStream,
        refused: _Refused,
        kind: Kind,
        dest: str,
        method: str,
        t0: float,
        target: str = "",
    ) -> None:
        await self._record(
            AuditRecord(
                sandbox_id=self.sandbox_id,
                kind=kind,
                destination=dest,
                decision="allow" if refused.decision == "allow" else "deny",
                rule=refused.rule,
                method=method,
                target=target,
                status=refused.status,
                duration=time.monotonic() - t0,
            )
        )
        await _send_error(conn, client, refused.status, refused.rule)

    async def _tunnel(self, conn: h11.Connection, client: SocketStream, request: h11.Request) -> None:
        t0 = time.monotonic()
        target = request.target.decode("ascii", "replace")
        try:
            host, port = _split_authority(target, default_port=None)
        except ValueError as exc:
            await self._refuse(
                conn, client, _Refused(400, f"bad CONNECT target {target!r}: {exc}"), "connect", target, "CONNECT", t0
            )
            return
        dest = _dest(host, port)
        try:
            admitted = await self._admit("connect", host, port, method="CONNECT")
        except _Refused as refused:
            await self._refuse(conn, client, refused, "connect", dest, "CONNECT", t0)
            return
        host = normalize_host(host)  # valid: _admit checked it
        creds = self.policy.credentials_for(admitted.host, admitted.port) if self._ca is not None else None
        upstream: SocketStream | None = None
        address = ""
        if creds is None:
            try:
                upstream, address = await self._connect(admitted)
            except _Refused as refused:
                await self._refuse(conn, client, refused, "connect", dest, "CONNECT", t0)
                return
        await client.write(conn.send(h11.Response(status_code=200, headers=[], reason=b"Connection established")))
        leftover, _closed = conn.trailing_data
        inner: ByteStream = PrefixedStream(client, leftover) if leftover else client
        tally = _Tally(address=address, status=200)
        try:
            if creds is None:
                assert upstream is not None
                await _pump(inner, upstream, tally, expected_sni=host)
            else:
                await self._intercept(inner, admitted, creds, tally, connect_host=host, connect_port=port)
        finally:  # audit first: closing may be cut short when aclose() cancels this connection
            await self._record(
                AuditRecord(
                    sandbox_id=self.sandbox_id,
                    kind="connect",
                    destination=dest,
                    decision="deny" if tally.problem else "allow",
                    rule=tally.problem or admitted.rule,
                    address=tally.address,
                    method="CONNECT",
                    status=200,
                    bytes_up=tally.up,
                    bytes_down=tally.down,
                    intercepted=creds is not None,
                    duration=time.monotonic() - t0,
                )
            )
            if upstream is not None:
                await upstream.close()

    async def _plain(self, conn: h11.Connection, client: SocketStream, request: h11.Request) -> bool:
        """One absolute-URI request; True when the client connection may carry another."""
        t0 = time.monotonic()
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        try:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                raise ValueError("a proxy request needs an absolute http:// URI (use CONNECT for https)")
            host, port = url.hostname, url.port
            if port is None:
                port = 80
            elif port == 0:  # "or 80" would quietly dial port 80 for it
                raise ValueError("port 0 is not a destination")
        except ValueError as exc:
            await self._refuse(conn, client, _Refused(400, str(exc)), "http", target[:200], method, t0)
            return False
        dest = _dest(host, port)
        try:
            admitted = await self._admit("http", host, port, method=method, target=target)
            upstream, address = await self._connect(admitted)
        except _Refused as refused:
            await self._refuse(conn, client, refused, "http", dest, method, t0, target)
            return False
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        creds = self.policy.credentials_for(admitted.host, admitted.port)
        tally = _Tally(address=address)
        try:
            await _forward(
                conn,
                client,
                request,
                upstream,
                path.encode(),
                _authority(admitted.host, admitted.port, 80),
                creds,
                tally,
            )
        finally:  # audit first: closing may be cut short when aclose() cancels this connection
            await self._record(
                AuditRecord(
                    sandbox_id=self.sandbox_id,
                    kind="http",
                    destination=dest,
                    decision="allow",
                    rule=admitted.rule,
                    address=address,
                    method=method,
                    target=target,
                    status=tally.status,
                    bytes_up=tally.up,
                    bytes_down=tally.down,
                    duration=time.monotonic() - t0,
                )
            )
            await upstream.close()
        return True

    async def _intercept(
        self,
        client: ByteStream,
        admitted: _Admitted,
        creds: Mapping[str, str],
        tally: _Tally,
        *,
        connect_host: str,
        connect_port: int,
    ) -> None:
        """Terminate TLS for ``admitted.host`` with a leaf of the per-sandbox CA, then relay each request
        over a fresh verified TLS connection to the real server with the credential headers set."""
        from .tls import TLSStream

        assert self._ca is not None
        tls = TLSStream(client, self._ca.server_context(connect_host), server_side=True)
        try:
            await asyncio.wait_for(tls.handshake(), self._header_timeout)
        except (ssl.SSLError, ConnectionError, asyncio.TimeoutError) as exc:
            await client.close()
            tally.problem = f"the client's TLS handshake with the proxy failed: {exc}"
            return
        sni = tls.server_name
        if sni is not None and _norm_or_none(sni) != connect_host:
            await tls.close()
            tally.problem = f"TLS SNI {sni!r} does not match the CONNECT target {connect_host!r}"
            return
        conn = h11.Connection(h11.SERVER)
        context = self._upstream_ssl or ssl.create_default_context()
        while True:
            try:
                event = await asyncio.wait_for(_next_event(conn, tls), self._header_timeout)
            except asyncio.TimeoutError:
                break
            if not isinstance(event, h11.Request):
                break
            if not host_matches(_host_header(event), connect_host, connect_port):
                tally.problem = f"the Host header does not match the CONNECT target {connect_host!r}"
                await _send_error(conn, tls, 403, tally.problem)
                break
            if not event.target.startswith(b"/"):
                # the hook decides by the URL built from the path; an absolute-form target would show it
                # one URL (https://host/http://host/admin) while the server reads another (/admin)
                tally.problem = "inside a tunnel a request target must be a path ('/...')"
                await _send_error(conn, tls, 400, tally.problem)
                break
            t0 = time.monotonic()
            method = event.method.decode("ascii", "replace")
            url = f"https://{_authority(connect_host, connect_port, 443).decode()}{event.target.decode('ascii', 'replace')}"
            record = AuditRecord(
                sandbox_id=self.sandbox_id,
                kind="http",
                destination=_dest(connect_host, connect_port),
                decision="allow",
                rule=admitted.rule,
                method=method,
                target=url,
                intercepted=True,
            )
            refusal = await self._decide_inside(connect_host, connect_port, method, url, admitted.rule)
            if refusal is not None:
                await self._record(attrs.evolve(record, decision="deny", rule=refusal.rule, status=refusal.status))
                await _send_error(conn, tls, refusal.status, refusal.rule)
                break
            try:
                plain, tally.address = await self._connect(admitted)
            except _Refused as refused:
                await self._record(attrs.evolve(record, rule=refused.rule, status=refused.status))
                await _send_error(conn, tls, refused.status, refused.rule)
                break
            upstream = TLSStream(plain, context, server_side=False, server_hostname=admitted.host)
            one = _Tally(address=tally.address)
            try:
                await asyncio.wait_for(upstream.handshake(), self._connect_timeout)
                await _forward(
                    conn, tls, event, upstream, event.target, _authority(admitted.host, admitted.port, 443), creds, one
                )
            except (ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
                one.status = 502
                await _send_error(conn, tls, 502, f"the upstream TLS connection failed: {exc}")
                break
            finally:
                tally.up, tally.down = tally.up + one.up, tally.down + one.down
                await self._record(
                    attrs.evolve(
                        record,
                        address=one.address,
                        status=one.status,
                        bytes_up=one.up,
                        bytes_down=one.down,
                        duration=time.monotonic() - t0,
                    )
                )
                await upstream.close()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
        await tls.close()


# -- helpers -----------------------------------------------------------------------------------


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _dest(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _authority(host: str, port: int, default: int) -> bytes:
    h = f"[{host}]" if ":" in host else host
    return (h if port == default else f"{h}:{port}").encode("ascii")


def _split_authority(text: str, *, default_port: int | None) -> tuple[str, int]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("missing ']'")
        host, rest = text[1:close], text[close + 1 :]
        if not isinstance(_ip_or_none(host), ipaddress.IPv6Address):
            raise ValueError(f"only an IPv6 address goes in brackets, not {host!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']'")
        port_text = rest[1:]
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError("a port is required")
        return host, default_port
    if not port_text.isdigit():
        raise ValueError(f"invalid port {port_text!r}")
    return host, int(port_text)


def _host_header(request: h11.Request) -> str:
    """The request's Host header ("" when absent; h11 refuses an HTTP/1.1 request without one)."""
    return next((v.decode("latin-1") for n, v in request.headers if n == b"host"), "")


def host_matches(header: str, host: str, port: int) -> bool:
    """Whether a ``Host`` header value names ``host`` (normalized) on ``port``: ``api.example.com``,
    ``API.example.com.`` and ``api.example.com:443`` all match ``("api.example.com", 443)``; a header
    without a port matches any port (the client knows which port it tunnelled to)."""
    try:
        name, given = _split_authority(header.strip(), default_port=0)
        return normalize_host(name) == host and given in (0, port)
    except ValueError:
        return False


async def _next_event(conn: h11.Connection, stream: ByteStream) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read(65536))
            continue
        return event


async def _send_error(conn: h11.Connection, client: ByteStream, status: int, message: str) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = f"alphora egress proxy: {message}\n".encode("utf-8", "replace")
    reason = {
        400: b"Bad Request",
        403: b"Forbidden by egress policy",
        502: b"Bad Gateway",
        503: b"Service Unavailable",
    }.get(status, b"Error")
    try:
        await client.write(
            conn.send(
                h11.Response(
                    status_code=status,
                    reason=reason,
                    headers=[
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                )
            )
            + (conn.send(h11.Data(data=body)) or b"")
            + (conn.send(h11.EndOfMessage()) or b"")
        )
    except (OSError, h11.LocalProtocolError):
        pass


def _framing_drop(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """A message with both Transfer-Encoding and Content-Length is framed by Transfer-Encoding (h11 reads
    it so); RFC 9112 6.3 has an intermediary remove the Content-Length before forwarding, else a
    next hop that trusts Content-Length reads the body differently (request smuggling)."""
    names = {name for name, _ in headers}
    return {b"content-length"} if b"transfer-encoding" in names else set()


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


async def _forward(
    conn: h11.Connection,
    client: ByteStream,
    request: h11.Request,
    upstream: ByteStream,
    target: bytes,
    authority: bytes,
    creds: Mapping[str, str] | None,
    tally: _Tally,
) -> None:
    """Relay one request (its body streamed) to ``upstream`` and its response back, counting in ``tally``."""
    drop = _HOP_BY_HOP | _connection_tokens(request.headers) | _framing_drop(request.headers) | {b"host", b"expect"}
    if creds:
        drop |= {name.lower().encode("ascii") for name in creds}
    headers = [(b"host", authority)]
    headers += [(n, v) for n, v in request.headers if n not in drop]
    if creds:
        headers += [(n.encode("ascii"), v.encode("latin-1")) for n, v in creds.items()]
    headers.append((b"connection", b"close"))
    up_conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_UPSTREAM_HEAD)
    await upstream.write(up_conn.send(h11.Request(method=request.method, target=target, headers=headers)))
    if conn.client_is_waiting_for_100_continue:  # the decision is made: let the body come
        await client.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
    while True:
        try:
            event = await _next_event(conn, client)
        except h11.RemoteProtocolError as exc:  # a malformed body (bad chunk): the response has not begun
            tally.status = 400
            await _send_error(conn, client, 400, f"bad request body: {exc}")
            return
        if isinstance(event, h11.Data):
            tally.up += len(event.data)
            await upstream.write(up_conn.send(h11.Data(data=event.data)) or b"")
        elif isinstance(event, h11.EndOfMessage):
            await upstream.write(up_conn.send(h11.EndOfMessage()) or b"")
            break
        else:
            raise h11.RemoteProtocolError("the client closed before the request body ended")
    status = 0
    while True:
        event = await _next_event(up_conn, upstream)
        if isinstance(event, h11.InformationalResponse):
            continue  # 1xx answers are for the hop that asked; the final response follows
        if isinstance(event, h11.Response):
            status = tally.status = event.status_code
            drop_down = _HOP_BY_HOP | _connection_tokens(event.headers) | _framing_drop(event.headers)
            out = [(n, v) for n, v in event.headers if n not in drop_down]
            await client.write(conn.send(h11.Response(status_code=status, headers=out, reason=event.reason)))
        elif isinstance(event, h11.Data):
            tally.down += len(event.data)
            await client.write(conn.send(h11.Data(data=event.data)) or b"")
        elif isinstance(event, h11.EndOfMessage):
            await client.write(conn.send(h11.EndOfMessage()) or b"")
            return
        else:
            if status == 0:
                tally.status = 502
                await _send_error(conn, client, 502, "the upstream server closed without a response")
                return
            raise ConnectionError("the upstream server closed in the middle of the response")


async def _pump(client: ByteStream, upstream: ByteStream, tally: _Tally, *, expected_sni: str | None) -> None:
    """Copy bytes both ways until both sides are done. When the client's first bytes are a TLS
    ClientHello, its SNI must name ``expected_sni`` (the CONNECT host); otherwise the tunnel is cut
    before a byte reaches the server (``tally.problem`` says why). Counts bytes in ``tally``."""
    from .tls import client_hello_message, client_hello_sni

    async def first_up() -> bytes | None:
        data = await client.read(65536)
        if not data or data[0] != 0x16 or expected_sni is None:
            return data
        while True:
            try:
                found = client_hello_message(data)
            except ValueError as exc:
                tally.problem = f"the TLS ClientHello could not be checked: {exc}"
                return None
            if found is not None:
                break
            more = await client.read(65536)
            if not more:
                tally.problem = "the client closed in the middle of its TLS ClientHello"
                return None
            data += more
        try:
            sni, ech = client_hello_sni(found[0])
        except ValueError as exc:
            tally.problem = f"the TLS ClientHello could not be checked: {exc}"
            return None
        if ech:
            tally.problem = "the TLS ClientHello offers Encrypted ClientHello, which hides the real server name"
        elif sni is not None and _norm_or_none(sni) != expected_sni:
            tally.problem = f"TLS SNI {sni!r} does not match the CONNECT target {expected_sni!r}"
        return None if tally.problem else data

    async def copy(src: ByteStream, dst: ByteStream, up: bool, first: bytes | None = b"") -> None:
        try:
            if first is None:
                return
            data = first
            while True:
                if data:
                    if up:
                        tally.up += len(data)
                    else:
                        tally.down += len(data)
                    await dst.write(data)
                data = await src.read(65536)
                if not data:
                    await dst.write_eof()
                    return
        except OSError:
            await dst.close()
            await src.close()

    down = asyncio.ensure_future(copy(upstream, client, False))
    try:
        first = await first_up()
        if first == b"":
            await upstream.write_eof()
        elif first is None:
            down.cancel()
            await client.close()
        else:
            await copy(client, upstream, True, first)
        with contextlib.suppress(asyncio.CancelledError):
            await down
    finally:
        if not down.done():
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await down


def _norm_or_none(host: str) -> str | None:
    try:
        return normalize_host(host)
    except ValueError:
        return None
