"""Loopback servers and an in-sandbox probe for the egress tests of the tiers (isolated, Docker).

Everything listens on the host's 127.0.0.1 (or, for the one "host service", 0.0.0.0 — only to show
the sandbox cannot reach it; nothing ever connects to a non-loopback address). The probe runs inside
the sandbox with the standard library only and prints one JSON object.

Used by tests/core/test_egress_isolated.py and tests/docker/test_egress_docker.py.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import io
import json
import re
import secrets
import ssl
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .egress import TestCA
from .packages import wheel

#: the package the local index serves
PROBE_DIST = "alphora_egress_probe"
PROBE_VERSION = "1.0.0"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "headers": dict(self.headers.items())})
        body, ctype = self.server.answer(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        name: str,
        files: dict[str, tuple[bytes, str]] | None = None,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__((host, 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.name = name
        self.files = files or {}
        self.seen: list[dict[str, Any]] = []

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` the server received, in order."""
        return [v for seen in self.seen for k, v in seen["headers"].items() if k.lower() == name.lower()]

    def answer(self, path: str) -> tuple[bytes | None, str]:
        if self.files:
            return self.files.get(path.split("?")[0], (None, ""))
        return f"{self.name} answers {path}".encode(), "text/plain"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


#: distributions the index re-packs from this interpreter, so the sandbox can pip-install a real
#: client (requests and what it needs) through the proxy without any other index
REQUESTS_DISTS = ("requests", "urllib3", "idna", "certifi", "charset-normalizer")


def installed_wheel(name: str) -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel re-packed from the installed distribution ``name``
    (compiled accelerators left out: these packages fall back to their pure-Python modules)."""
    dist = importlib.metadata.distribution(name)
    project = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    info = f"{project}-{dist.version}.dist-info"
    buf = io.BytesIO()
    names: list[str] = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as whl:
        for file in dist.files or ():
            path = str(file)
            parts = path.split("/")
            if path.startswith("..") or "__pycache__" in parts or path.endswith((".so", ".pyc")):
                continue
            if parts[0].endswith(".dist-info"):
                if parts[-1] not in ("METADATA", "top_level.txt"):
                    continue
                path = f"{info}/{parts[-1]}"
            whl.writestr(path, Path(str(file.locate())).read_bytes())
            names.append(path)
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: alphora-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "".join(f"{p},,\n" for p in [*names, f"{info}/WHEEL", f"{info}/RECORD"]))
    return f"{project}-{dist.version}-py3-none-any.whl", buf.getvalue()


def simple_index(dist: str, version: str) -> dict[str, tuple[bytes, str]]:
    """A static PEP 503 simple index: one wheel of ``dist`` (built in memory) and :data:`REQUESTS_DISTS`."""
    html = "text/html"
    wheels = {dist.replace("_", "-"): (f"{dist}-{version}-py3-none-any.whl", wheel(dist, version))}
    for name in REQUESTS_DISTS:
        wheels[name] = installed_wheel(name)
    files: dict[str, tuple[bytes, str]] = {}
    for project, (filename, data) in wheels.items():
        page = f'<html><body><a href="/files/{filename}">{filename}</a></body></html>'.encode()
        files[f"/simple/{project}/"] = (page, html)
        files[f"/files/{filename}"] = (data, "application/octet-stream")
    files["/simple/"] = ("".join(f'<a href="/simple/{p}/">{p}</a>' for p in wheels).encode(), html)
    return files


@attrs.define
class Servers:
    """The host side of an egress test: allowed, denied, index, and a 0.0.0.0 host service."""

    allowed: _Server
    denied: _Server
    index: _Server
    denied_index: _Server
    service: _Server  # bound to 0.0.0.0: a host service the sandbox must not reach
    secure: _Server  # HTTPS for TLS_NAME (certificate from ca), credentials injected by the proxy
    ca: TestCA
    #: the credential the proxy injects; it must never enter the sandbox
    secret: str = attrs.field(factory=lambda: SECRET_PREFIX + secrets.token_hex(16))

    def allow_entries(self) -> list[str]:
        return [f"127.0.0.1:{self.allowed.port}", f"127.0.0.1:{self.index.port}", *self.secure_entries()]

    def secure_entries(self) -> list[str]:
        # the name, and the loopback address it resolves to (a loopback address must be named to be reached)
        return [f"{TLS_NAME}:{self.secure.port}", f"127.0.0.1:{self.secure.port}"]

    def credentials(self) -> dict[str, dict[str, str]]:
        return {
            f"127.0.0.1:{self.allowed.port}": {"X-Api-Key": self.secret},
            f"{TLS_NAME}:{self.secure.port}": {"Authorization": f"Bearer {self.secret}"},
        }

    def proxy_options(self) -> dict[str, Any]:
        """The proxy's test resolver (TLS_NAME is 127.0.0.1) and its trust of the test CA upstream."""

        async def resolve(host: str) -> list[str]:
            if host != TLS_NAME:
                raise OSError(f"test resolver: unknown name {host!r}")
            return ["127.0.0.1"]

        return {"resolver": resolve, "upstream_ssl_context": self.ca.client_context()}

    def policy(self) -> Any:
        from alphora.sandbox import SecurityPolicy
        from alphora.sandbox.egress import EgressPolicy

        return SecurityPolicy(egress=EgressPolicy(allow=self.allow_entries(), credentials=self.credentials()))

    def url(self, server: _Server, path: str = "/probe") -> str:
        return f"http://127.0.0.1:{server.port}{path}"


