"""The egress proxy with real clients (urllib, requests, httpx, raw sockets) against loopback servers.

Metadata, private-range and rebinding cases use an injected resolver (test names -> link-local /
private addresses) and an injected connector that records every attempt and only ever connects to
127.0.0.1: the tests prove the refusal happens before any connection, and no packet leaves the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTPX generation the SDKs in the test deps (openai, anthropic, mcp) require
import pytest
import requests

from alphora.sandbox import EgressDecision, EgressPolicy, EgressProxy, EgressRequest, hookimpl
from alphora.sandbox.egress import AuditRecord
from alphora.sandbox.egress.proxy import host_matches
from alphora.sandbox.plugins import PluginRegistry, make_plugin_manager
from tests._support.egress import ConnectSpy, EchoServer, FakeDNS, TestCA

pytestmark = pytest.mark.timeout(60)

SECRET = "Bearer sk-test-0123456789"


@pytest.fixture(scope="module")
def test_ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def allowed() -> Iterator[EchoServer]:
    with EchoServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def denied() -> Iterator[EchoServer]:
    with EchoServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def https_server(test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    """An HTTPS server for the test name ``api.test`` with a certificate of the test CA."""
    with EchoServer(tls=test_ca.server_context(["api.test"], tmp_path_factory.mktemp("tls"))) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(allowed: EchoServer, denied: EchoServer, https_server: EchoServer) -> None:
    for srv in (allowed, denied, https_server):
        srv.requests.clear()


class Audit(list[AuditRecord]):
    def __call__(self, record: AuditRecord) -> None:
        self.append(record)


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def spy() -> ConnectSpy:
    return ConnectSpy()


@pytest.fixture
async def proxy(allowed: EchoServer, audit: Audit, spy: ConnectSpy) -> AsyncIterator[EgressProxy]:
    """A proxy admitting only the ``allowed`` server (by address and as ``allowed.test``)."""
    dns = FakeDNS({"allowed.test": ["127.0.0.1"], "denied.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=["allowed.test", f"127.0.0.1:{allowed.port}"])
    async with EgressProxy(policy, sandbox_id="sb-test", resolver=dns, audit=audit, connector=spy) as p:
        yield p


def _urllib_get(proxy_url: str, url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy_url, "https": proxy_url}))
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _raw_connect(address: Any, target: str) -> tuple[socket.socket, bytes]:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- plain HTTP --------------------------------------------------------------------------------


async def test_plain_http_allowed_and_denied_with_urllib(
    proxy: EgressProxy, allowed: EchoServer, denied: EchoServer, audit: Audit, spy: ConnectSpy
) -> None:
    status, body = await asyncio.to_thread(_urllib_get, proxy.url, f"http://127.0.0.1:{allowed.port}/ok?q=1")
    assert status == 200
    assert json.loads(body)["path"] == "/ok?q=1"
    assert allowed.header(0, "Host") == [f"127.0.0.1:{allowed.port}"]

    status, body = await asyncio.to_thread(_urllib_get, proxy.url, f"http://127.0.0.1:{denied.port}/no")
    assert status == 403
    assert f"no allow entry admits 127.0.0.1:{denied.port}" in body.decode()
    assert denied.requests == []
    assert spy.attempts == [("127.0.0.1", allowed.port)]  # the denied server was never dialled

    assert [(r.kind, r.decision, r.status) for r in audit] == [("http", "allow", 200), ("http", "deny", 403)]
    assert audit[0].rule == f"127.0.0.1:{allowed.port}"
    assert audit[0].address == "127.0.0.1"
    assert audit[0].bytes_down > 0
    assert audit[0].sandbox_id == "sb-test"
    assert audit[1].rule == f"no allow entry admits 127.0.0.1:{denied.port}"
    assert audit[1].address == ""


async def test_plain_http_by_name_with_httpx_streams_a_body_and_keeps_the_connection(
    proxy: EgressProxy, allowed: EchoServer, audit: Audit
) -> None:
    async with httpx.AsyncClient(proxy=proxy.url, timeout=10) as client:
        r1 = await client.post(f"http://allowed.test:{allowed.port}/upload", content=b"x" * 100_000)
        r2 = await client.get(f"http://allowed.test:{allowed.port}/again")
        r3 = await client.get(f"http://denied.test:{allowed.port}/")
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 403)
    assert r1.json()["body_size"] == 100_000
    assert allowed.header(0, "Host") == [f"allowed.test:{allowed.port}"]
    assert audit[0].bytes_up == 100_000
    assert audit[0].rule == "allowed.test"
    assert len(allowed.requests) == 2


async def test_hop_by_hop_and_proxy_headers_do_not_reach_the_server(proxy: EgressProxy, allowed: EchoServer) -> None:
    def go() -> int:
        r = requests.get(
            f"http://127.0.0.1:{allowed.port}/h",
            proxies={"http": proxy.url},
            headers={"Proxy-Authorization": "Basic c2VjcmV0", "X-Keep": "1"},
            timeout=10,
        )
        return r.status_code

    assert await asyncio.to_thread(go) == 200
    names = {k.lower() for k, _ in allowed.requests[0]["headers"]}
    assert "proxy-authorization" not in names
    assert "proxy-connection" not in names
    assert "x-keep" in names


async def test_origin_form_requests_are_refused(proxy: EgressProxy, allowed: EchoServer) -> None:
    assert isinstance(proxy.address, tuple)

    def go() -> bytes:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{allowed.port}\r\n\r\n".encode())
            return _recv_all(sock)

    reply = await asyncio.to_thread(go)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"needs an absolute http:// URI" in reply
    assert allowed.requests == []


# -- CONNECT -----------------------------------------------------------------------------------


async def test_connect_tunnels_tls_untouched_with_requests(
    test_ca: TestCA, https_server: EchoServer, audit: Audit, spy: ConnectSpy, tmp_path: Path
) -> None:
    """The client verifies the *server's* certificate (test CA) through the tunnel: nothing is intercepted."""
    ca_file = tmp_path / "test-ca.pem"
    ca_file.write_bytes(test_ca.cert_pem)
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=["api.test", f"127.0.0.1:{https_server.port}"])
    async with EgressProxy(policy, sandbox_id="sb-tls", resolver=dns, audit=audit, connector=spy) as proxy:
        assert proxy.ca_pem is None  # no credentials, no CA

        def go() -> requests.Response:
            return requests.get(
                f"https://api.test:{https_server.port}/t",
                proxies={"https": proxy.url},
                headers={"Authorization": "client-own"},
                verify=str(ca_file),
                timeout=10,
            )

        r = await asyncio.to_thread(go)
    assert r.status_code == 200
    assert r.json()["path"] == "/t"
    assert https_server.header(0, "Authorization") == ["client-own"]
    assert [(x.kind, x.decision, x.intercepted) for x in audit] == [("connect", "allow", False)]
    assert audit[0].bytes_up > 0
    assert audit[0].bytes_down > 0
    assert spy.attempts == [("127.0.0.1", https_server.port)]


