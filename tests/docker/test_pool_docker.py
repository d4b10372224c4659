"""SandboxPool on Docker: a clean reset in a new container, a changed home volume destroyed,
shutdown leaves no container or volume, and a crashed pool leaves only what the reaper removes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, SandboxManager, SandboxNotRunningError, SandboxPool
from alphora.sandbox_docker import prune_orphans

Objects = Callable[[str], tuple[list[str], list[str]]]
LIMITS = ResourceLimits(timeout_seconds=30, memory_mb=256, max_processes=64)

#: a holder that leaves what it can behind (files hidden, nested and in /tmp, a background writer; its
#: home is the other test's)
MESS = """
import os, subprocess, sys
os.makedirs("deep/er", exist_ok=True)
open("deep/er/file.txt", "w").write("left")
open(".hidden", "w").write("left")
open("/tmp/scratch.txt", "w").write("left")
daemon = "import os, time\\nwhile True:\\n    open('/workspace/daemon.txt', 'a').write('x')\\n    time.sleep(0.02)\\n"
subprocess.Popen([sys.executable, "-c", daemon], start_new_session=True)
"""


def _pool(tmp_path: Path, image: str, **kw: object) -> SandboxPool:
    return SandboxPool("docker", base_path=tmp_path, backend_options={"image": image}, resource_limits=LIMITS, **kw)


async def test_docker_reset_hands_out_a_clean_sandbox(tmp_path: Path, image: str) -> None:
    async with _pool(tmp_path, image, size=1, env_vars={"CONFIGURED": "yes"}) as pool:
        async with pool.acquire(timeout=60) as first:
            sid = first.sandbox_id
            assert (await first.run(MESS)).success
            await first.set_env("LEAKED", "secret")
            kept = first.session("kept")  # referenced until the end: never closed, never collected
            py = await kept.__aenter__()
            assert (await py.run("state = 'left'")).success
            await asyncio.sleep(0.2)
            assert await first.file_exists("daemon.txt")
        await pool.settle()
        async with pool.acquire(timeout=60) as second:
            assert second.sandbox_id == sid
            await asyncio.sleep(0.3)  # a surviving writer would have made daemon.txt again
            assert await second.list_files("", recursive=True) == []
            r = await second.run(
                "import os; print(os.listdir('/tmp'), os.environ.get('LEAKED'), os.environ.get('CONFIGURED'))"
            )
            assert r.stdout == "[] None yes\n", r
            async with second.session("kept") as py2:
                assert "NameError" in (await py2.run("print(state)")).stderr
        with pytest.raises(SandboxNotRunningError):
            await first.run("print('the first holder is locked out')")
        await pool.settle()
        assert (pool.stats().resets, pool.stats().reset_failures) == (2, 0)


async def test_docker_changed_home_is_destroyed_not_reset(
    tmp_path: Path, foreign_image: str, objects_of: Objects
) -> None:
    """A .pth in the user site of the home volume (what ``pip install --user`` leaves) would run in
    every later interpreter of the sandbox, the runner's included: the sandbox is destroyed."""
    plant = (
        "import site, os; d = site.getusersitepackages(); os.makedirs(d, exist_ok=True); "
        "open(os.path.join(d, 'planted.pth'), 'w').write('import os\\n')"
    )
    async with _pool(tmp_path, foreign_image, size=1) as pool:
        async with pool.acquire(timeout=60) as first:
            sid = first.sandbox_id
            assert (await first.run(plant)).success
        await pool.settle()
        assert pool.stats().reset_failures == 1
        assert objects_of(sid) == ([], [])  # container and both volumes gone
        async with pool.acquire(timeout=60) as second:
            assert second.sandbox_id != sid
            r = await second.run("import site, os; print(os.path.exists(site.getusersitepackages()))")
            assert r.stdout == "False\n", r


async def test_docker_pool_shutdown_leaves_nothing(tmp_path: Path, foreign_image: str, objects_of: Objects) -> None:
    pool = await _pool(tmp_path, foreign_image, size=2).start()
    held = await pool.get()
    ids = [held.sandbox_id, *(slot.backend.sandbox_id for slot in pool._idle)]
    assert len(ids) == 2
    assert all(objects_of(sid)[0] for sid in ids)
    await pool.shutdown()
    assert [objects_of(sid) for sid in ids] == [([], [])] * 2


async def test_a_crashed_pool_leaves_only_what_the_reaper_removes(
    tmp_path: Path, foreign_image: str, objects_of: Objects
) -> None:
    script = (
        "import asyncio, os\n"
        "from alphora.sandbox import SandboxPool\n"
        "async def main():\n"
        f"    pool = SandboxPool('docker', size=2, base_path={str(tmp_path)!r}, "
        f"backend_options={{'image': {foreign_image!r}}})\n"
        "    await pool.start()\n"
        "    a, b = await pool.get(), await pool.get()\n"
        "    print(a.sandbox_id, b.sandbox_id, flush=True)\n"
        "    os._exit(1)  # a crash: no shutdown, no finalizers\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False)
    ids = out.stdout.split()
    assert len(ids) == 2, out.stderr
    for sid in ids:
        containers, volumes = objects_of(sid)
        assert (len(containers), len(volumes)) == (1, 2)
        report = prune_orphans(sandbox_id=sid)
        assert set(report.containers) == set(containers)
        assert objects_of(sid) == ([], [])


async def test_manager_pool_size_on_docker(tmp_path: Path, foreign_image: str, objects_of: Objects) -> None:
    async with SandboxManager(
        base_path=tmp_path, default_backend="docker", docker_image=foreign_image, resource_limits=LIMITS, pool_size=1
    ) as manager:
        assert manager.pool is not None
        sandbox = await manager.create_sandbox()
        assert manager.pool.stats().acquired == 1
        assert (await sandbox.run("print(1)")).stdout == "1\n"
        await manager.pool.settle()
        ids = [sandbox.sandbox_id, *(slot.backend.sandbox_id for slot in manager.pool._idle)]
    assert [objects_of(sid) for sid in ids] == [([], [])] * 2


async def test_docker_image_is_taken_as_in_create_docker(tmp_path: Path, foreign_image: str) -> None:
    """``SandboxPool("docker", docker_image=...)``, the spec's name for the image (Sandbox.create_docker,
    Sandbox.create("docker", docker_image=...)): it failed at start() with Sandbox()'s TypeError."""
    async with (
        SandboxPool("docker", size=1, base_path=tmp_path, docker_image=foreign_image, resource_limits=LIMITS) as pool,
        pool.acquire(timeout=60) as sandbox,
    ):
        assert sandbox.backend.image == foreign_image  # type: ignore[attr-defined]
        assert (await sandbox.run("print('pooled')")).stdout == "pooled\n"
