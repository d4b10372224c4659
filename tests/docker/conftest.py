"""Docker tests run against a real engine, on two images.

* the **foreign** image: one this project did not build, the way a user has one. It is
  ``python:3.11-slim`` (the spec's default image) unless ``ALPHORA_TEST_FOREIGN_IMAGE`` names another
  tag. ``.ci/docker-setup.sh`` provides a stand-in for the upstream image (plain Debian bookworm with
  python3, pip and venv; no sandbox user, no ``/workspace``, no baked CA) when no real one is there.
  An image that carries our builder's recipe label is refused as "foreign": it would hide exactly
  the bugs these runs are for.
* **ours**: ``alphora/sandbox:base`` (``alphora-sandbox docker build base``).

Tests that take the ``image`` fixture (and ``shared_sandbox``, and the contract suite) run on both;
tests that need our image's extras (the baked CA certificates, the builder itself) use
``our_image`` and say why.

The **runtime** dimension: the contract suite and the hostile tests of ``test_docker_runsc.py`` run
again under gVisor (``runtime="runsc"``) on our image (one image, to keep CI time modest), through the
``runsc_image`` fixture. Without a ``runsc`` runtime registered with the engine they are skipped with
the reason, and fail under ``CI`` (``.ci/docker-setup.sh`` installs and registers it).

Every test here except the ``test_unit_*`` modules is marked ``docker``. Without an engine or an
image they are skipped with the reason shown, *unless* the environment variable ``CI`` is set: in CI
a missing engine or image fails loudly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import ResourceLimits, Sandbox

#: an image this project did not build; the spec's default unless the environment names another
FOREIGN_IMAGE = os.environ.get("ALPHORA_TEST_FOREIGN_IMAGE") or "python:3.11-slim"
OUR_IMAGE = "alphora/sandbox:base"
#: the builder's label: an image that has it is ours, whatever its tag
RECIPE_LABEL = "org.alphora.sandbox.recipe"
#: ``image`` fixture parameters: every test that takes it runs on both images
IMAGE_PARAMS = [pytest.param(FOREIGN_IMAGE, id="foreign"), pytest.param(OUR_IMAGE, id="ours")]
#: gVisor's runtime name, as .ci/docker-setup.sh registers it with dockerd
RUNSC = "runsc"
#: runsc with --host-uds=open as well (.ci/docker-setup.sh registers both): what egress needs under gVisor
RUNSC_EGRESS = "runsc-egress"
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
    return None


def _image_problem(image: str, foreign: bool | None) -> str | None:
    """Why ``image`` cannot be used here (None: it can). ``foreign``: True = must not be ours,
    False = must be ours, None = any."""
    import docker
    import docker.errors

    client = docker.from_env()
    try:
        try:
            labels = client.api.inspect_image(image)["Config"].get("Labels") or {}
        except docker.errors.ImageNotFound:
            if image == OUR_IMAGE:
                return f"image {image} is missing: build it with `alphora-sandbox docker build base --host-ca`"
            return (
                f"image {image} is missing: run .ci/docker-setup.sh (it makes a foreign stand-in for "
                f"python:3.11-slim) or pull it, or set ALPHORA_TEST_FOREIGN_IMAGE to an image with python3"
            )
    finally:
        client.close()
    if foreign is True and RECIPE_LABEL in labels:
        return (
            f"{image} is alphora-sandbox's own image (an old builder tagged it), not a foreign one: run "
            f".ci/docker-setup.sh to give the tag to a foreign stand-in, or set ALPHORA_TEST_FOREIGN_IMAGE"
        )
    if foreign is False and RECIPE_LABEL not in labels:
        return f"{image} was not built by alphora-sandbox: rebuild it with `alphora-sandbox docker build base`"
    return None


_problems: dict[tuple[str, bool | None], str | None] = {}


def _fail_or_skip(problem: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the Docker tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


def _gate() -> None:
    """Skip (or, under CI, fail) when no engine answers."""
    key = ("", None)
    if key not in _problems:
        _problems[key] = _engine_problem()
    problem = _problems[key]
    if problem is not None:
        _fail_or_skip(problem)


def require_image(image: str, *, foreign: bool | None = None) -> str:
    """``image`` if the engine has it (and it is foreign / ours as asked), else skip (CI: fail)."""
    _gate()
    if foreign is None and image == FOREIGN_IMAGE:
        foreign = True
    elif foreign is None and image == OUR_IMAGE:
        foreign = False
    key = (image, foreign)
    if key not in _problems:
        _problems[key] = _image_problem(image, foreign)
    problem = _problems[key]
    if problem is not None:
        _fail_or_skip(problem)
    return image


def require_runtime(runtime: str) -> str:
    """``runtime`` if it is registered with the engine (``docker info`` Runtimes), else skip (CI: fail)."""
    _gate()
    key = (f"runtime:{runtime}", None)
    if key not in _problems:
        import docker

        client = docker.from_env()
        try:
            runtimes = client.info().get("Runtimes") or {}
        finally:
            client.close()
        _problems[key] = (
            None
            if runtime in runtimes
            else (
                f"no {runtime!r} runtime is registered with the Docker engine (it has: {', '.join(sorted(runtimes))}); "
                f"run .ci/docker-setup.sh, which installs gVisor's runsc and registers it"
            )
        )
    problem = _problems[key]
    if problem is not None:
        _fail_or_skip(problem)
    return runtime


@pytest.fixture(scope="session")
def runsc_image() -> str:
    """Our image, on an engine that has the ``runsc`` (gVisor) runtime: the runtime dimension's image."""
    require_runtime(RUNSC)
    return require_image(OUR_IMAGE, foreign=False)


@pytest.fixture(autouse=True)
def _require_engine(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        _gate()


@pytest.fixture(params=IMAGE_PARAMS)
def image(request: pytest.FixtureRequest) -> str:
    """Each image a sandbox must work on: the foreign one, then ours."""
    return require_image(request.param)


@pytest.fixture(scope="session")
def foreign_image() -> str:
    """An image this project did not build (python:3.11-slim unless ALPHORA_TEST_FOREIGN_IMAGE says)."""
    return require_image(FOREIGN_IMAGE, foreign=True)


@pytest.fixture(scope="session")
def our_image() -> str:
    """alphora/sandbox:base: for tests that need what only our image has (they say what)."""
    return require_image(OUR_IMAGE, foreign=False)


@pytest.fixture(scope="session")
def spec_images() -> tuple[str, str]:
    """The tags the spec's examples name, present on the engine (whoever built them)."""
    return require_image("python:3.11-slim", foreign=None), require_image("python:3.11", foreign=None)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    _gate()
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=IMAGE_PARAMS)
async def shared_sandbox(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Sandbox]:
    """One started docker sandbox shared by a module's tests (state that doesn't matter), per image."""
    sandbox = Sandbox.create_docker(
        base_path=tmp_path_factory.mktemp("docker-sandboxes"),
        docker_image=require_image(request.param),
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
