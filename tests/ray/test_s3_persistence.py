"""Workspace persistence in S3 (SeaweedFS on loopback, the fixture of tests/s3): a sandbox whose
actor's worker is killed mid-call comes back with its files from the bucket, which any node reaches."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest

from alphora.sandbox import Sandbox
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox_ray import RayBackend, SandboxNodeLostError
from tests.s3.conftest import S3Server, s3_server  # noqa: F401 - the session's SeaweedFS

from .conftest import RayTestCluster

pytestmark = pytest.mark.timeout(150)


async def test_workspace_in_s3_survives_a_killed_worker(ray_cluster: RayTestCluster, s3_server: S3Server) -> None:  # noqa: F811
    storage = StorageConfig.minio(
        s3_server.endpoint, s3_server.access_key, s3_server.secret_key, f"ray-{uuid.uuid4().hex[:16]}"
    )
    sandbox = Sandbox.create("ray", inner="local", resources={"zone_a": 1}, storage=storage, recover=True)
    await sandbox.start()
    try:
        backend = sandbox.backend
        assert isinstance(backend, RayBackend)
        await sandbox.write_file("report/data.csv", "a,b\n1,2\n")
        await sandbox.run("open('from_code.txt', 'w').write('kept in S3')")
        assert backend.actor_pid is not None
        pid = backend.actor_pid
        call = asyncio.ensure_future(sandbox.run("import time; time.sleep(60)", timeout=90))
        await asyncio.sleep(1)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SandboxNodeLostError) as err:
            await call
        assert err.value.recovered_on is not None
        assert await sandbox.read_file("report/data.csv") == "a,b\n1,2\n"
        assert await sandbox.read_file("from_code.txt") == "kept in S3"
    finally:
        await sandbox.destroy()
