"""get_resource_usage() on Docker reports the container's memory cgroup, as the engine measures it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alphora.sandbox import ResourceLimits
from alphora.sandbox_docker import DockerBackend

BASE_IMAGE = "python:3.11-slim"
LIMIT_MB = 256
MiB = 1024 * 1024


def _engine_memory_mb(client: Any, container: str) -> float:
    """What ``docker stats`` shows: the cgroup's usage minus its inactive file cache (v1 or v2)."""
    mem = client.api.stats(container, stream=False)["memory_stats"]
    stats = mem.get("stats", {})
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return float(mem["usage"] - inactive) / MiB


async def test_memory_usage_is_what_the_engine_measures(tmp_path: Path, docker_client: Any) -> None:
    backend = DockerBackend(
        sandbox_id="usage",
        workspace_path=tmp_path / "ws",
        resource_limits=ResourceLimits(memory_mb=LIMIT_MB),
        options={"image": BASE_IMAGE},
    )
    await backend.start()
    try:
        assert (await backend.execute_code("print(1)")).success
        py = await backend.open_session()
        for step in ("idle", "100 MB allocated in a session"):
            if step != "idle":
                assert (await py.run("blob = b'x' * (100 << 20)")).success
            # the runner may still be warming up (importing its preload modules): bracket our figure
            # between two measurements of the engine
            before = _engine_memory_mb(docker_client, backend.spec.name)
            usage = await backend.get_resource_usage()
            after = _engine_memory_mb(docker_client, backend.spec.name)
            low, high = min(before, after) - 2, max(before, after) + 2
            # the runner, its spare fork and the session share most pages: counted once, like the kernel does
            assert low <= usage.memory_mb <= high, (step, usage.memory_mb, before, after)
            percent = usage.memory_mb / LIMIT_MB * 100
            assert abs(usage.memory_percent - percent) < 0.01, (step, usage.memory_percent, percent)
        assert usage.memory_mb > 100
        await py.close()
    finally:
        await backend.destroy()
