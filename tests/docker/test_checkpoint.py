"""Checkpoints across backends: taken on local and resumed in a container, and the reverse, with
variables, packages and files intact (tests/core/test_checkpoint.py covers the rest on local)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox.storage.local import LocalStorage
from tests._support.packages import offline_index

CODE = "import ckpt_probe\nmodel = {'weights': [0.5, 1.5], 'name': NAME}"
CHECK = "model['weights'].append(2.5); model, ckpt_probe.VERSION"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(StorageConfig.local(str(tmp_path / "store")))
    await store.connect()
    yield store
    await store.close()


async def _take(sandbox: Sandbox, storage: LocalStorage, tag: str) -> None:
    await offline_index(sandbox, "ckpt_probe", tag)
    installed = await sandbox.install_package("ckpt_probe")
    assert installed.success, installed.stderr[-2000:]
    await sandbox.write_file("results/summary.txt", f"from {tag}")
    async with sandbox.session("ckpt") as py:
        assert (await py.run(CODE.replace("NAME", repr(tag)))).success
        res = await sandbox.checkpoint(storage, tag)
    assert res.sessions == {"ckpt": ("ckpt_probe", "model")}
    assert res.packages == (f"ckpt_probe=={tag}",)


async def _check(resumed: Sandbox, tag: str) -> None:
    report = resumed.resume_report
    assert report is not None
    # same Python and platform: copied; otherwise re-installed from the wheel restored with the files
    assert report.environment == "copied" or report.environment.startswith("reinstalled"), report.environment
    assert report.sessions == {"ckpt": ("ckpt_probe", "model")}
    assert await resumed.read_file("results/summary.txt") == f"from {tag}"
    async with resumed.session("ckpt") as py:
        r = await py.run(CHECK)
        assert r.value == repr(({"weights": [0.5, 1.5, 2.5], "name": tag}, tag)), r.error or r.stderr
    r = await resumed.run("import ckpt_probe; print(ckpt_probe.VERSION)")
    assert r.stdout == f"{tag}\n", r.stderr


async def test_local_checkpoint_resumes_in_a_container(
    local_sandbox: Sandbox, storage: LocalStorage, foreign_image: str, tmp_path: Path
) -> None:
    await _take(local_sandbox, storage, "1.0.1")
    resumed = await Sandbox.resume(
        storage,
        "1.0.1",
        backend="docker",
        docker_image=foreign_image,
        base_path=tmp_path / "docker",
        env_vars={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/workspace/wheels"},
        resource_limits=ResourceLimits(timeout_seconds=60, memory_mb=512),
    )
    async with resumed:
        await _check(resumed, "1.0.1")


@pytest.mark.asyncio(loop_scope="module")  # shared_sandbox lives in the module's loop
async def test_container_checkpoint_resumes_locally(
    shared_sandbox: Sandbox, storage: LocalStorage, tmp_path: Path
) -> None:
    await _take(shared_sandbox, storage, "1.0.2")
    base = tmp_path / "local"
    wheels = base / "back" / "wheels"
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    resumed = await Sandbox.resume(storage, "1.0.2", backend="local", base_path=base, sandbox_id="back", env_vars=env)
    async with resumed:
        await _check(resumed, "1.0.2")