async def test_raw_socket_connect_allowed_denied_and_over_a_unix_socket(
    allowed: EchoServer, denied: EchoServer, audit: Audit, spy: ConnectSpy, tmp_path: Path
) -> None:
    policy = EgressPolicy(allow=[f"127.0.0.1:{allowed.port}"])
    proxy = EgressProxy(policy, sandbox_id="sb-raw", audit=audit, connector=spy)
    await proxy.start(unix_path=tmp_path / "egress.sock")
    try:
        assert proxy.address == str(tmp_path / "egress.sock")

        def allowed_call() -> tuple[bytes, bytes]:
            sock, head = _raw_connect(proxy.address, f"127.0.0.1:{allowed.port}")
            with sock:
                sock.sendall(b"GET /raw HTTP/1.0\r\n\r\n")
                return head, _recv_all(sock)

        def denied_call() -> bytes:
            sock, head = _raw_connect(proxy.address, f"127.0.0.1:{denied.port}")
            with sock:
                return head + _recv_all(sock)

        head, body = await asyncio.to_thread(allowed_call)
        assert head.startswith(b"HTTP/1.1 200 Connection established")
        assert b'"path": "/raw"' in body
        reply = await asyncio.to_thread(denied_call)
        assert reply.startswith(b"HTTP/1.1 403 Forbidden by egress policy")
    finally:
        await proxy.aclose()
    assert not (tmp_path / "egress.sock").exists()
    assert denied.connections == 0
    assert spy.attempts == [("127.0.0.1", allowed.port)]
    assert [(r.decision, r.status) for r in audit] == [("allow", 200), ("deny", 403)]
    assert audit[0].bytes_up == len(b"GET /raw HTTP/1.0\r\n\r\n")


