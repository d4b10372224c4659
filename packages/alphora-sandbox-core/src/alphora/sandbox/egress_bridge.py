"""The host side of a sandbox's egress, for the tiers that enforce it (isolated and Docker).

A sandbox with an egress policy has no network but loopback (bubblewrap ``--unshare-net``, Docker
``network_mode="none"``): no route, no resolver, no address of the host. Its only way out is the
library's egress proxy (:class:`alphora.sandbox.egress.EgressProxy`), which runs in this process and
listens on a unix socket in a private host directory (:attr:`EgressBridge.host_dir`). The backend
bind-mounts that directory into the sandbox at :data:`INSIDE_DIR`; the runner forks a forwarder
(``runner/forward.py``) that listens on ``127.0.0.1:``:data:`FORWARD_PORT` inside the sandbox and
pipes each connection to the socket; the proxy variables of user code point there
(:func:`alphora.sandbox.backend.minimal_env`). When the policy injects credentials, the proxy
terminates TLS for those hosts with a per-sandbox CA: the bridge writes a CA bundle (the host's
trusted roots plus that CA) next to the socket, and the CA-bundle variables name it.

The proxy lives as long as the sandbox's runner environment: :meth:`EgressBridge.start` before the
runner starts, :meth:`EgressBridge.aclose` when it stops (the directory is removed). A crash leaves
the directory with a dead socket in the temp directory, nothing that listens.
See docs/egress.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Any

from .egress.policy import EgressPolicy
from .errors import BackendError

__all__ = ["BUNDLE_NAME", "FORWARD_PORT", "INSIDE_DIR", "SOCKET_NAME", "EgressBridge", "host_ca_bundle"]

#: the proxy's socket, in the bridge directory
SOCKET_NAME = "proxy.sock"
#: the CA bundle (host roots + the per-sandbox CA), in the bridge directory, when credentials need it
BUNDLE_NAME = "ca-bundle.pem"
#: where the bridge directory appears inside the sandbox
INSIDE_DIR = "/run/alphora-sandbox/egress"
#: the forwarder's port on the sandbox's own loopback
FORWARD_PORT = 3128


def host_ca_bundle() -> bytes:
    """The host's trusted roots as PEM (OpenSSL's default file, else certifi's when installed), or b""."""
    candidates = [ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"]
    with contextlib.suppress(ImportError):
        import certifi

        candidates.append(certifi.where())
    for path in candidates:
        if path and os.path.isfile(path):
            with contextlib.suppress(OSError):
                return Path(path).read_bytes()
    return b""


class EgressBridge:
    """The egress proxy of one sandbox, on a unix socket in a private directory.

    ``owner``: the host uid sandbox code runs as, when it is not this process's (isolated as root:
    the leased uid; Docker: the container user's uid): the directory and the socket are given to it
    (mode 0700/0600), so no other host user can reach them. None: this process's uid owns them; a
    ``shared`` bridge (the uid is unknown, e.g. a Docker user given by name) is 0711/0666 in a
    directory with an unguessable name."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        sandbox_id: str,
        owner: int | None = None,
        shared: bool = False,
        **proxy_options: Any,
    ) -> None:
        self.policy = policy
        self.sandbox_id = sandbox_id
        self.owner = owner
        self.shared = shared
        #: keyword arguments of EgressProxy (decide, audit, resolver, upstream_ssl_context)
        self.proxy_options = proxy_options
        self.host_dir: Path | None = None
        self._proxy: Any = None

    @property
    def running(self) -> bool:
        return self._proxy is not None

    @property
    def socket_path(self) -> Path:
        assert self.host_dir is not None
        return self.host_dir / SOCKET_NAME

    @property
    def proxy_url(self) -> str:
        """The proxy URL of user code (the forwarder on the sandbox's loopback)."""
        return f"http://127.0.0.1:{FORWARD_PORT}"

    @property
    def ca_bundle(self) -> str | None:
        """The CA bundle's path inside the sandbox, when the proxy terminates TLS for some hosts."""
        if self.host_dir is None or not (self.host_dir / BUNDLE_NAME).exists():
            return None
        return f"{INSIDE_DIR}/{BUNDLE_NAME}"

    def runner_config(self) -> dict[str, Any]:
        """The runner's ``egress`` start option (``runner/forward.py``)."""
        return {"socket": f"{INSIDE_DIR}/{SOCKET_NAME}", "port": FORWARD_PORT}

    async def start(self) -> None:
        """Start the proxy on a fresh private directory (idempotent)."""
        if self._proxy is not None:
            return
        from .egress import EgressProxy

        self.host_dir = Path(tempfile.mkdtemp(prefix=f"alphora-egress-{self.sandbox_id}-"))
        proxy = EgressProxy(self.policy, sandbox_id=self.sandbox_id, **self.proxy_options)
        try:
            await proxy.start(unix_path=str(self.socket_path))
            ca_pem = proxy.ca_pem
            if ca_pem:
                (self.host_dir / BUNDLE_NAME).write_bytes(host_ca_bundle().rstrip(b"\n") + b"\n" + bytes(ca_pem))
            self.grant(self.owner)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await proxy.aclose()
            self._remove_dir()
            if isinstance(exc, OSError):
                raise BackendError(
                    f"could not start the egress proxy of sandbox {self.sandbox_id!r}: {exc}",
                    sandbox_id=self.sandbox_id,
                ) from exc
            raise
        self._proxy = proxy

    def grant(self, owner: int | None) -> None:
        """Give the directory to whoever runs sandbox code (see the class doc); ``owner`` may be
        learnt after start (isolated as root leases its uid when the runner starts)."""
        self.owner = owner
        assert self.host_dir is not None
        files = [p for p in (self.socket_path, self.host_dir / BUNDLE_NAME) if p.exists()]
        if self.shared:
            os.chmod(self.host_dir, 0o711)
            os.chmod(self.socket_path, 0o666)
            for path in files[1:]:
                os.chmod(path, 0o644)
            return
        if self.owner is not None and self.owner != os.geteuid():
            for path in (self.host_dir, *files):
                os.chown(path, self.owner, -1)
        os.chmod(self.host_dir, 0o700)
        os.chmod(self.socket_path, 0o600)

    async def aclose(self) -> None:
        """Stop the proxy and remove its directory (idempotent)."""
        proxy, self._proxy = self._proxy, None
        try:
            if proxy is not None:
                await proxy.aclose()
        finally:
            self._remove_dir()

    def _remove_dir(self) -> None:
        if self.host_dir is not None:
            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None
