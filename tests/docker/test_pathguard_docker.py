"""The hostile-path property on the Docker backend: links planted by sandbox code inside the container.

Sandbox code creates a sentinel directory at a unique absolute path in the container's /tmp and
plants symlinks, a hard link and a FIFO pointing there (and to /etc). The same absolute path
also exists on the host with its own secret, so a link resolved on the wrong side is caught too.
Hypothesis drives the file API with hostile paths; after every example both sentinels (and the
container's /etc/passwd) must be unchanged and no result may carry a secret.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphora.sandbox import ResourceLimits, Sandbox, SandboxError
from tests._support.loop_thread import LoopThread

pytestmark = [pytest.mark.docker, pytest.mark.slow]

T = TypeVar("T")
TOKEN = secrets.token_hex(6)
OUTSIDE = f"/tmp/alphora-guard-{TOKEN}"
SECRET = f"CONTAINER-SECRET-{TOKEN}"
HOST_SECRET = f"HOST-SECRET-{TOKEN}"

_MANIFEST = (
    f"cd {OUTSIDE} && find . -printf '%p %y %i %s %T@\\n' | sort && cat secret.txt hard_target.txt "
    "victim/inner.txt && sha256sum /etc/passwd"
)


class DockerWorld:
    def __init__(self, base: Path, runner: LoopThread, image: str) -> None:
        self.runner = runner
        self.host_outside = Path(OUTSIDE)
        self.host_outside.mkdir(mode=0o700)
        (self.host_outside / "secret.txt").write_text(HOST_SECRET)
        self.sandbox = Sandbox.create_docker(
            base_path=base, docker_image=image, resource_limits=ResourceLimits(timeout_seconds=30, memory_mb=256)
        )
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        runner = self.runner
        runner.run(self.sandbox.start())
        setup = f"""
set -e
mkdir -p {OUTSIDE}/victim
printf '{SECRET}' > {OUTSIDE}/secret.txt
printf '{SECRET}-hard' > {OUTSIDE}/hard_target.txt
printf '{SECRET}-inner' > {OUTSIDE}/victim/inner.txt
"""
        result = runner.run(self.sandbox.execute_shell(setup))
        assert result.success, result.stderr
        self.plant()
        self.before = self.manifest()

    def plant(self) -> None:
        script = f"""
set -e
cd /workspace 2>/dev/null || true
find . -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +
echo benign > benign.txt
echo benign2 > benign2.txt
mkdir -p sub d
ln -s {OUTSIDE}/secret.txt link_file
ln -s {OUTSIDE} loot
ln -s /etc etc_link
ln -s loot chain
ln -s ../../../../.. up
ln -s / d/root
ln {OUTSIDE}/hard_target.txt hard 2>/dev/null || cp {OUTSIDE}/hard_target.txt hard_copy_not_link
mkfifo fifo
"""
        result = self.runner.run(self.sandbox.execute_shell(script))
        assert result.success, result.stderr

    def manifest(self) -> tuple[str, str]:
        result = self.runner.run(self.sandbox.execute_shell(_MANIFEST))
        assert result.success, result.stderr
        return result.stdout, (self.host_outside / "secret.txt").read_text() + str(sorted(os.listdir(OUTSIDE)))

    def check(self, returned: list[Any]) -> None:
        assert self.manifest() == self.before, "the sentinel outside the workspace changed"
        text = repr(returned)
        assert SECRET not in text, "a file API call returned the container-side secret"
        assert HOST_SECRET not in text, "a file API call returned the host-side secret"
        assert "root:x:0:0" not in text, "a file API call returned /etc/passwd"

    def close(self) -> None:
        try:
            self.runner.run(self.sandbox.destroy())
        finally:
            shutil.rmtree(self.host_outside, ignore_errors=True)


@pytest.fixture(scope="module")
def dworld(foreign_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerWorld]:
    # foreign_image (tests/docker/conftest.py) gates on the engine and the image: a module-scoped
    # fixture runs before the per-test autouse gate, so it asks for the gate itself
    runner = LoopThread(timeout=120)
    world = DockerWorld(tmp_path_factory.mktemp("docker-guard"), runner, foreign_image)
    try:
        yield world
    finally:
        world.close()
        runner.close()


_PLANTED = ["link_file", "loot", "etc_link", "chain", "up", "d/root", "hard", "fifo"]
_hostile = st.builds(
    lambda h, t: "/".join(p for p in (h, t) if p),
    st.sampled_from(
        [
            *_PLANTED,
            "",
            "..",
            "../..",
            "/",
            "/workspace",
            "/workspace/..",
            OUTSIDE,
            "/etc",
            "sub/../..",
            "~",
            "benign.txt",
            "sub",
        ]
    ),
    st.sampled_from(["", "secret.txt", "victim", "victim/inner.txt", "passwd", "new.txt", "..", "tmp" + OUTSIDE]),
)
_OPS = ["read", "write", "list", "list_rec", "delete", "copy_from", "copy_to", "move_from", "move_to", "info", "mkdir"]


def _call(sandbox: Sandbox, op: str, path: str) -> Coroutine[Any, Any, Any]:
    if op == "read":
        return sandbox.read_file_bytes(path)
    if op == "write":
        return sandbox.write_file_bytes(path, b"pwned")
    if op in ("list", "list_rec"):
        return sandbox.list_files(path, recursive=op == "list_rec")
    if op == "delete":
        return sandbox.delete_file(path)
    if op == "copy_from":
        return sandbox.copy_file(path, "copied")
    if op == "copy_to":
        return sandbox.copy_file("benign.txt", path)
    if op == "move_from":
        return sandbox.move_file(path, "moved")
    if op == "move_to":
        return sandbox.move_file("benign2.txt", path)
    if op == "info":
        return sandbox.get_file_info(path)
    assert op == "mkdir"
    return sandbox.make_dir(path)


async def _attempt(sandbox: Sandbox, steps: list[tuple[str, str]]) -> list[Any]:
    returned: list[Any] = []
    for op, path in steps:
        try:
            returned.append(await asyncio.wait_for(_call(sandbox, op, path), timeout=30))
        except (SandboxError, OSError) as exc:
            returned.append(str(exc))
    return returned


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(steps=st.lists(st.tuples(st.sampled_from(_OPS), _hostile), min_size=1, max_size=3))
def test_docker_hostile_paths_never_reach_outside(dworld: DockerWorld, steps: list[tuple[str, str]]) -> None:
    dworld.plant()
    returned = dworld.runner.run(_attempt(dworld.sandbox, steps))
    dworld.check(returned)


@pytest.mark.parametrize(
    "path",
    [
        "link_file",
        "loot/secret.txt",
        "chain/victim/inner.txt",
        "etc_link/passwd",
        "d/root/etc/passwd",
        "up/etc/passwd",
        "hard",
        f"..{OUTSIDE}/secret.txt",
    ],
)
def test_docker_reads_through_planted_links_are_refused(dworld: DockerWorld, path: str) -> None:
    from alphora.sandbox import PathTraversalError

    dworld.plant()

    async def go() -> None:
        with pytest.raises((PathTraversalError, FileNotFoundError)):
            await dworld.sandbox.read_file_bytes(path)

    dworld.runner.run(go())
    dworld.check([])
