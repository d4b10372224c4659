"""Failure: a node killed in the middle of a call, and a driver killed with SIGKILL.

Each test adds its own nodes to the session's cluster (the fixture's nodes stay up for the rest)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from alphora.sandbox import Sandbox
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox_ray import RayBackend, SandboxNodeLostError, list_sandbox_actors

from .conftest import NODE, RayTestCluster

pytestmark = pytest.mark.timeout(150)


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


async def test_node_killed_mid_call_fails_clearly_and_a_persisted_sandbox_resumes_elsewhere(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    cluster = ray_cluster.cluster
    # two nodes offering "recov": the sandbox lands on one, and comes back on the other
    doomed = [cluster.add_node(**NODE, num_cpus=1, resources={"recov": 10}) for _ in range(2)]
    cluster.wait_for_nodes(timeout=60)
    storage = StorageConfig.local(str(tmp_path / "store"))
    persisted = Sandbox.create("ray", inner="local", resources={"recov": 1}, storage=storage, recover=True)
    await persisted.start()
    b = persisted.backend
    assert isinstance(b, RayBackend)
    victim = next(n for n in doomed if n.node_id == b.node_id)
    # the plain one (no storage) prefers the same node but may go elsewhere (a soft affinity)
    plain = Sandbox.create(
        "ray", inner="local", scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=victim.node_id, soft=True)
    )
    await plain.start()
    try:
        pb = plain.backend
        assert isinstance(pb, RayBackend)
        assert pb.node_id == victim.node_id
        _say(f"persisted sandbox {persisted.sandbox_id} and plain sandbox {plain.sandbox_id} on node {b.node_id[:12]}")
        await persisted.write_file("notes/kept.txt", "written before the crash")
        await persisted.run("open('made_by_code.txt', 'w').write('also kept')")
        calls = [
            asyncio.ensure_future(box.run("import time; print('working', flush=True); time.sleep(60)", timeout=90))
            for box in (persisted, plain)
        ]
        await asyncio.sleep(1.5)
        _say(f"killing node {victim.node_id[:12]} (raylet and its workers, SIGKILL) while both calls run")
        t0 = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        results = await asyncio.gather(*calls, return_exceptions=True)
        waited = time.monotonic() - t0
        for box, res in zip((persisted, plain), results, strict=True):
            _say(f"{box.sandbox_id}: {type(res).__name__}: {res}")
            assert isinstance(res, SandboxNodeLostError), res
        assert waited < 45, waited  # failed, not hung until the run's own 90 s timeout
        _say(f"both calls failed {waited:.1f}s after the kill")
        lost, recovered = results[1], results[0]
        assert isinstance(recovered, SandboxNodeLostError)
        assert recovered.recovered_on is not None
        assert recovered.recovered_on != victim.node_id
        assert "re-created on node" in str(recovered)
        assert "not retried" in str(recovered)
        assert "gone" in str(lost)
        # the persisted sandbox goes on, on the other node, with its files; processes are gone
        assert b.node_id == recovered.recovered_on
        assert await persisted.read_file("notes/kept.txt") == "written before the crash"
        assert await persisted.read_file("made_by_code.txt") == "also kept"
        r = await persisted.run("import os; print(sorted(os.listdir('.')))")
        _say(f"after recovery on node {b.node_id[:12]}: {r.stdout.strip()}")
        assert "notes" in r.stdout
        # the plain one says so at once on every later call, until restart() places it again
        t1 = time.monotonic()
        with pytest.raises(SandboxNodeLostError, match="restart"):
            await plain.run("print(1)")
        assert time.monotonic() - t1 < 5
        await plain.restart()
        assert (await plain.run("print('placed again')")).stdout == "placed again\n"
        assert pb.node_id != victim.node_id
        _say(f"plain sandbox placed again on node {(pb.node_id or '')[:12]} (empty workspace)")
    finally:
        await persisted.destroy()
        await plain.destroy()
        for node in doomed:
            if node in cluster.worker_nodes:
                cluster.remove_node(node)


_DRIVER = textwrap.dedent(
    """
    import asyncio, os, sys
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from alphora.sandbox import Sandbox

    async def main():
        ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False)
        marker = sys.argv[2]
        kept = []
        boxes = [Sandbox.create("ray", inner="local", resources={"zone_a": 1}, sandbox_id=marker + "-local")]
        if sys.argv[3] == "docker":
            boxes.append(Sandbox.create("ray", inner="docker", resources={"sandbox_docker": 1},
                                        inner_options={"image": "alphora/sandbox:base"}, sandbox_id=marker + "-docker"))
        for box in boxes:
            await box.start()
            # a background server left running, and a session: both must go with the driver
            r = await box.run(f"import subprocess; subprocess.Popen([{marker!r} + '-bg', '300'], executable='sleep')")
            assert r.success, r
            session = box.session()
            kept.append(session)
            py = await session.__aenter__()
            assert (await py.run(f"import subprocess; p = subprocess.Popen([{marker!r} + '-cell', '300'], executable='sleep')")).success
        print("ready", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


def _leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(f"pid {proc.info['pid']}: {' '.join(proc.info['cmdline'])[:100]}")
        except psutil.Error:
            continue
    return found


def _sandbox_trees(marker: str) -> set[tuple[int, float]]:
    """(pid, start time) of every process of the sandboxes: the marked processes, their ancestors
    below the Ray worker of their actor (the runner), and everything below those."""
    found: set[tuple[int, float]] = set()
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if not any(marker in part for part in proc.info["cmdline"] or ()):
                continue
            chain = [proc]
            for parent in proc.parents():
                if " ".join(parent.cmdline()).startswith("ray::") or parent.pid == 1:
                    break
                chain.append(parent)
            else:
                chain = [proc]
            if chain[-1].pid != proc.pid and not any(
                " ".join(a.cmdline()).startswith("ray::") for a in chain[-1].parents()[:1]
            ):
                chain = [proc]  # not under a Ray worker (a container's process): the container check covers it
            for p in chain + [c for t in chain for c in t.children(recursive=True)]:
                found.add((p.pid, p.create_time()))
        except psutil.Error:
            continue
    return found


def _alive(procs: set[tuple[int, float]]) -> list[str]:
    alive = []
    for pid, start in procs:
        try:
            p = psutil.Process(pid)
            if p.create_time() == start and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"pid {pid}: {' '.join(p.cmdline())[:100]}")
        except psutil.Error:
            continue
    return alive