#: the public part of the test credential (the probe looks for it, then checks a hash of what follows)
SECRET_PREFIX = "sk-alphora-egress-"
#: the name of the HTTPS server (resolved by the proxy's test resolver only)
TLS_NAME = "secure.egress.test"


@contextmanager
def loopback_servers(tmp: Path) -> Iterator[Servers]:
    index_files = simple_index(PROBE_DIST, PROBE_VERSION)
    ca = TestCA()
    made = [
        _Server("allowed"),
        _Server("denied"),
        _Server("index", index_files),
        _Server("denied-index", index_files),
        _Server("service", host="0.0.0.0"),  # on purpose: a host service open to every interface
        _Server("secure", tls=ca.server_context([TLS_NAME], tmp)),
    ]
    for srv in made:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield Servers(*made, ca=ca)
    finally:
        for srv in made:
            srv.shutdown()
            srv.server_close()


#: run inside the sandbox (stdlib; Python 3.8+): every client against every destination, plus the
#: network the sandbox has. Placeholders: ALLOWED, DENIED (URLs), SERVICE_PORT (the host service).
PROBE = r"""
import json, os, shutil, socket, subprocess, urllib.error, urllib.request
ALLOWED, DENIED, SERVICE_PORT = {allowed!r}, {denied!r}, {service_port!r}
out = {{}}

def urllib_get(url):
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return type(e).__name__

def requests_get(url):
    try:
        import requests
    except ImportError:
        return "n/a"
    try:
        return requests.get(url, timeout=15).status_code
    except Exception as e:
        return type(e).__name__

def curl_get(url):
    if not shutil.which("curl"):
        return "n/a"
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{{http_code}}", "--max-time", "15", url],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return int(p.stdout or 0) or "rc%d" % p.returncode

def raw(host, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()

for client, get in (("urllib", urllib_get), ("requests", requests_get), ("curl", curl_get)):
    out[client] = {{"allowed": get(ALLOWED), "denied": get(DENIED)}}
# traffic that ignores the proxy variables: the host's service port on the sandbox's own loopback
out["raw"] = {{"host service port on 127.0.0.1": raw("127.0.0.1", SERVICE_PORT)}}
try:
    out["dns"] = sorted({{a[4][0] for a in socket.getaddrinfo("pkgs.example.org", 443)}})
except OSError as e:
    out["dns"] = type(e).__name__
out["interfaces"] = sorted(name for _i, name in socket.if_nameindex())
routes = []
for path in ("/proc/net/route", "/proc/net/ipv6_route"):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        continue
    body = lines[1:] if path.endswith("/route") else lines
    routes += [l for l in body if l.split() and l.split()[0] != "lo" and l.split()[-1] != "lo"]
out["routes"] = routes
out["proxy_env"] = {{k: os.environ.get(k) for k in ("HTTP_PROXY", "https_proxy", "NO_PROXY")}}
print(json.dumps(out))
"""