async def test_sni_must_match_the_connect_target(
    test_ca: TestCA, https_server: EchoServer, audit: Audit, spy: ConnectSpy
) -> None:
    """CONNECT to an allowed name, then a ClientHello naming another host: cut before the server sees a byte."""
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=["api.test", f"127.0.0.1:{https_server.port}"])
    async with EgressProxy(policy, sandbox_id="sb-sni", resolver=dns, audit=audit, connector=spy) as proxy:

        def go() -> str:
            sock, head = _raw_connect(proxy.address, f"api.test:{https_server.port}")
            assert head.startswith(b"HTTP/1.1 200")
            ctx = test_ca.client_context()
            try:
                with ctx.wrap_socket(sock, server_hostname="evil.test"):
                    return "handshake completed"
            except (ssl.SSLError, OSError) as exc:
                return f"refused: {exc}"

        outcome = await asyncio.to_thread(go)
    assert outcome.startswith("refused")
    assert https_server.requests == []
    assert audit[-1].decision == "deny"
    assert audit[-1].rule == "TLS SNI 'evil.test' does not match the CONNECT target 'api.test'"
    assert audit[-1].bytes_up == 0


def _client_hello(sni: str, *, ech: bool = False) -> bytes:
    """A minimal TLS ClientHello handshake message naming ``sni`` (optionally offering ECH)."""
    name = sni.encode()
    server_name = (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name
    exts = b"\x00\x00" + len(server_name).to_bytes(2, "big") + server_name
    if ech:
        exts += b"\xfe\x0d\x00\x01\x00"
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + len(exts).to_bytes(2, "big") + exts
    return b"\x01" + len(body).to_bytes(3, "big") + body


def _records(message: bytes, *, split: int) -> bytes:
    """``message`` in TLS handshake records, the first holding only ``split`` bytes of it."""
    parts = [message[:split], message[split:]]
    return b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in parts if p)


@pytest.mark.parametrize(
    ("hello", "rule"),
    [
        # the name hidden in a second record: the proxy reassembles the ClientHello before deciding
        (_records(_client_hello("evil.test"), split=20), "TLS SNI 'evil.test' does not match"),
        (_records(_client_hello("api.test", ech=True), split=9999), "offers Encrypted ClientHello"),
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "the first handshake message is not a ClientHello"),
    ],
    ids=["sni-in-second-record", "ech", "not-a-client-hello"],
)
async def test_hidden_or_unreadable_server_names_cut_the_tunnel(
    https_server: EchoServer, audit: Audit, hello: bytes, rule: str
) -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=["api.test", f"127.0.0.1:{https_server.port}"])
    async with EgressProxy(policy, sandbox_id="sb-hello", resolver=dns, audit=audit) as proxy:

        def go() -> bytes:
            sock, head = _raw_connect(proxy.address, f"api.test:{https_server.port}")
            assert head.startswith(b"HTTP/1.1 200")
            with sock:
                sock.sendall(hello)
                return _recv_all(sock)

        assert await asyncio.to_thread(go) == b""
    assert audit[-1].decision == "deny"
    assert rule in audit[-1].rule
    assert audit[-1].bytes_up == 0


