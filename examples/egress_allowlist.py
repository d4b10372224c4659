"""Egress by allowlist: the sandbox reaches one server through the library's egress proxy and
nothing else, and an API key is added by the proxy, outside the sandbox, so sandbox code never sees it.

Runs on Docker when an engine answers (image python:3.11-slim, see docs/images.md), else on the
isolated tier (bubblewrap). Everything it talks to is a server it starts on 127.0.0.1.
Run: python examples/egress_allowlist.py [docker|isolated]
"""

import asyncio
import http.server
import shutil
import sys
import threading

from alphora.sandbox import EgressPolicy, Sandbox, SecurityPolicy, is_docker_available

API_KEY = "sk-example-0123456789"  # lives in this process only


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        key = self.headers.get("X-Api-Key")
        print(f"  server :{self.server.server_address[1]} got {self.path} with X-Api-Key={key!r}")
        body = b"hello from the allowed server\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


CODE = """
import os, socket, urllib.error, urllib.request
for name, port in (("allowed", {allowed}), ("other", {other})):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{{port}}/data", timeout=10) as r:
            print(name, "->", r.status, r.read().decode().strip())
    except urllib.error.HTTPError as e:
        print(name, "->", e.code, "refused by the egress proxy")
try:
    socket.getaddrinfo("pkgs.example.org", 443)
except OSError as e:
    print("dns ->", type(e).__name__, "(the sandbox has no resolver)")
print("interfaces ->", [n for _i, n in socket.if_nameindex()])
print("HTTP_PROXY ->", os.environ["HTTP_PROXY"])
print("API key in the sandbox's environment ->", any("sk-example" in v for v in os.environ.values()))
"""


async def main(tier: str) -> None:
    allowed, other = serve(), serve()
    policy = SecurityPolicy(
        egress=EgressPolicy(
            allow=[f"127.0.0.1:{allowed}"],  # loopback is reachable only when named by address
            credentials={f"127.0.0.1:{allowed}": {"X-Api-Key": API_KEY}},
        )
    )
    print(f"tier: {tier}")
    if tier == "docker":
        sandbox = Sandbox.create_docker(docker_image="python:3.11-slim", security_policy=policy)
    else:
        sandbox = Sandbox.create("isolated", security_policy=policy)
    async with sandbox:
        result = await sandbox.run(CODE.format(allowed=allowed, other=other))
        print(result.stdout, result.stderr, sep="", end="")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        chosen = sys.argv[1]
        if chosen not in ("docker", "isolated"):
            # the local backend cannot enforce an allowlist (its code shares the host's network): it refuses
            # an egress policy, see docs/egress.md
            sys.exit(f"usage: python examples/egress_allowlist.py [docker|isolated] (not {chosen!r}: only these enforce egress)")
    elif is_docker_available():
        chosen = "docker"
    elif shutil.which("bwrap"):
        chosen = "isolated"
    else:
        sys.exit("needs a Docker engine or bubblewrap (apt install bubblewrap)")
    asyncio.run(main(chosen))