def probe_code(servers: Servers) -> str:
    return PROBE.format(
        allowed=servers.url(servers.allowed),
        denied=servers.url(servers.denied),
        service_port=servers.service.port,
    )


async def install_requests(sandbox: Any, servers: Servers) -> None:
    """pip-install requests in the sandbox from the allowed local index, through the proxy."""
    await sandbox.set_env("PIP_INDEX_URL", servers.url(servers.index, "/simple/"))
    installed = await sandbox.install_package("requests")
    assert installed.success, installed.stderr[-2000:]


def check_probe(
    result: dict[str, Any], servers: Servers, *, required: tuple[str, ...] = ("urllib", "requests")
) -> None:
    """The verdict every enforcing tier must give (``required`` clients must have run; others,
    missing from the image, say ``n/a``)."""
    for client in ("urllib", "requests", "curl"):
        row = result[client]
        if row == {"allowed": "n/a", "denied": "n/a"} and client not in required:
            continue
        assert row == {"allowed": 200, "denied": 403}, (client, row)
    assert result["raw"]["host service port on 127.0.0.1"] == "ConnectionRefusedError", result["raw"]
    assert isinstance(result["dns"], str), result["dns"]
    assert "gaierror" in result["dns"], result["dns"]
    assert result["interfaces"] == ["lo"], result["interfaces"]
    assert result["routes"] == [], result["routes"]
    assert result["proxy_env"]["HTTP_PROXY"].startswith("http://127.0.0.1:"), result["proxy_env"]
    assert not servers.denied.seen, "the denied server was reached"
    assert not servers.service.seen, "the host service on 0.0.0.0 was reached"
    assert servers.allowed.seen, "the allowed server saw no request"


def matrix_rows(tier: str, result: dict[str, Any]) -> list[str]:
    """One line per client: the allow/deny matrix as the closing note shows it."""
    rows = [
        f"{tier:9} {c:8} allowed={result[c]['allowed']!s:5} denied={result[c]['denied']}"
        for c in ("urllib", "requests", "curl")
    ]
    rows.append(f"{tier:9} raw      {json.dumps(result['raw'])} dns={result['dns']} interfaces={result['interfaces']}")
    return rows


def read_json(stdout: str) -> dict[str, Any]:
    return dict(json.loads(stdout.strip().splitlines()[-1]))


__all__ = [
    "PROBE_DIST",
    "PROBE_VERSION",
    "SECRET_PREFIX",
    "TLS_NAME",
    "Servers",
    "check_credentials_stay_outside",
    "check_probe",
    "install_requests",
    "loopback_servers",
    "matrix_rows",
    "probe_code",
    "read_json",
    "secret_probe",
]