async def test_a_split_client_hello_with_the_right_name_passes(
    test_ca: TestCA, https_server: EchoServer, audit: Audit
) -> None:
    """The reassembly is not a refusal of fragmented hellos: the real handshake, re-split, still works."""
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=["api.test", f"127.0.0.1:{https_server.port}"])
    async with EgressProxy(policy, sandbox_id="sb-split", resolver=dns, audit=audit) as proxy:

        def go() -> bytes:
            sock, _ = _raw_connect(proxy.address, f"api.test:{https_server.port}")
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = test_ca.client_context().wrap_bio(incoming, outgoing, server_hostname="api.test")
            with sock:
                with contextlib.suppress(ssl.SSLWantReadError):
                    tls.do_handshake()
                record = outgoing.read()
                sock.sendall(_records(record[5:], split=30))  # one record becomes two
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        sock.sendall(outgoing.read())
                        incoming.write(sock.recv(65536))
                sock.sendall(outgoing.read())
                tls.write(b"GET /split HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
                sock.sendall(outgoing.read())
                reply = b""
                while True:
                    try:
                        chunk = tls.read(65536)
                    except ssl.SSLWantReadError:
                        data = sock.recv(65536)
                        if not data:
                            break
                        incoming.write(data)
                        continue
                    except ssl.SSLZeroReturnError:
                        break
                    if not chunk:
                        break
                    reply += chunk
                return reply

        reply = await asyncio.to_thread(go)
    assert reply.startswith(b"HTTP/1.1 200")
    assert https_server.requests[0]["path"] == "/split"
    assert audit[-1].decision == "allow"


# -- special destinations: refused before any connection -------------------------------------


@pytest.mark.parametrize(
    ("allow", "dns", "target", "rule"),
    [
        # a name the policy allows, resolving to the metadata service
        (["metadata.test"], {"metadata.test": ["169.254.169.254"]}, "metadata.test:80", "169.254.169.254"),
        # ... to a private address
        (["*.corp.test"], {"db.corp.test": ["10.0.0.5"]}, "db.corp.test:5432", "10.0.0.5"),
        # ... to loopback (the host's own services)
        (["local.test"], {"local.test": ["127.0.0.1"]}, "local.test:22", "127.0.0.1"),
        # one bad address among good ones refuses the whole name
        (["mixed.test", "127.0.0.2"], {"mixed.test": ["127.0.0.2", "10.9.9.9"]}, "mixed.test:443", "10.9.9.9"),
        # address literals: not allowed by any entry
        (["*.test"], {}, "169.254.169.254:80", "no allow entry"),
        (["*.test"], {}, "[::ffff:169.254.169.254]:80", "no allow entry"),
        (["*.test"], {}, "[fe80::1]:80", "no allow entry"),
        # an address entry for another port does not open this one
        (["127.0.0.1:8080", "local.test"], {"local.test": ["127.0.0.1"]}, "local.test:22", "127.0.0.1"),
    ],
    ids=[
        "metadata-by-name",
        "private-by-name",
        "loopback-by-name",
        "one-bad-answer",
        "metadata-literal",
        "v4-mapped-metadata",
        "link-local-v6",
        "address-entry-other-port",
    ],
)
async def test_special_destinations_are_refused_before_connecting(
    allow: list[str], dns: dict[str, list[str]], target: str, rule: str, audit: Audit, spy: ConnectSpy
) -> None:
    async with EgressProxy(
        EgressPolicy(allow=allow), sandbox_id="sb-meta", resolver=FakeDNS(dns), audit=audit, connector=spy
    ) as proxy:
        sock, head = await asyncio.to_thread(_raw_connect, proxy.address, target)
        sock.close()
        status, body = await asyncio.to_thread(_urllib_get, proxy.url, f"http://{target}/latest/meta-data/")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert status == 403
    assert rule in body.decode()
    assert spy.attempts == []
    assert [r.decision for r in audit] == ["deny", "deny"]
    assert rule in audit[0].rule


async def test_rebinding_the_proxy_connects_to_the_address_it_checked(
    allowed: EchoServer, audit: Audit, spy: ConnectSpy
) -> None:
    """A name answering 127.0.0.1 (explicitly allowed), then 10.0.0.1: each request is resolved once,
    the connection goes to the checked address, and the rebound answer is refused before connecting."""
    dns = FakeDNS({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    policy = EgressPolicy(allow=["rebind.test", f"127.0.0.1:{allowed.port}"])
    async with EgressProxy(policy, sandbox_id="sb-rebind", resolver=dns, audit=audit, connector=spy) as proxy:
        first = await asyncio.to_thread(_urllib_get, proxy.url, f"http://rebind.test:{allowed.port}/1")
        second = await asyncio.to_thread(_urllib_get, proxy.url, f"http://rebind.test:{allowed.port}/2")
    assert first[0] == 200
    assert second[0] == 403
    assert b"resolves to 10.0.0.1" in second[1]
    assert dns.lookups == ["rebind.test", "rebind.test"]
    assert spy.attempts == [("127.0.0.1", allowed.port)]
    assert len(allowed.requests) == 1


# -- credentials -------------------------------------------------------------------------------


async def test_credentials_are_injected_over_https_and_replace_the_clients(
    test_ca: TestCA, https_server: EchoServer, audit: Audit, tmp_path: Path
) -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(
        allow=["api.test", f"127.0.0.1:{https_server.port}"], credentials={"api.test": {"Authorization": SECRET}}
    )
    async with EgressProxy(
        policy, sandbox_id="sb-cred", resolver=dns, audit=audit, upstream_ssl_context=test_ca.client_context()
    ) as proxy:
        assert proxy.ca_pem is not None
        assert b"BEGIN CERTIFICATE" in proxy.ca_pem
        bundle = tmp_path / "sandbox-ca.pem"
        bundle.write_bytes(proxy.ca_pem)  # what the sandbox trusts: the per-sandbox CA, not the server's

        def go() -> list[requests.Response]:
            # per-request verify: a session's verify loses to REQUESTS_CA_BUNDLE from the environment
            kw: dict[str, Any] = {"proxies": {"https": proxy.url}, "verify": str(bundle), "timeout": 10}
            with requests.Session() as s:
                return [
                    s.get(f"https://api.test:{https_server.port}/a", headers={"Authorization": "forged"}, **kw),
                    s.post(f"https://api.test:{https_server.port}/b", data=b"y" * 5000, **kw),
                ]

        responses = await asyncio.to_thread(go)
    assert [r.status_code for r in responses] == [200, 200]
    assert https_server.header(0, "Authorization") == [SECRET]  # replaced, not added
    assert https_server.header(1, "Authorization") == [SECRET]
    assert https_server.requests[1]["body_size"] == 5000
    assert audit[-1].intercepted
    assert audit[-1].decision == "allow"
    assert audit[-1].bytes_up == 5000
    assert SECRET not in repr(audit)
    assert SECRET not in repr(policy)


async def test_credentials_are_injected_into_plain_http(allowed: EchoServer, audit: Audit) -> None:
    dns = FakeDNS({"plain.test": ["127.0.0.1"]})
    policy = EgressPolicy(
        allow=["plain.test", f"127.0.0.1:{allowed.port}"], credentials={"plain.test": {"X-Api-Key": "k-123"}}
    )
    async with EgressProxy(policy, sandbox_id="sb-cred2", resolver=dns, audit=audit) as proxy:
        status, _ = await asyncio.to_thread(_urllib_get, proxy.url, f"http://plain.test:{allowed.port}/k")
    assert status == 200
    assert allowed.header(0, "X-Api-Key") == ["k-123"]


async def test_intercepted_host_header_must_match_the_connect_target(
    test_ca: TestCA, https_server: EchoServer, audit: Audit
) -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(
        allow=["api.test", f"127.0.0.1:{https_server.port}"], credentials={"api.test": {"Authorization": SECRET}}
    )
    async with EgressProxy(
        policy, sandbox_id="sb-host", resolver=dns, audit=audit, upstream_ssl_context=test_ca.client_context()
    ) as proxy:
        assert proxy.ca_pem is not None
        ca = proxy.ca_pem.decode()

        def go() -> bytes:
            sock, head = _raw_connect(proxy.address, f"api.test:{https_server.port}")
            assert head.startswith(b"HTTP/1.1 200")
            ctx = ssl.create_default_context(cadata=ca)
            with ctx.wrap_socket(sock, server_hostname="api.test") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
                return _recv_all(tls)

        reply = await asyncio.to_thread(go)
    assert reply.startswith(b"HTTP/1.1 403 ")
    assert https_server.requests == []
    assert audit[-1].decision == "deny"
    assert "Host header does not match" in audit[-1].rule


# -- the decision hook -------------------------------------------------------------------------


class Decider:
    """A plugin deciding per sandbox: sb-blocked gets nothing, sb-vip may reach 'extra.test', and
    'mirror.test' is rewritten to the allowed server's port."""

    def __init__(self, mirror_port: int) -> None:
        self.mirror_port = mirror_port
        self.seen: list[EgressRequest] = []

    @hookimpl
    def sandbox_egress_decide(self, request: EgressRequest) -> EgressDecision | None:
        self.seen.append(request)
        if request.sandbox_id == "sb-blocked":
            return EgressDecision.deny("sandbox over budget")
        if request.host == "extra.test" and request.sandbox_id == "sb-vip":
            return EgressDecision.allow("vip")
        if request.host == "mirror.test":
            return EgressDecision.allow("mirror", host="allowed.test", port=self.mirror_port)
        return None


@pytest.mark.parametrize(
    ("sandbox_id", "host", "status", "rule"),
    [
        ("sb-any", "allowed.test", 200, "allowed.test"),
        ("sb-blocked", "allowed.test", 403, "hook: sandbox over budget"),
        ("sb-any", "extra.test", 403, "no allow entry admits extra.test"),
        ("sb-vip", "extra.test", 200, "hook: vip"),
        ("sb-any", "mirror.test", 200, "hook: mirror (rewritten to allowed.test:"),
    ],
)
async def test_the_decision_hook_allows_denies_and_rewrites_per_sandbox(
    allowed: EchoServer, audit: Audit, sandbox_id: str, host: str, status: int, rule: str
) -> None:
    decider = Decider(allowed.port)
    registry = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[decider]))
    dns = FakeDNS({"allowed.test": ["127.0.0.1"], "extra.test": ["127.0.0.1"]})
    policy = EgressPolicy(allow=["allowed.test", f"127.0.0.1:{allowed.port}"])
    async with EgressProxy(
        policy, sandbox_id=sandbox_id, resolver=dns, audit=audit, decide=registry.egress_decide
    ) as proxy:
        got, _ = await asyncio.to_thread(_urllib_get, proxy.url, f"http://{host}:{allowed.port}/")
    assert got == status
    assert audit[0].rule.startswith(rule)
    assert decider.seen[0].sandbox_id == sandbox_id
    assert decider.seen[0].host == host
    if host == "mirror.test":
        assert allowed.header(0, "Host") == [f"allowed.test:{allowed.port}"]


async def test_a_hook_cannot_open_a_special_address_and_a_failing_hook_denies(audit: Audit, spy: ConnectSpy) -> None:
    async def approve_everything(*, request: EgressRequest) -> EgressDecision:
        return EgressDecision.allow("approved")

    def broken(*, request: EgressRequest) -> EgressDecision:
        raise RuntimeError("approval service down")

    dns = FakeDNS({"metadata.test": ["169.254.169.254"]})
    policy = EgressPolicy(allow=["public.test"])
    for decide in (approve_everything, broken):
        async with EgressProxy(
            policy, sandbox_id="sb-hook", resolver=dns, audit=audit, connector=spy, decide=decide
        ) as proxy:
            status, _ = await asyncio.to_thread(_urllib_get, proxy.url, "http://metadata.test/")
            assert status == 403
    assert spy.attempts == []
    assert "resolves to 169.254.169.254" in audit[0].rule
    assert audit[1].rule == "the decision hook failed (RuntimeError: approval service down)"


async def test_aclose_cuts_open_tunnels_and_is_idempotent(allowed: EchoServer) -> None:
    proxy = EgressProxy(EgressPolicy(allow=[f"127.0.0.1:{allowed.port}"]), sandbox_id="sb-close", audit=Audit())
    await proxy.start()
    sock, head = await asyncio.to_thread(_raw_connect, proxy.address, f"127.0.0.1:{allowed.port}")
    assert head.startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(proxy.aclose(), 10)
    await proxy.aclose()
    with sock:
        assert await asyncio.to_thread(sock.recv, 10) == b""


async def test_expect_100_continue_is_answered_by_the_proxy(proxy: EgressProxy, allowed: EchoServer) -> None:
    """A client that waits for ``100 Continue`` before its body (curl does for larger bodies) gets it
    from the proxy once the request is allowed, without waiting for a timeout."""
    assert isinstance(proxy.address, tuple)

    def go() -> tuple[bytes, bytes]:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.sendall(
                f"POST http://127.0.0.1:{allowed.port}/up HTTP/1.1\r\nHost: 127.0.0.1:{allowed.port}\r\n"
                "Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode()
            )
            interim = sock.recv(4096)
            sock.sendall(b"hello")
            return interim, _recv_all(sock)

    interim, reply = await asyncio.to_thread(go)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert b" 200 " in reply.split(b"\r\n", 1)[0]
    assert allowed.requests[0]["body_size"] == 5
    assert allowed.header(0, "Expect") == []


async def test_a_sandbox_cannot_exhaust_the_proxys_connections(allowed: EchoServer, audit: Audit) -> None:
    policy = EgressPolicy(allow=[f"127.0.0.1:{allowed.port}"])
    async with EgressProxy(policy, sandbox_id="sb-cap", audit=audit, max_connections=2) as proxy:
        assert isinstance(proxy.address, tuple)
        held = [await asyncio.to_thread(socket.create_connection, proxy.address, 10) for _ in range(2)]
        try:
            third = await asyncio.to_thread(socket.create_connection, proxy.address, 10)
            with third:
                reply = await asyncio.to_thread(_recv_all, third)
        finally:
            for sock in held:
                sock.close()
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert audit[0].rule == "connection limit 2"


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("api.test", True),
        ("API.test.", True),
        ("api.test:443", True),  # the default port written out
        ("api.test:8443", False),
        ("other.test", False),
        ("api.test.evil.test", False),
        ("", False),
        ("api.test:x", False),
    ],
)
def test_host_header_matching(header: str, matches: bool) -> None:
    assert host_matches(header, "api.test", 443) is matches


