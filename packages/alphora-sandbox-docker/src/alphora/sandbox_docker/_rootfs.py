"""The Debian root filesystem the base image is built on when no upstream python image is at hand:
made with mmdebstrap (through the host apt's mirror and proxy) and imported into the engine as
:data:`ROOTFS_TAG`. Used by the builder in :mod:`.images`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from alphora.sandbox.errors import DockerError

from .recipes import DEBIAN_PACKAGES

if TYPE_CHECKING:
    import docker

__all__ = ["DEBIAN_SUITE", "ROOTFS_TAG"]

ROOTFS_TAG = "alphora/sandbox-rootfs:bookworm"
DEBIAN_SUITE = "bookworm"


class RootfsReporter(Protocol):
    """What of the builder's :class:`~.images.Reporter` the root filesystem steps use."""

    def log(self, line: str) -> None: ...

    def upload(self, total: int) -> Callable[[int], None]: ...


def _host_debian_sources() -> str | None:
    """The host's apt sources file when it already lists the suite we build (reuses its mirror)."""
    for cand in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            text = Path(cand).read_text()
        except OSError:
            continue
        if re.search(rf"\b{DEBIAN_SUITE}\b", text):
            return cand
    return None


def _host_apt_options() -> list[str]:
    """The host apt's proxy settings, so mmdebstrap goes the way the host's apt goes."""
    opts = ['Acquire::Check-Valid-Until "false"']
    if shutil.which("apt-config") is None:
        return opts
    for key in ("Acquire::http::Proxy", "Acquire::https::Proxy"):
        try:
            out = subprocess.run(
                ["apt-config", "shell", "V", key], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.match(r"V='(.*)'", out)
        if m and m.group(1):
            opts.append(f'{key} "{m.group(1)}"')
    return opts


def _mmdebstrap(target: Path, mirror: str | None, reporter: RootfsReporter) -> None:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise DockerError(
            "no image registry answers and mmdebstrap is not installed: install it (apt-get install "
            "mmdebstrap) to build the base image from Debian packages"
        )
    mirror = mirror or os.environ.get("ALPHORA_SANDBOX_DEBIAN_MIRROR") or _host_debian_sources()
    argv = [
        exe,
        "--variant=minbase",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        "--format=tar",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
    ]
    for aptopt in _host_apt_options():
        argv.append(f"--aptopt={aptopt}")
    argv += [DEBIAN_SUITE, str(target)]
    if mirror:
        argv.append(mirror)
    reporter.log("$ " + " ".join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        reporter.log(line.rstrip())
        tail = [*tail[-30:], line.rstrip()]
    if proc.wait() != 0:
        raise DockerError("mmdebstrap failed:\n" + "\n".join(tail))


class _CountingReader(io.RawIOBase):
    def __init__(self, fh: Any, advance: Callable[[int], None]) -> None:
        self._fh = fh
        self._advance = advance

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._fh.read(len(b))
        n = len(data)
        b[:n] = data
        self._advance(n)
        return n


def _import_rootfs(client: docker.DockerClient, tarball: Path, reporter: RootfsReporter) -> str:
    size = tarball.stat().st_size
    advance = reporter.upload(size)
    with tarball.open("rb") as fh:
        reader = io.BufferedReader(_CountingReader(fh, advance), buffer_size=1 << 20)
        repo, _, tag = ROOTFS_TAG.rpartition(":")
        out = client.api.import_image_from_stream(
            reader, repository=repo, tag=tag, changes=['CMD ["/bin/sh"]', "ENV LANG=C.UTF-8"]
        )
    text = out if isinstance(out, str) else json.dumps(out)
    m = re.search(r"sha256:[0-9a-f]{64}", text)
    if not m:
        raise DockerError(f"docker import of the root filesystem failed: {text[-500:]}")
    return m.group(0)
