"""The ray backend on the session's cluster: placement, the facade unchanged (streaming, sessions,
files), the isolated and docker inner sandboxes, the cluster-wide count and cleanup, and the
loopback-only setup itself."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import psutil
import pytest
import ray

from alphora.sandbox import Sandbox, SandboxManager
from alphora.sandbox.backend import OutputChunk
from alphora.sandbox.errors import BackendError
from alphora.sandbox.types import ExecutionResult
from alphora.sandbox_ray import RayBackend, list_sandbox_actors, shutdown_sandbox_actors

from .conftest import RayTestCluster

pytestmark = pytest.mark.timeout(120)

_LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def _ray_backend(sandbox: Sandbox) -> RayBackend:
    assert isinstance(sandbox.backend, RayBackend)
    return sandbox.backend


def test_every_ray_socket_is_on_loopback(ray_cluster: RayTestCluster) -> None:
    """Every process of the cluster (GCS, raylets, workers: all descendants of this driver) listens
    and connects on 127.0.0.1 only."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    seen = 0
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            seen += 1
            assert c.laddr.ip in _LOOPBACK, (proc.name(), c)
            if c.raddr:
                assert c.raddr.ip in _LOOPBACK, (proc.name(), c)
    assert seen > 10  # the GCS, three raylets and the driver hold many sockets


async def test_placement_by_resource_and_by_node(ray_cluster: RayTestCluster) -> None:
    ids = ray_cluster.nodes
    async with Sandbox.create("ray", inner="local", resources={"zone_b": 1}) as on_b:
        assert _ray_backend(on_b).node_id == ids["node_b"]
        async with Sandbox.create("ray", inner="local", node_id=ids["head"]) as on_head:
            assert _ray_backend(on_head).node_id == ids["head"]
            # the code really runs in that node's worker tree: its Ray node id is in the parent chain's env
            r = await on_head.run("import os; print(os.getppid() > 1)")
            assert r.stdout == "True\n", r


async def test_facade_unchanged_streaming_sessions_files(ray_cluster: RayTestCluster) -> None:
    async with Sandbox.create("ray", inner="local", resources={"zone_a": 1}) as sandbox:
        await sandbox.write_file("data/in.txt", "21")
        r = await sandbox.run("print(int(open('data/in.txt').read()) * 2)")
        assert r.stdout == "42\n", r
        # streaming: chunks arrive while the code still runs, the result comes last
        arrivals: list[tuple[float, OutputChunk | ExecutionResult]] = []
        stream: AsyncIterator[OutputChunk | ExecutionResult] = sandbox.stream(
            "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)"
        )
        async for item in stream:
            arrivals.append((time.monotonic(), item))
        chunks = [i for _, i in arrivals if isinstance(i, OutputChunk)]
        assert "".join(c.text for c in chunks) == "0\n1\n2\n"
        assert isinstance(arrivals[-1][1], ExecutionResult)
        assert arrivals[-1][0] - arrivals[0][0] >= 0.6  # the first chunk came before the code was done
        async with sandbox.session() as py:
            await py.run("x = 41")
            seen: list[OutputChunk] = []
            cell = await py.run("print('cell'); x + 1", on_output=seen.append)
            assert cell.value == "42", cell
            assert "".join(c.text for c in seen) == "cell\n"
            async with await py.fork() as fork:  # a copy-on-write fork, on the same node
                await fork.run("x = 0")
                assert (await fork.run("x")).value == "0"
            assert (await py.run("x")).value == "41"
        assert {f.path for f in await sandbox.list_files("data")} == {"data/in.txt"}


async def test_isolated_inner(ray_cluster: RayTestCluster) -> None:
    async with Sandbox.create("ray", inner="isolated", resources={"zone_a": 1}) as sandbox:
        await sandbox.write_file("in.txt", "isolated")
        r = await sandbox.run("print(open('in.txt').read())")
        assert r.stdout == "isolated\n", r


async def test_docker_inner_goes_where_docker_is(ray_cluster: RayTestCluster) -> None:
    from alphora.sandbox_docker import is_docker_available

    if not is_docker_available():
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Docker engine answers", pytrace=False)
        pytest.skip("no Docker engine answers")
    ids = ray_cluster.nodes
    async with Sandbox.create(
        "ray", inner="docker", resources={"sandbox_docker": 1}, inner_options={"image": "alphora/sandbox:base"}
    ) as sandbox:
        assert _ray_backend(sandbox).node_id == ids["node_b"]
        r = await sandbox.run("import os; print(os.getcwd())")
        assert r.stdout == "/workspace\n", r


async def test_cluster_wide_count_and_cleanup(ray_cluster: RayTestCluster) -> None:
    before = set(list_sandbox_actors())
    boxes = [
        Sandbox.create("ray", inner="local", resources={"zone_a": 1}),
        Sandbox.create("ray", inner="local", resources={"zone_b": 1}),
    ]
    for box in boxes:
        await box.start()
    await boxes[0].run("import subprocess; subprocess.Popen(['sleep', '300'])")
    mine = set(list_sandbox_actors()) - before
    assert len(mine) == 2
    assert {_ray_backend(b).node_id for b in boxes} == {ray_cluster.nodes["node_a"], ray_cluster.nodes["node_b"]}
    handled = await shutdown_sandbox_actors(destroy=True)
    assert mine <= set(handled)
    deadline = time.monotonic() + 30
    while set(list_sandbox_actors()) & mine and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not set(list_sandbox_actors()) & mine
    for box in boxes:  # the facade's own stop after a cluster-wide cleanup is harmless
        assert not await box.health_check()
        await box.destroy()
    assert ray.is_initialized()


async def test_manager_counts_and_cleans_up_across_nodes(ray_cluster: RayTestCluster) -> None:
    before = set(list_sandbox_actors())
    async with SandboxManager(default_backend="ray") as manager:
        for zone in ("zone_a", "zone_b"):
            await manager.create_sandbox(backend_options={"inner": "local", "resources": {zone: 1}})
        assert manager.sandbox_count == 2
        nodes = {_ray_backend(s).node_id for s in manager.list_running()}
        assert nodes == {ray_cluster.nodes["node_a"], ray_cluster.nodes["node_b"]}
        assert len(set(list_sandbox_actors()) - before) == 2
    assert set(list_sandbox_actors()) - before == set()


async def test_leaving_a_stream_early_stops_the_code_on_the_node(ray_cluster: RayTestCluster) -> None:
    async with Sandbox.create("ray", inner="local", resources={"zone_a": 1}) as sandbox:
        code = (
            "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nprint('started', flush=True)\ntime.sleep(120)"
        )
        async for item in sandbox.stream(code, timeout=100):
            assert isinstance(item, OutputChunk)
            break
        pid = await sandbox.read_file("pid")
        deadline = time.monotonic() + 15
        state = "alive"
        while time.monotonic() < deadline:
            check = await sandbox.execute_shell(f"kill -0 {pid} 2>/dev/null && echo alive || echo gone")
            state = check.stdout.strip()
            if state == "gone":
                break
            await asyncio.sleep(0.3)
        assert state == "gone"


async def test_unplaceable_sandbox_fails_naming_what_it_asked_for(ray_cluster: RayTestCluster) -> None:
    before = set(list_sandbox_actors())
    sandbox = Sandbox.create("ray", inner="local", resources={"no_such_resource": 1}, start_timeout=3)
    with pytest.raises(BackendError, match="no_such_resource") as err:
        await sandbox.start()
    assert "not placed" in str(err.value)
    assert set(list_sandbox_actors()) - before == set()