async def test_the_hook_decides_each_request_inside_an_intercepted_tunnel(
    test_ca: TestCA, https_server: EchoServer, audit: Audit, tmp_path: Path
) -> None:
    """With credentials the proxy sees each HTTPS request, so an application can refuse one path of an
    API (or count requests) while the key stays outside the sandbox; every request is audited."""
    seen: list[EgressRequest] = []

    def decide(*, request: EgressRequest) -> EgressDecision | None:
        seen.append(request)
        if request.target.endswith("/admin"):
            return EgressDecision.deny("admin endpoints are off")
        return None

    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = EgressPolicy(
        allow=["api.test", f"127.0.0.1:{https_server.port}"], credentials={"api.test": {"Authorization": SECRET}}
    )
    async with EgressProxy(
        policy,
        sandbox_id="sb-paths",
        resolver=dns,
        audit=audit,
        decide=decide,
        upstream_ssl_context=test_ca.client_context(),
    ) as proxy:
        assert proxy.ca_pem is not None
        bundle = tmp_path / "sandbox-ca.pem"
        bundle.write_bytes(proxy.ca_pem)

        def go(path: str) -> int:
            url = f"https://api.test:{https_server.port}{path}"
            return requests.get(url, proxies={"https": proxy.url}, verify=str(bundle), timeout=10).status_code

        assert await asyncio.to_thread(go, "/v1/models") == 200
        assert await asyncio.to_thread(go, "/admin") == 403
    assert [r["path"] for r in https_server.requests] == ["/v1/models"]
    assert [(r.kind, r.target.rsplit("/", 1)[-1]) for r in seen] == [
        ("connect", ""),
        ("http", "models"),
        ("connect", ""),
        ("http", "admin"),
    ]
    http = [(r.decision, r.status, r.target.rsplit("/", 1)[-1]) for r in audit if r.kind == "http"]
    assert http == [("allow", 200, "models"), ("deny", 403, "admin")]
    assert all(r.intercepted for r in audit)
