"""Loopback servers and an in-sandbox probe for the egress tests of the tiers (isolated, Docker).

Everything listens on the host's 127.0.0.1 (or, for the one "host service", 0.0.0.0 — only to show
the sandbox cannot reach it; nothing ever connects to a non-loopback address). The probe runs inside
the sandbox with the standard library only and prints one JSON object.

Used by tests/core/test_egress_isolated.py and tests/docker/test_egress_docker.py.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

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

    def __init__(self, name: str, files: dict[str, tuple[bytes, str]] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.name = name
        self.files = files or {}
        self.seen: list[dict[str, Any]] = []

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

    def allow_entries(self) -> list[str]:
        return [f"127.0.0.1:{self.allowed.port}", f"127.0.0.1:{self.index.port}"]

    def url(self, server: _Server, path: str = "/probe") -> str:
        return f"http://127.0.0.1:{server.port}{path}"


@contextmanager
def loopback_servers() -> Iterator[Servers]:
    index_files = simple_index(PROBE_DIST, PROBE_VERSION)
    made = [
        _Server("allowed"),
        _Server("denied"),
        _Server("index", index_files),
        _Server("denied-index", index_files),
        _Server("service", host="0.0.0.0"),  # on purpose: a host service open to every interface
    ]
    for srv in made:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield Servers(*made)
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
    "Servers",
    "check_probe",
    "install_requests",
    "loopback_servers",
    "matrix_rows",
    "probe_code",
    "read_json",
]
