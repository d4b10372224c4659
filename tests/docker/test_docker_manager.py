"""The spec's SandboxManager on the Docker backend: 8 concurrent docker sandboxes, nothing left after (on a
foreign image and on ours)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alphora.sandbox import BackendType, SandboxManager


async def test_manager_runs_eight_docker_sandboxes_concurrently(
    tmp_path: Path, image: str, objects_of: Callable[[str], tuple[list[str], list[str]]]
) -> None:
    manager = SandboxManager(
        base_path=str(tmp_path),
        default_backend=BackendType.DOCKER,
        max_sandboxes=100,
        auto_cleanup=True,
        docker_image=image,
    )
    await manager.start()
    try:
        sandboxes = await asyncio.gather(*(manager.create_sandbox(f"worker-{i}") for i in range(8)))
        assert all(s.backend_type == "docker" for s in sandboxes)
        results = await asyncio.gather(
            *(s.run(f"import os; print('worker {i}', os.getuid())") for i, s in enumerate(sandboxes))
        )
        assert [r.stdout for r in results] == [f"worker {i} 1000\n" for i in range(8)]
        # each has its own container: a file in one is not in another
        await sandboxes[0].write_file("only-here.txt", "0")
        assert not await sandboxes[1].file_exists("only-here.txt")
        health = await manager.health_check_all()
        assert all(health.values())
        ids = [s.sandbox_id for s in sandboxes]
        assert all(len(objects_of(sid)[0]) == 1 for sid in ids)
        await manager.destroy_all()
        for sid in ids:
            assert objects_of(sid) == ([], []), sid
    finally:
        await manager.shutdown()
