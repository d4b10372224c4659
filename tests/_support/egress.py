"""Loopback servers and test doubles for the egress-proxy tests (and the tiers' tests that reuse them).

* :class:`EchoServer` — a threaded HTTP/1.1 server on 127.0.0.1 answering every request with a JSON
  echo of what it received (method, path, headers, body size), counting hits; optionally HTTPS with a
  certificate for a test name from :class:`TestCA`.
* :class:`TestCA` — a throwaway CA (``cryptography``) issuing server certificates for test names.
* :class:`FakeDNS` — an injectable resolver mapping test names to addresses, counting lookups.
* :class:`ConnectSpy` — an injectable connector recording every (address, port) the proxy tried,
  connecting only to 127.0.0.1 and refusing anything else without touching the network.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: Python 3.13 verifies with VERIFY_X509_STRICT: a CA needs key usage and a key identifier, a leaf the AKI
_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class TestCA:
    """A CA for test servers; ``cert_pem`` is what a client (or the proxy's upstream context) trusts."""

    __test__ = False

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alphora test CA")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.cert_pem.decode())
        return ctx

    def server_context(self, names: Iterable[str], directory: Path) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test server")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        path = directory / "server.pem"
        path.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(path))
        return ctx


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them
    server: _Server

    def _chunked_body(self) -> bytes | None:
        """A chunked request body (None when the client stopped in the middle of it)."""
        body = b""
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return body
            body += self.rfile.read(size)
            self.rfile.readline(1024)

    def _answer(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunked = self._chunked_body()
            if chunked is None:
                self.close_connection = True
                return
            body = chunked
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_size": len(body),
        }
        self.server.requests.append(seen)
        payload = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    connections: int

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        self.connections += 1
        return sock, addr


class EchoServer:
    """``with EchoServer() as srv:`` — ``srv.port``, ``srv.requests`` (what arrived), ``srv.connections``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.requests = []
        self._srv.connections = 0
        if tls is not None:
            self._srv.socket = tls.wrap_socket(self._srv.socket, server_side=True, do_handshake_on_connect=False)
        self.port: int = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._srv.requests

    @property
    def connections(self) -> int:
        return self._srv.connections

    def header(self, index: int, name: str) -> list[str]:
        """Every value of header ``name`` in request ``index``."""
        return [v for k, v in self.requests[index]["headers"] if k.lower() == name.lower()]

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(5)


class FakeDNS:
    """An injectable resolver: ``names`` maps a test name to its answers; a list of lists answers
    each lookup in turn (the last one repeats), which is how a rebinding server behaves."""

    def __init__(self, names: dict[str, Sequence[str] | Sequence[Sequence[str]]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.lookups.append(host)
        if host not in self.names:
            raise OSError(f"test resolver: unknown name {host!r}")
        answers = self.names[host]
        if answers and not isinstance(answers[0], str):
            index = min(self.lookups.count(host), len(answers)) - 1
            return list(answers[index])
        return [str(a) for a in answers]


class ConnectSpy:
    """An injectable connector recording every attempt. It connects only to 127.0.0.1 and raises
    for anything else, so a test can prove the proxy never tried (no packet leaves the machine)."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    async def __call__(self, address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.attempts.append((address, port))
        if address != "127.0.0.1":
            raise ConnectionRefusedError(f"ConnectSpy refuses {address}:{port} (tests only reach 127.0.0.1)")
        return await asyncio.open_connection(address, port)
