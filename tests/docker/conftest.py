"""Docker tests run against a real engine and the locally built images.

Every test here except the ``test_unit_*`` modules is marked ``docker``. Without an engine they
are skipped with the reason shown, *unless* the environment variable ``CI`` is set: in CI a
missing engine or image fails loudly (``.ci/docker-setup.sh`` provides both).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import ResourceLimits, Sandbox

BASE_IMAGE = "python:3.11-slim"
REQUIRED_IMAGES = ("python:3.11-slim", "alphora/sandbox:base")
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.parent == _HERE and not path.name.startswith("test_unit_"):
            item.add_marker(pytest.mark.docker)


def _engine_problem() -> str | None:
    from alphora.sandbox_docker import is_docker_available

    if not is_docker_available():
        return "no Docker engine answers (start dockerd, or run .ci/docker-setup.sh)"
    import docker

    client = docker.from_env()
    try:
        missing = [img for img in REQUIRED_IMAGES if not client.images.list(name=img)]
    finally:
        client.close()
    if missing:
        return f"images {missing} are missing: build them with `alphora-sandbox docker build base --host-ca`"
    return None


_problem: list[str | None] = []


def _gate() -> None:
    """Skip (or, under CI, fail) when the engine or the images are missing."""
    if not _problem:
        _problem.append(_engine_problem())
    problem = _problem[0]
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the Docker tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _require_engine(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        _gate()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    _gate()
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    """One started docker sandbox shared by a module's tests (state that doesn't matter)."""
    _gate()
    sandbox = Sandbox.create_docker(
        base_path=tmp_path_factory.mktemp("docker-sandboxes"),
        docker_image=BASE_IMAGE,
        resource_limits=ResourceLimits(timeout_seconds=30, memory_mb=256, max_processes=64),
    )
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.destroy()


@pytest.fixture
def objects_of(docker_client: Any) -> Callable[[str], tuple[list[str], list[str]]]:
    """``objects_of(sandbox_id)``: names of its containers (any state) and volumes, by label."""

    def find(sandbox_id: str) -> tuple[list[str], list[str]]:
        flt = {"label": [f"org.alphora.sandbox.id={sandbox_id}"]}
        containers = [c.name for c in docker_client.containers.list(all=True, filters=flt)]
        volumes = [v.name for v in docker_client.volumes.list(filters=flt)]
        return containers, volumes

    return find