#: run inside the sandbox: fetch through the proxy (credentials injected outside), then look for the
#: secret everywhere the sandbox can read: every process's environment and command line, and the files
#: under ``roots``. It gets only the secret's public prefix and SHA-256 (never the secret), plus a
#: planted decoy's hash, which it must find (the search works).
SECRET_PROBE = r"""
import hashlib, json, os, shutil, ssl, subprocess, urllib.request
PREFIX, LENGTH, SECRET_SHA, DECOY_SHA = {prefix!r}, {length!r}, {secret_sha!r}, {decoy_sha!r}
PLAIN, SECURE, ROOTS = {plain!r}, {secure!r}, {roots!r}
out = {{"fetch": {{}}}}
for name, url in (("http", PLAIN), ("https", SECURE)):
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            out["fetch"][name] = r.status
    except Exception as e:
        out["fetch"][name] = repr(e)
if shutil.which("curl"):
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{{http_code}}", "--max-time", "15", SECURE],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    out["fetch"]["curl https"] = p.stdout.decode() or p.stderr.decode()[-300:]
out["ca_bundle"] = os.environ.get("SSL_CERT_FILE")
found = {{SECRET_SHA: [], DECOY_SHA: []}}
prefix = PREFIX.encode()

def look(where, data):
    start = data.find(prefix)
    while start >= 0:
        digest = hashlib.sha256(data[start:start + LENGTH]).hexdigest()
        if digest in found:
            found[digest].append(where)
        start = data.find(prefix, start + 1)

look("os.environ", "\0".join("%s=%s" % kv for kv in os.environ.items()).encode())
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for leaf in ("environ", "cmdline"):
            try:
                with open("/proc/%s/%s" % (pid, leaf), "rb") as f:
                    look("/proc/%s/%s" % (pid, leaf), f.read())
            except OSError:
                pass
scanned = 0
for root in sorted(set(ROOTS + [os.getcwd(), os.environ.get("HOME", "/")])):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > 50 * 2**20:
                    continue
                with open(path, "rb") as f:
                    look(path, f.read())
                scanned += 1
            except OSError:
                pass
out["files_scanned"] = scanned
out["secret_found_in"] = found[SECRET_SHA]
out["decoy_found_in"] = found[DECOY_SHA]
print(json.dumps(out))
"""


def secret_probe(servers: Servers, roots: list[str], decoy: str) -> str:
    """The probe's code: nothing of ``servers.secret`` in it but its public prefix and its hash."""

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    assert len(decoy) == len(servers.secret)
    return SECRET_PROBE.format(
        prefix=SECRET_PREFIX,
        length=len(servers.secret),
        secret_sha=sha(servers.secret),
        decoy_sha=sha(decoy),
        plain=servers.url(servers.allowed, "/with-credentials"),
        secure=f"https://{TLS_NAME}:{servers.secure.port}/with-credentials",
        roots=roots,
    )


async def check_credentials_stay_outside(sandbox: Any, servers: Servers, tier: str) -> None:
    """The injected credentials reach the servers (plain HTTP and intercepted HTTPS) while a search
    of the sandbox's env, /proc and files finds no trace of them; a planted decoy must be found, so
    the search is shown to work. Prints what both sides saw (the closing note's transcript)."""
    decoy = SECRET_PREFIX + "0" * (len(servers.secret) - len(SECRET_PREFIX))
    await sandbox.write_file("decoy.txt", f"planted: {decoy}\n")  # the search must find this one
    result = await sandbox.run(secret_probe(servers, ["/tmp", "/run", "/etc"], decoy), timeout=120)
    assert result.success, result.stderr
    probe = read_json(result.stdout)
    print(
        f"{tier}: server saw X-Api-Key",
        servers.allowed.header("X-Api-Key")[-1:],
        "and",
        servers.secure.header("Authorization")[-1:],
    )
    print(f"{tier}: inside:", probe)
    assert probe["fetch"]["http"] == 200, probe
    assert probe["fetch"]["https"] == 200, probe  # TLS terminated by the proxy, trusted through the CA bundle
    assert probe["fetch"].get("curl https", "200") == "200", probe
    assert servers.allowed.header("X-Api-Key")[-1] == servers.secret
    assert servers.secure.header("Authorization")[-1] == f"Bearer {servers.secret}"
    assert probe["ca_bundle"] == "/run/alphora-sandbox/egress/ca-bundle.pem"
    assert probe["decoy_found_in"], probe
    assert probe["secret_found_in"] == [], probe
