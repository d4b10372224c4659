"""The egress proxy attacked the way sandboxed code would: raw bytes on a socket to the proxy.

The sandbox can send anything, so every test here speaks to the proxy from a raw socket (no HTTP
client library smoothing the input) and checks two things: what the proxy answered, and where it
tried to connect (``ConnectSpy``, which only ever reaches 127.0.0.1 and records every attempt). Test
names map to arbitrary addresses through the injectable resolver; nothing leaves the machine.

Each attack is listed in docs/egress.md ("Attacks we test").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from alphora.sandbox import EgressDecision, EgressPolicy, EgressProxy, EgressRequest
from alphora.sandbox.egress import AuditRecord
from alphora.sandbox.egress.proxy import host_matches
from alphora.sandbox.egress.tls import client_hello_message, client_hello_sni
from tests._support.egress import ConnectSpy, EchoServer, FakeDNS, TestCA

pytestmark = pytest.mark.timeout(30)

#: generous bound for one exchange with the proxy (the proxy answers in milliseconds)
IO_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def test_ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    """The one server the policies below admit (as ``allowed.test`` and by address)."""
    with EchoServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def https_server(test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    with EchoServer(tls=test_ca.server_context(["api.test"], tmp_path_factory.mktemp("tls"))) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: EchoServer, https_server: EchoServer) -> None:
    server.requests.clear()
    https_server.requests.clear()


class Audit(list[AuditRecord]):
    def __call__(self, record: AuditRecord) -> None:
        self.append(record)


def _numeric_resolver() -> Callable[[str], Any]:
    """What the default resolver (glibc getaddrinfo) makes of a numeric spelling, without ever asking
    a DNS server (AI_NUMERICHOST): ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` are all
    127.0.0.1 to it. Names that are not numbers fail."""

    async def resolve(host: str) -> list[str]:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]

    return resolve


@dataclasses.dataclass
class Run:
    proxy: EgressProxy
    spy: ConnectSpy  # every (address, port) the proxy tried to connect to
    audit: Audit  # every decision it recorded


@asynccontextmanager
async def running(
    allow: list[str],
    *,
    resolver: Any = None,
    decide: Any = None,
    credentials: dict[str, dict[str, str]] | None = None,
    upstream_ssl_context: ssl.SSLContext | None = None,
    **kwargs: Any,
) -> AsyncIterator[Run]:
    spy, audit = ConnectSpy(), Audit()
    policy = EgressPolicy(allow=allow, credentials=credentials or {})
    proxy = EgressProxy(
        policy,
        sandbox_id="sb-hostile",
        resolver=resolver if resolver is not None else FakeDNS({"allowed.test": ["127.0.0.1"]}),
        decide=decide,
        audit=audit,
        connector=spy,
        upstream_ssl_context=upstream_ssl_context,
        **kwargs,
    )
    async with proxy:
        yield Run(proxy, spy, audit)


async def exchange(proxy: EgressProxy, data: bytes, *, then: bytes = b"") -> bytes:
    """Send ``data`` (and ``then`` once the proxy answered a head), half-close, and read until the proxy
    closes. The sending runs beside the reading: the proxy may answer and close mid-send (huge heads)."""
    assert isinstance(proxy.address, tuple)
    reader, writer = await asyncio.open_connection(*proxy.address)
    answered = asyncio.Event()

    async def send() -> None:
        with contextlib.suppress(OSError):
            writer.write(data)
            await writer.drain()
            if then:
                await answered.wait()
                writer.write(then)
                await writer.drain()
            writer.write_eof()

    sending = asyncio.ensure_future(send())
    got = b""
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), IO_TIMEOUT)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got:
                answered.set()
        return got
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.close()


def statuses(answer: bytes) -> list[int]:
    """The status codes of every HTTP response head in ``answer`` (the echo server's bodies hold no status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def get(target: str, host: str = "x", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def connect(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


# -- who decides what: names, addresses and their spellings ---------------------------------------

LOOPBACK_SPELLINGS = [
    "2130706433",  # decimal
    "0177.0.0.1",  # octal
    "0x7f000001",  # hex
    "0x7f.1",
    "127.1",  # short form
    "0177.1",
    "127.0.0.1.",  # trailing dot
    "[::ffff:7f00:1]",  # IPv4-mapped IPv6
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "[2002:7f00:1::1]",  # 6to4 embedding 127.0.0.1
    "[64:ff9b::7f00:1]",  # NAT64 well-known prefix
    "[fe80::1%eth0]",  # zone id
    "[fe80::1%25eth0]",  # URI-encoded zone id
    "0.0.0.0",  # "this host" on Linux
    "0",
    "[::]",
    "169.254.169.254",  # cloud metadata
    "[::ffff:169.254.169.254]",
    "[fec0::1]",  # IPv6 site-local (deprecated, still routed inside networks)
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
@pytest.mark.parametrize("kind", ["connect", "http"])
async def test_no_spelling_of_an_internal_address_gets_past_an_allow_all_hook(
    server: EchoServer, spelling: str, kind: str
) -> None:
    """An application hook that allows everything still cannot open a loopback, link-local or other
    internal address, however the sandbox spells it: the proxy resolves (here the way glibc would)
    and checks the address itself, and refuses before any connection."""
    hook = lambda *, request: EgressDecision.allow("allow-all")  # noqa: E731
    async with running([], resolver=_numeric_resolver(), decide=hook) as run:
        target = f"{spelling}:{server.port}"
        data = connect(target) if kind == "connect" else get(f"http://{target}/")
        answer = await exchange(run.proxy, data)
    assert statuses(answer)[0] in (400, 403, 502), answer[:200]
    assert run.spy.attempts == []
    assert server.requests == []
    assert [r.decision for r in run.audit] == ["deny"]


@pytest.mark.parametrize(
    "answers",
    [
        [],
        ["10.0.0.1"],
        ["93.184.216.34", "10.0.0.1"],  # a public address first does not launder the private one
        ["10.0.0.1", "93.184.216.34"],
        ["169.254.169.254"],
        ["::ffff:169.254.169.254"],
        ["fe80::1"],
        ["fe80::1%eth0"],
        ["0.0.0.0"],
        ["::"],
        ["224.0.0.1"],
        ["ff02::1"],
        ["255.255.255.255"],
        ["100.64.0.1"],
        ["fec0::1"],
        ["fd00::1"],
        ["64:ff9b::a9fe:a9fe"],
        ["2002:a9fe:a9fe::1"],
        ["not-an-address"],
        ["127.0.0.1 "],
    ],
    ids=lambda answers: "+".join(answers).replace(" ", "_") or "no-answer",
)
async def test_a_resolver_answer_with_any_internal_or_bad_address_refuses_before_connecting(
    answers: list[str],
) -> None:
    dns = FakeDNS({"allowed.test": answers})
    async with running(["allowed.test"], resolver=dns) as run:
        answer = await exchange(run.proxy, connect("allowed.test:443"))
    assert statuses(answer) in ([403], [502]), answer[:200]
    assert run.spy.attempts == []
    assert [(r.decision, r.address) for r in run.audit] == [("deny", "")]


@pytest.mark.parametrize(
    "target",
    [
        "[2002:a01:203::1]:443",  # 6to4 embedding 10.1.2.3: an IPv6 host on the internet, not 10.1.2.3
        "[2001:0:4136:e378:8000:63bf:f5fe:fdfc]:443",  # Teredo, client 10.1.2.3
    ],
)
async def test_an_ipv4_allow_entry_does_not_admit_ipv6_tunnel_addresses_that_embed_it(target: str) -> None:
    """``::ffff:10.1.2.3`` *is* 10.1.2.3 (a dual-stack socket dials it over IPv4); a 6to4 or Teredo
    address only carries the IPv4 address in its bits and is a different host reached over IPv6."""
    async with running(["10.1.2.0/24"]) as run:
        answer = await exchange(run.proxy, connect(target))
    assert statuses(answer) == [403], answer[:200]
    assert run.spy.attempts == []


@pytest.mark.parametrize(
    ("name", "admitted"),
    [
        ("a.example.test", True),
        ("A.B.EXAMPLE.TEST.", True),
        ("example.test", False),  # a wildcard is below the name, not the name
        ("evilexample.test", False),
        ("example.test.evil.test", False),
        ("a.example.test.evil.test", False),
        ("a.example.testx", False),
        ("xn--a-example-test", False),
    ],
)
def test_wildcard_edges(name: str, admitted: bool) -> None:
    policy = EgressPolicy(allow=["*.example.test"])
    assert (policy.match_name(name, 443) is not None) is admitted


@pytest.mark.parametrize(
    ("address", "port", "admitted"),
    [
        ("10.1.2.0", 443, True),
        ("10.1.2.255", 443, True),
        ("10.1.1.255", 443, False),
        ("10.1.3.0", 443, False),
        ("10.1.2.7", 80, False),
        ("::ffff:10.1.2.7", 443, True),  # the same host, spelled as IPv6
        ("fd00::a01:207", 443, False),
    ],
)
def test_cidr_edges(address: str, port: int, admitted: bool) -> None:
    policy = EgressPolicy(allow=["10.1.2.0/24:443"])
    assert (policy.match_address(address, port) is not None) is admitted


@pytest.mark.parametrize(
    "data",
    [
        connect("allowed.test@evil.test:443"),  # userinfo in an authority
        connect("allowed.test:0"),
        connect("allowed.test:65536"),
        connect("allowed.test:-1"),
        connect("allowed.test:+443"),
        connect("allowed.test:0x1bb"),
        connect("allowed.test:"),
        connect("allowed.test"),
        connect("allowed.test:443:443"),
        connect("[allowed.test]:443"),
        connect("allowed.test%2f:443"),
        connect("allowed.test%0d%0aX:443"),
        connect("xn--:443"),
        connect("a" * 300 + ".test:443"),
        connect("http://allowed.test:443/"),
        connect("allowed.test:443/path"),
        "CONNECT \uff41llowed.test:443 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # fullwidth 'a', raw UTF-8
        get("allowed.test:80"),  # authority-form for GET
        get("http://allowed.test:0/"),
        get("http://allowed.test:65536/"),
        get("http://allowed.test:-1/"),
        get("https://allowed.test/"),
        get("ftp://allowed.test/"),
        get("//allowed.test/"),
    ],
    ids=lambda d: d.split(b"\r\n", 1)[0].decode()[:60],
)
async def test_malformed_targets_are_refused_with_400_before_connecting(data: bytes) -> None:
    async with running(["allowed.test"]) as run:
        answer = await exchange(run.proxy, data)
    assert statuses(answer) == [400], answer[:300]
    assert run.spy.attempts == []
    assert [r.decision for r in run.audit] in ([], ["deny"])


async def test_userinfo_and_the_host_header_do_not_choose_the_destination(server: EchoServer) -> None:
    """The absolute URI decides; a Host header naming another host and userinfo naming the allowed one
    change nothing: the proxy connects where it decided and sends the server its own Host."""
    allowed = f"127.0.0.1:{server.port}"
    async with running([allowed]) as run:
        # userinfo names the allowed address; the host part (evil.test) is what would be dialled
        first = await exchange(run.proxy, get(f"http://{allowed}@evil.test/", host=allowed))
        second = await exchange(
            run.proxy, get(f"http://{allowed}/hi", host="evil.test", extra="X-Forwarded-Host: evil.test\r\n")
        )
    assert statuses(first) == [403]
    assert statuses(second) == [200]
    assert run.spy.attempts == [("127.0.0.1", server.port)]
    assert [r["path"] for r in server.requests] == ["/hi"]
    assert server.header(0, "Host") == [allowed]


async def test_the_name_resolved_and_dialled_is_the_name_decided(server: EchoServer) -> None:
    """Case, a trailing dot and a Host header naming another host: the policy, the hook and the resolver
    all see one normalized name, and the bytes reach the address resolved for it."""
    dns = FakeDNS({"allowed.test": ["127.0.0.1"]})
    hosts: list[str] = []

    def decide(*, request: EgressRequest) -> None:
        hosts.append(request.host)

    allow = [f"allowed.test:{server.port}", f"127.0.0.1:{server.port}"]
    async with running(allow, resolver=dns, decide=decide) as run:
        inner = b"GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
        answer = await exchange(run.proxy, connect(f"ALLOWED.Test.:{server.port}"), then=inner)
    assert statuses(answer)[:2] == [200, 200]
    assert hosts == ["allowed.test"]
    assert dns.lookups == ["allowed.test"]
    assert run.spy.attempts == [("127.0.0.1", server.port)]
    assert run.audit[-1].rule == f"allowed.test:{server.port}"


async def test_a_resolver_that_hangs_or_raises_refuses_in_bounded_time() -> None:
    async def hangs(host: str) -> list[str]:
        await asyncio.sleep(60)
        return ["127.0.0.1"]

    async def raises(host: str) -> list[str]:
        raise RuntimeError("resolver bug")

    for resolver in (hangs, raises):
        async with running(["allowed.test"], resolver=resolver, connect_timeout=0.3) as run:
            answer = await asyncio.wait_for(exchange(run.proxy, connect("allowed.test:443")), 5)
        assert statuses(answer) == [502], answer[:200]
        assert run.spy.attempts == []


# -- one request decided, one request carried: pipelining and smuggling ---------------------------


def _admin_off(*, request: EgressRequest) -> EgressDecision | None:
    """An application rule the sandbox tries to get around: nothing under /admin."""
    if urlsplit(request.target).path.startswith("/admin"):
        return EgressDecision.deny("admin is off")
    return None


async def test_pipelined_requests_are_each_decided(server: EchoServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with running([f"127.0.0.1:{server.port}"], decide=_admin_off) as run:
        answer = await exchange(
            run.proxy, get(f"{base}/one") + get(f"{base}/two") + get(f"{base}/admin") + get(f"{base}/three")
        )
    assert statuses(answer) == [200, 200, 403]  # the denial closes the connection: /three is never read
    assert [r["path"] for r in server.requests] == ["/one", "/two"]
    assert [(r.decision, r.target.rsplit("/", 1)[-1]) for r in run.audit] == [
        ("allow", "one"),
        ("allow", "two"),
        ("deny", "admin"),
    ]


SMUGGLE = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLE_HEX = f"{len(SMUGGLE):x}"
SMUGGLING = {
    "cl-te": "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
    "te-cl": "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    + SMUGGLE_HEX
    + "\r\n"
    + SMUGGLE
    + "\r\n0\r\n\r\n",
    "two-cl": "Content-Length: 0\r\nContent-Length: {n}\r\n\r\n" + SMUGGLE,
    "cl-list": "Content-Length: 0, {n}\r\n\r\n" + SMUGGLE,
    "te-garbage": "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLE,
    "te-xchunked": "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
    "te-space": "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
    "te-obs-fold": "Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
    "bare-lf": "Content-Length: 0\n\n" + SMUGGLE,
    "chunk-size-garbage": "Transfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n" + SMUGGLE,
    "chunk-ext-lf": "Transfer-Encoding: chunked\r\n\r\n0;\n\r\n" + SMUGGLE,
    "body-is-a-request": "Content-Length: {n}\r\n\r\n" + SMUGGLE,
}


@pytest.mark.parametrize("tail", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_no_second_unchecked_request_reaches_the_server(server: EchoServer, tail: str) -> None:
    """A request hidden in another's body (or framing the proxy and the server might read differently)
    never reaches the server as a request of its own: the proxy re-frames what it forwards, and a
    request it reads from the rest of the stream is decided like any other (here: refused)."""
    head = f"POST http://127.0.0.1:{server.port}/upload HTTP/1.1\r\nHost: x\r\n"
    data = (head + tail.replace("{n}", str(len(SMUGGLE)))).encode()
    async with running([f"127.0.0.1:{server.port}"], decide=_admin_off) as run:
        answer = await exchange(run.proxy, data)
    codes = statuses(answer)
    assert codes, answer[:300]
    assert all(c in (200, 400, 403, 501) for c in codes), answer[:300]
    assert [r["path"] for r in server.requests] in ([], ["/upload"])  # never /admin
    for i in range(len(server.requests)):  # one framing only: a next hop trusting Content-Length desyncs
        assert not (server.header(i, "Content-Length") and server.header(i, "Transfer-Encoding"))
    assert len(server.requests) == codes.count(200)
    assert len(server.requests) == len([r for r in run.audit if r.decision == "allow" and r.status == 200])


async def test_crlf_in_the_target_is_refused(server: EchoServer) -> None:
    raw = f"GET http://127.0.0.1:{server.port}/a\rX: y HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    async with running([f"127.0.0.1:{server.port}"]) as run:
        answer = await exchange(run.proxy, raw)
    assert statuses(answer) == [400]
    assert run.spy.attempts == []
    assert server.requests == []


# -- resources: huge heads, slow heads, many connections ----------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET http://allowed.test/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n",
        b"GET http://allowed.test/" + b"a" * 2_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://allowed.test/ HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200_000 + b"\r\n",
        b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n",
    ],
    ids=["long-header", "long-target", "many-headers", "long-connect-header"],
)
async def test_absurdly_long_heads_get_a_4xx_and_are_not_buffered(data: bytes) -> None:
    async with running(["allowed.test"]) as run:
        answer = await exchange(run.proxy, data)
    # the proxy stops reading at its limit (16 KiB): it answers and closes while the client still sends
    assert statuses(answer) in ([], [400], [431]), answer[:200]
    assert run.spy.attempts == []


async def test_slowloris_is_cut_at_the_header_timeout(server: EchoServer) -> None:
    """A head trickled one line at a time never completes: the connection is closed once the head has
    taken ``header_timeout`` in total, not kept alive by each new byte."""
    async with running([f"127.0.0.1:{server.port}"], header_timeout=0.5) as run:
        assert isinstance(run.proxy.address, tuple)
        reader, writer = await asyncio.open_connection(*run.proxy.address)
        writer.write(f"GET http://127.0.0.1:{server.port}/ HTTP/1.1\r\n".encode())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        closed_after = None
        for _ in range(100):  # at most 10 s of dripping
            try:
                writer.write(b"X: y\r\n")
                await writer.drain()
                if await asyncio.wait_for(reader.read(65536), 0.1) == b"":
                    closed_after = loop.time() - t0
                    break
            except asyncio.TimeoutError:
                pass  # still open: drip the next line
            except OSError:  # reset or broken pipe: closed
                closed_after = loop.time() - t0
                break
        writer.close()
    assert closed_after is not None, "the proxy kept a trickling head open for 10 s"
    assert closed_after < 5.0
    assert run.spy.attempts == []
    assert server.requests == []


async def test_idle_connections_at_the_cap_do_not_lock_out_the_next_sandbox_request(server: EchoServer) -> None:
    """Idle connections fill the cap; the extra ones are refused (503), the idle ones are cut at the
    header timeout, and the proxy then serves requests again."""
    async with running([f"127.0.0.1:{server.port}"], max_connections=4, header_timeout=0.5) as run:
        assert isinstance(run.proxy.address, tuple)
        idle = [await asyncio.open_connection(*run.proxy.address) for _ in range(4)]
        await asyncio.sleep(0.05)
        over = await exchange(run.proxy, get(f"http://127.0.0.1:{server.port}/over"))
        for reader, _writer in idle:  # each idle connection is closed by the proxy
            assert await asyncio.wait_for(reader.read(), IO_TIMEOUT) == b""
        for _reader, writer in idle:
            writer.close()
        after = await exchange(run.proxy, get(f"http://127.0.0.1:{server.port}/after"))
    assert statuses(over) == [503]
    assert statuses(after) == [200]
    assert [r["path"] for r in server.requests] == ["/after"]


async def test_tunnels_nested_through_the_proxy_itself_stop_at_the_cap(server: EchoServer) -> None:
    """With 127.0.0.1 allowed on every port, the sandbox can CONNECT to the proxy itself, and again
    inside that tunnel: each level is one more client connection of the proxy, so the nesting ends
    past ``max_connections`` with a 503, and the proxy serves normally once the chain is closed."""
    async with running(["127.0.0.1"], max_connections=6) as run:
        assert isinstance(run.proxy.address, tuple)
        host, port = run.proxy.address
        reader, writer = await asyncio.open_connection(host, port)
        codes = []
        for _ in range(20):
            writer.write(connect(f"127.0.0.1:{port}"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
            codes += statuses(head)
            if codes[-1] != 200:
                break
        writer.close()
        await asyncio.sleep(0.2)  # the chain unwinds
        after = await exchange(run.proxy, get(f"http://127.0.0.1:{server.port}/after"))
    assert codes[-1] == 503
    assert len(codes) <= 6 + 1
    assert statuses(after) == [200]


# -- tunnels -----------------------------------------------------------------------------------


async def test_http_inside_an_allowed_tunnel_only_reaches_the_checked_address(server: EchoServer) -> None:
    """A CONNECT tunnel that does not start with TLS is not parsed (documented): the bytes, whatever
    host they name, reach only the address the proxy checked for the CONNECT target."""
    inner = b"GET http://evil.test/steal HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
    async with running([f"allowed.test:{server.port}", f"127.0.0.1:{server.port}"]) as run:
        answer = await exchange(run.proxy, connect(f"127.0.0.1:{server.port}"), then=inner)
    assert statuses(answer)[0] == 200
    assert run.spy.attempts == [("127.0.0.1", server.port)]
    assert server.header(0, "Host") == ["evil.test"]  # it arrived at our server, the one that was checked
    assert run.audit[-1].address == "127.0.0.1"
    assert run.audit[-1].destination == f"127.0.0.1:{server.port}"


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and (chunk := sock.recv(4096)):
        head += chunk
    return head


def _hello_for(name: str) -> bytes:
    """The first flight (TLS records with the ClientHello) that ``ssl`` sends for ``name``."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _with_extra_server_name(records: bytes, name: str, *, same_extension: bool) -> bytes:
    """``records`` (one record holding a ClientHello) with a second server name appended: either a
    second ``server_name`` extension, or a second entry in the first one's name list."""
    found = client_hello_message(records)
    assert found is not None
    assert found[1] == len(records)
    msg = found[0]
    body = msg[4:]
    p = 34
    p += 1 + body[p]
    p += 2 + int.from_bytes(body[p : p + 2], "big")
    p += 1 + body[p]
    ext_start = p + 2
    exts = body[ext_start:]
    entry = b"\x00" + len(name).to_bytes(2, "big") + name.encode()
    if same_extension:
        q = 0
        while int.from_bytes(exts[q : q + 2], "big") != 0:
            q += 4 + int.from_bytes(exts[q + 2 : q + 4], "big")
        ext_len = int.from_bytes(exts[q + 2 : q + 4], "big")
        data = exts[q + 4 : q + 4 + ext_len]
        names = data[2:] + entry
        data = len(names).to_bytes(2, "big") + names
        exts = exts[:q] + b"\x00\x00" + len(data).to_bytes(2, "big") + data + exts[q + 4 + ext_len :]
    else:
        data = (len(entry)).to_bytes(2, "big") + entry
        exts = exts + b"\x00\x00" + len(data).to_bytes(2, "big") + data
    body = body[:p] + len(exts).to_bytes(2, "big") + exts
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg


def test_the_hello_helpers_build_what_they_say() -> None:
    hello = _hello_for("evil.test")
    found = client_hello_message(hello)
    assert found is not None
    assert client_hello_sni(found[0]) == ("evil.test", False)
    doubled = _with_extra_server_name(hello, "allowed.test", same_extension=True)
    assert doubled.count(b"allowed.test") == 1
    assert doubled.count(b"evil.test") == 1


@pytest.mark.parametrize(
    "hello",
    [
        pytest.param(lambda: _hello_for("evil.test"), id="other-name"),
        pytest.param(
            lambda: _with_extra_server_name(_hello_for("evil.test"), "allowed.test", same_extension=False),
            id="second-server-name-extension",
        ),
        pytest.param(
            lambda: _with_extra_server_name(_hello_for("allowed.test"), "evil.test", same_extension=True),
            id="second-name-in-the-list",
        ),
        pytest.param(
            lambda: _with_extra_server_name(_hello_for("evil.test"), "allowed.test", same_extension=True),
            id="second-name-in-the-list-allowed-last",
        ),
    ],
)
async def test_a_client_hello_that_names_another_host_in_any_way_is_cut(
    server: EchoServer, hello: Callable[[], bytes]
) -> None:
    """SNI checks against the CONNECT target, also when the hello comes in the CONNECT's own packet
    and when it names two hosts (servers differ in which one they take): cut before a byte is sent."""
    async with running([f"allowed.test:{server.port}", f"127.0.0.1:{server.port}"]) as run:
        answer = await exchange(run.proxy, connect(f"allowed.test:{server.port}") + hello())
    assert statuses(answer) == [200]
    assert run.audit[-1].decision == "deny", run.audit[-1].rule
    assert run.audit[-1].bytes_up == 0
    assert server.requests == []


async def test_an_intercepted_tunnel_refuses_targets_that_are_not_a_path(
    test_ca: TestCA, https_server: EchoServer, tmp_path: Path
) -> None:
    """Inside a tunnel the proxy terminates (credentials), the hook decides by URL. An absolute-form or
    authority-form target would show the hook one URL while the server reads another path: refused."""
    async with running(
        ["api.test", f"127.0.0.1:{https_server.port}"],
        resolver=FakeDNS({"api.test": ["127.0.0.1"]}),
        decide=_admin_off,
        credentials={"api.test": {"Authorization": "Bearer sk-hostile"}},
        upstream_ssl_context=test_ca.client_context(),
    ) as run:
        assert run.proxy.ca_pem is not None
        ctx = ssl.create_default_context(cadata=run.proxy.ca_pem.decode())
        address = run.proxy.address
        assert isinstance(address, tuple)

        def fetch(target: str) -> bytes:
            with socket.create_connection(address, timeout=IO_TIMEOUT) as sock:
                sock.sendall(connect(f"api.test:{https_server.port}"))
                assert _read_head(sock).startswith(b"HTTP/1.1 200")
                with ctx.wrap_socket(sock, server_hostname="api.test") as tls:
                    tls.sendall(f"GET {target} HTTP/1.1\r\nHost: api.test:{https_server.port}\r\n\r\n".encode())
                    return _read_head(tls)

        answers = [
            await asyncio.to_thread(fetch, target)
            for target in [
                f"https://api.test:{https_server.port}/admin",
                f"http://api.test:{https_server.port}/admin",
                f"api.test:{https_server.port}",
                "/ok",
            ]
        ]
    assert [statuses(a) for a in answers] == [[400], [400], [400], [200]], answers
    assert [r["path"] for r in https_server.requests] == ["/ok"]


async def test_plain_bytes_into_a_credential_hosts_tunnel_reach_nothing(
    test_ca: TestCA, https_server: EchoServer
) -> None:
    """For a host with credentials the proxy terminates TLS; a sandbox that skips TLS inside the tunnel
    (hoping the proxy injects the key into cleartext, or relays it raw) gets the tunnel cut."""
    async with running(
        ["api.test", f"127.0.0.1:{https_server.port}"],
        resolver=FakeDNS({"api.test": ["127.0.0.1"]}),
        credentials={"api.test": {"Authorization": "Bearer sk-hostile"}},
        upstream_ssl_context=test_ca.client_context(),
    ) as run:
        inner = f"GET / HTTP/1.1\r\nHost: api.test:{https_server.port}\r\n\r\n".encode()
        answer = await exchange(run.proxy, connect(f"api.test:{https_server.port}"), then=inner)
    assert statuses(answer) == [200]  # the CONNECT; then the proxy's TLS handshake fails and it closes
    assert b"sk-hostile" not in answer
    assert run.spy.attempts == []  # intercepted hosts are dialled per request: none was made
    assert https_server.requests == []
    assert run.audit[-1].decision == "deny"
    assert "TLS handshake" in run.audit[-1].rule


# -- the decision hook misbehaving --------------------------------------------------------------

GARBAGE: dict[str, Callable[..., Any]] = {
    "a-string": lambda *, request: "allow",
    "true": lambda *, request: True,
    "a-dict": lambda *, request: {"action": "allow"},
    "raises": lambda *, request: 1 / 0,
    "host-not-a-string": lambda *, request: EgressDecision(action="allow", host=123),  # type: ignore[arg-type]
    "port-a-bool": lambda *, request: EgressDecision(action="allow", port=True),
    "port-a-string": lambda *, request: EgressDecision(action="allow", port="80"),  # type: ignore[arg-type]
    "port-out-of-range": lambda *, request: EgressDecision(action="allow", port=70000),
    "host-with-path": lambda *, request: EgressDecision(action="allow", host="allowed.test/x"),
}


async def _raising_coroutine(*, request: EgressRequest) -> EgressDecision:
    raise RuntimeError("approval service down")


@pytest.mark.parametrize("hook", [*GARBAGE.values(), _raising_coroutine], ids=[*GARBAGE, "async-raises"])
async def test_a_broken_hook_fails_closed_with_an_answer_and_an_audit_record(
    server: EchoServer, hook: Callable[..., Any]
) -> None:
    async with running([f"127.0.0.1:{server.port}"], decide=hook) as run:
        answer = await exchange(run.proxy, get(f"http://127.0.0.1:{server.port}/"))
    assert statuses(answer) in ([403], [502]), answer[:200]
    assert run.spy.attempts == []
    assert [r.decision for r in run.audit] == ["deny"]
    assert server.requests == []


async def test_a_slow_hook_holds_only_its_own_request(server: EchoServer) -> None:
    """An async hook waiting (say, for a human) does not stall the proxy's other connections."""
    release = asyncio.Event()

    async def decide(*, request: EgressRequest) -> EgressDecision | None:
        if request.target.endswith("/wait"):
            await release.wait()
        return None

    base = f"http://127.0.0.1:{server.port}"
    async with running([f"127.0.0.1:{server.port}"], decide=decide) as run:
        waiting = asyncio.ensure_future(exchange(run.proxy, get(f"{base}/wait")))
        quick = await asyncio.wait_for(exchange(run.proxy, get(f"{base}/quick", extra="Connection: close\r\n")), 5)
        assert not waiting.done()
        release.set()
        slow = await asyncio.wait_for(waiting, IO_TIMEOUT)
    assert statuses(quick) == [200]
    assert statuses(slow)[:1] == [200]


@pytest.mark.parametrize(
    ("header", "matches"),
    [("[api.test]", False), ("[api.test]:443", False), ("api.test]junk", False), ("[api.test]junk", False)],
)
def test_a_host_header_puts_only_an_ipv6_address_in_brackets(header: str, matches: bool) -> None:
    assert host_matches(header, "api.test", 443) is matches
