"""Package operations on Docker: the scenario tests/core/test_packages.py runs on the local tiers.

Gated by tests/docker/conftest.py (skipped with the reason without an engine; under ``CI`` that fails).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox
from tests._support.packages import install_then_uninstall


@pytest.mark.slow
async def test_install_then_uninstall_behaves_as_on_the_local_tiers(image: str, tmp_path: Path) -> None:
    # image (tests/docker/conftest.py): the image we build and one we did not
    limits = ResourceLimits(timeout_seconds=120)
    async with Sandbox.create_docker(base_path=tmp_path, docker_image=image, resource_limits=limits) as sandbox:
        # where it goes: the sandbox's own environment, the home volume
        await install_then_uninstall(sandbox, own_env="/home/sandbox/.local/")
        await sandbox.destroy()
