"""TLS for the egress proxy: the per-sandbox CA, leaf certificates for intercepted hosts, a TLS
server stream over any byte stream (``ssl.MemoryBIO``, so it works on every supported Python), and
the SNI of a ClientHello read without terminating TLS.

The CA exists only in the proxy's memory: its private key is never written anywhere and never
leaves the host; the sandbox gets the certificate (``EgressProxy.ca_pem``) to trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .streams import ByteStream

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import Certificate

__all__ = ["CertificateAuthority", "TLSStream", "client_hello_sni"]


class CertificateAuthority:
    """A CA made for one sandbox (EC P-256, valid for ``days``), issuing one leaf per host on demand."""

    def __init__(self, common_name: str, *, days: int = 30) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self._cert: Certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem: bytes = self._cert.public_bytes(serialization.Encoding.PEM)
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _leaf(self, host: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        from cryptography.hazmat.primitives import serialization

        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=min(self._days, 7)))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), key

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for ``host`` (cached per host), HTTP/1.1 only."""
        ctx = self._contexts.get(host)
        if ctx is not None:
            return ctx
        from cryptography.hazmat.primitives import serialization

        cert_pem, key = self._leaf(host)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = _remember_sni
        _load_chain(ctx, cert_pem + self.cert_pem + key_pem)
        self._contexts[host] = ctx
        return ctx


def _load_chain(ctx: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` reads files only: hand it an anonymous in-memory file (Linux ``memfd``), or
    elsewhere a 0600 file in a private temporary directory removed at once."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("alphora-egress-leaf", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="alphora-egress-") as tmp:
        path = Path(tmp, "leaf.pem")
        path.touch(mode=0o600)
        path.write_bytes(pem)
        ctx.load_cert_chain(str(path))


def _remember_sni(obj: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
    obj._alphora_sni = server_name  # type: ignore[union-attr]


class TLSStream(ByteStream):
    """TLS over ``inner`` (any :class:`ByteStream`), driven through memory BIOs: the server side
    (``server_side=True``) or a client verifying ``server_hostname``."""

    def __init__(
        self, inner: ByteStream, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._inner = inner
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname)

    @property
    def server_name(self) -> str | None:
        """The SNI the client sent (after :meth:`handshake`), or None."""
        return getattr(self._obj, "_alphora_sni", None)

    async def _flush(self) -> None:
        data = self._out.read()
        if data:
            await self._inner.write(data)

    async def _fill(self) -> bool:
        data = await self._inner.read(65536)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionError("the peer closed during the TLS handshake") from None
                continue
            await self._flush()
            return

    async def read(self, n: int = 65536) -> bytes:
        while True:
            try:
                return self._obj.read(n)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    try:
                        return self._obj.read(n)
                    except (ssl.SSLWantReadError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                        return b""
            except ssl.SSLZeroReturnError:
                return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._obj.write(view)
            view = view[written:]
            await self._flush()

    async def close(self) -> None:
        try:
            self._obj.unwrap()
        except ssl.SSLError:
            pass
        try:
            await self._flush()
        except OSError:
            pass
        await self._inner.close()


#: the largest ClientHello the proxy reassembles (real ones are under 2 KiB; post-quantum key shares stay far below)
MAX_CLIENT_HELLO = 64 * 1024
_ECH_EXTENSION = 0xFE0D


def client_hello_message(data: bytes) -> tuple[bytes, int] | None:
    """Reassemble the ClientHello handshake message from the TLS records at the start of ``data``
    (a client may split it over several records). Returns (message, bytes of ``data`` it used), or
    None when more bytes are needed. ValueError when the records are not a ClientHello."""
    message = b""
    p = 0
    while True:
        if len(data) < p + 5:
            return None
        if data[p] != 0x16 or data[p + 1] != 0x03:
            raise ValueError("not a TLS handshake record")
        length = int.from_bytes(data[p + 3 : p + 5], "big")
        if length == 0 or length > 16384 + 2048:
            raise ValueError("bad TLS record length")
        if len(data) < p + 5 + length:
            return None
        message += data[p + 5 : p + 5 + length]
        p += 5 + length
        if len(message) >= 4:
            if message[0] != 0x01:
                raise ValueError("the first handshake message is not a ClientHello")
            total = 4 + int.from_bytes(message[1:4], "big")
            if total > MAX_CLIENT_HELLO:
                raise ValueError("ClientHello too large")
            if len(message) >= total:
                return message[:total], p


def client_hello_sni(message: bytes) -> tuple[str | None, bool]:
    """The server name of a ClientHello handshake message (from :func:`client_hello_message`), or None
    when it carries none, and whether it offers Encrypted ClientHello (which hides the real name).
    ValueError when the message is malformed."""

    def need(cond: bool) -> None:
        if not cond:
            raise ValueError("malformed TLS ClientHello")

    need(len(message) >= 4 and message[0] == 0x01)
    body = message[4:]
    p = 2 + 32  # client_version, random
    need(len(body) > p)
    p += 1 + body[p]  # session id
    need(len(body) >= p + 2)
    p += 2 + int.from_bytes(body[p : p + 2], "big")  # cipher suites
    need(len(body) > p)
    p += 1 + body[p]  # compression methods
    need(len(body) >= p)
    if len(body) < p + 2:
        return None, False  # no extensions
    end = p + 2 + int.from_bytes(body[p : p + 2], "big")
    need(end <= len(body))
    p += 2
    sni: str | None = None
    ech = False
    seen: set[int] = set()
    while p + 4 <= end:
        ext_type = int.from_bytes(body[p : p + 2], "big")
        ext_len = int.from_bytes(body[p + 2 : p + 4], "big")
        need(p + 4 + ext_len <= end)
        # one extension of a type (RFC 8446 4.2): with two server_name extensions a server may take either
        need(ext_type not in seen)
        seen.add(ext_type)
        data = body[p + 4 : p + 4 + ext_len]
        p += 4 + ext_len
        if ext_type == _ECH_EXTENSION:
            ech = True
        elif ext_type == 0:  # server_name
            sni = _server_name(data)
    return sni, ech


def _server_name(data: bytes) -> str:
    """The host name of a server_name extension: a list that must hold exactly one host_name entry
    (RFC 6066 3 allows one per type; servers that take the first or the last of two would differ)."""
    if len(data) < 2 or int.from_bytes(data[:2], "big") != len(data) - 2:
        raise ValueError("malformed TLS ClientHello: server_name list length")
    names = []
    q = 2
    while q < len(data):
        if q + 3 > len(data):
            raise ValueError("malformed TLS ClientHello: server_name entry")
        name_type, name_len = data[q], int.from_bytes(data[q + 1 : q + 3], "big")
        if q + 3 + name_len > len(data):
            raise ValueError("malformed TLS ClientHello: server_name entry")
        names.append((name_type, data[q + 3 : q + 3 + name_len]))
        q += 3 + name_len
    if len(names) != 1 or names[0][0] != 0:
        raise ValueError("the TLS ClientHello's server_name must hold exactly one host name")
    return names[0][1].decode("ascii", "replace")