def _containers(marker: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}} {{.Labels}}"], capture_output=True, text=True, check=False
    ).stdout
    return [line for line in out.splitlines() if marker in line]


def test_driver_killed_leaves_nothing(ray_cluster: RayTestCluster, tmp_path: Path) -> None:
    from alphora.sandbox_docker import is_docker_available

    docker = is_docker_available()
    marker = f"crash{os.getpid()}x{int(time.time()) % 100000}"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(script), ray_cluster.address, marker, "docker" if docker else "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the driver did not get ready: {line!r}\n{err[-3000:]}")
        actors = [n for n in list_sandbox_actors() if marker in n]
        assert len(actors) == (2 if docker else 1), actors
        assert _leftovers(marker), "the sandboxes' processes should be running before the crash"
        trees = _sandbox_trees(marker)
        _say(f"{len(trees)} processes belong to the sandboxes before the crash")
        if docker:
            assert _containers(marker)
        _say(f"driver {proc.pid} holds {actors}; killing it with SIGKILL")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 60
        left: list[str] = ["?"]
        while time.monotonic() < deadline:
            left = (
                [n for n in list_sandbox_actors() if marker in n]
                + _leftovers(marker)
                + _alive(trees)
                + (_containers(marker) if docker else [])
            )
            if not left:
                break
            time.sleep(0.5)
        _say(f"left after the driver's crash: {left or 'nothing'}")
        assert not left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
