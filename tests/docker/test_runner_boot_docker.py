"""Docker: the runner (the container's PID 1) never runs code that sandbox code planted for its
next start, in the workspace (its cwd), the image's site-packages or the home volume's user site
(both survive a restart). See tests/core/test_runner_boot.py for the attack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from alphora.sandbox import Sandbox

from .._support.runner_plants import plant, runner_markers
from .conftest import IMAGE_PARAMS, require_image

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]


@pytest_asyncio.fixture(loop_scope="module", params=IMAGE_PARAMS)
async def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    sb = Sandbox.create_docker(base_path=tmp_path, docker_image=require_image(request.param))
    await sb.start()
    try:
        yield sb
    finally:
        await sb.destroy()


async def test_planted_code_never_runs_in_the_restarted_runner(sandbox: Sandbox) -> None:
    await plant(sandbox)
    await sandbox.restart()
    runner, in_runner = await runner_markers(sandbox)
    assert in_runner == [], f"planted code ran inside the runner (pid {runner}): {in_runner}"
    r = await sandbox.run("import os; print(sorted(os.listdir('plant-marks')))")
    assert "pth-" in r.stdout, f"the user site's .pth no longer runs for user code: {r.stdout}"
