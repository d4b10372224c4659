"""Checkpoints on the local backend: round trip of files, packages and variables, incremental
uploads, and refusal of partial or corrupted checkpoints (tests/docker/test_checkpoint.py crosses
backends; tests/s3 does one round trip through S3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import Sandbox, SecurityPolicy, SecurityViolationError
from alphora.sandbox.checkpoint import BLOBS, CheckpointError
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox.storage.local import LocalStorage
from tests._support.packages import offline_index


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(StorageConfig.local(str(tmp_path / "store")))
    await store.connect()
    yield store
    await store.close()


async def _taken(sandbox: Sandbox, storage: LocalStorage) -> None:
    """A checkpoint "c" of a sandbox with a file, a package and a session's variables."""
    await offline_index(sandbox, "ckpt_probe", "1.0.0")
    assert (await sandbox.install_package("ckpt_probe")).success
    await sandbox.write_file("data/notes.txt", "kept")
    async with sandbox.session() as py:
        r = await py.run("import ckpt_probe, json\nrows = {'a': [1, 2]}\ngen = (i for i in ())\ndef helper(): pass")
        assert r.success, r.error
        res = await sandbox.checkpoint(storage, "c")
    assert res.sessions == {"default": ("ckpt_probe", "json", "rows")}
    assert set(res.unpicklable["default"]) == {"gen", "helper"}  # reported, not silently dropped
    assert "cannot pickle 'generator'" in res.unpicklable["default"]["gen"]
    assert res.packages == ("ckpt_probe==1.0.0",)


async def test_round_trip_restores_files_packages_and_variables(
    local_sandbox: Sandbox, storage: LocalStorage, tmp_path: Path
) -> None:
    await _taken(local_sandbox, storage)
    resumed = await Sandbox.resume(storage, "c", backend="local", base_path=tmp_path / "elsewhere")
    async with resumed:
        report = resumed.resume_report
        assert report is not None
        assert report.environment == "copied"
        assert report.sessions == {"default": ("ckpt_probe", "json", "rows")}
        assert set(report.not_restored["default"]) == {"gen", "helper"}
        assert await resumed.read_file("data/notes.txt") == "kept"
        async with resumed.session() as py:
            r = await py.run("rows['a'].append(3); rows, ckpt_probe.VERSION")
            assert r.value == repr(({"a": [1, 2, 3]}, "1.0.0")), r.error
        r = await resumed.run("import ckpt_probe; print(ckpt_probe.VERSION)")  # installed, not only imported
        assert r.stdout == "1.0.0\n", r.stderr
        assert not await resumed.file_exists(".alphora-checkpoint")


async def test_an_unchanged_environment_is_not_uploaded_again(local_sandbox: Sandbox, storage: LocalStorage) -> None:
    await _taken(local_sandbox, storage)
    env_blob = json.loads(await storage.get("checkpoints/c/manifest.json"))["body"]["environment"]["blob"]
    await asyncio.sleep(1.1)  # a later second: a gzip or tar time stamp would change the bytes
    await local_sandbox.run("import ckpt_probe")  # may write bytecode caches into the environment
    again = await local_sandbox.checkpoint(storage, "c")
    assert json.loads(await storage.get("checkpoints/c/manifest.json"))["body"]["environment"]["blob"] == env_blob
    assert again.uploaded_files == 0


async def test_a_one_file_change_uploads_one_file(local_sandbox: Sandbox, storage: LocalStorage) -> None:
    for i in range(20):
        await local_sandbox.write_file(f"data/{i}.bin", str(i) * 10_000)
    first = await local_sandbox.checkpoint(storage, "inc")
    assert first.uploaded_files == first.files == 20
    await local_sandbox.write_file("data/7.bin", "changed")
    second = await local_sandbox.checkpoint(storage, "inc")
    assert second.files == 20
    assert second.uploaded_files == 1
    assert second.uploaded_bytes < 5_000 < first.uploaded_bytes / 20  # "changed" plus the manifest
    third = await local_sandbox.checkpoint(storage, "inc2")  # another name shares the blobs
    assert third.uploaded_files == 0


async def test_other_python_reinstalls_from_the_requirements_or_says_it_did_not(
    local_sandbox: Sandbox, storage: LocalStorage, tmp_path: Path
) -> None:
    await _taken(local_sandbox, storage)
    key = "checkpoints/c/manifest.json"
    doc = json.loads(await storage.get(key))
    doc["body"]["environment"]["python"] = "2.7"  # as if saved on another interpreter (checksum redone)
    from alphora.sandbox.checkpoint import _canonical, _sha

    doc["sha256"] = _sha(_canonical(doc["body"]))
    await storage.put(key, json.dumps(doc).encode())
    base = tmp_path / "other"
    offline = {"PIP_NO_INDEX": "1"}
    resumed = await Sandbox.resume(storage, "c", backend="local", base_path=base, env_vars=offline)
    async with resumed:
        assert resumed.resume_report is not None
        assert resumed.resume_report.environment.startswith("not restored: saved on Python 2.7")
        assert "ckpt_probe" in resumed.resume_report.not_restored["default"]  # its module is not there
    # with the wheel reachable (restored with the workspace), the same checkpoint re-installs
    wheels = base / "again" / "wheels"
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    resumed = await Sandbox.resume(storage, "c", backend="local", base_path=base, sandbox_id="again", env_vars=env)
    async with resumed:
        assert resumed.resume_report is not None
        assert resumed.resume_report.environment.startswith("reinstalled (saved on Python 2.7")
        r = await resumed.run("import ckpt_probe; print(ckpt_probe.VERSION)")
        assert r.stdout == "1.0.0\n", r.stderr


async def test_partial_and_corrupted_checkpoints_are_refused(
    local_sandbox: Sandbox, storage: LocalStorage, tmp_path: Path
) -> None:
    await local_sandbox.write_file("a.txt", "alpha")
    await local_sandbox.write_file("b.txt", "beta")
    await local_sandbox.checkpoint(storage, "c")
    base = tmp_path / "never"
    with pytest.raises(CheckpointError, match="no checkpoint named 'nope'"):
        await Sandbox.resume(storage, "nope", base_path=base)
    body = json.loads(await storage.get("checkpoints/c/manifest.json"))["body"]
    blob_b = BLOBS + body["files"]["b.txt"]["sha256"]
    good = await storage.get(blob_b)

    await storage.put(blob_b, b"bet4")  # a flipped byte
    with pytest.raises(CheckpointError, match=r"corrupted: the blob of file 'b.txt' .* fails its checksum"):
        await Sandbox.resume(storage, "c", base_path=base)
    await storage.delete(blob_b)  # an upload that never finished
    with pytest.raises(CheckpointError, match=r"partial: 1 of its \d+ blobs are missing \(first: file 'b.txt'\)"):
        await Sandbox.resume(storage, "c", base_path=base)
    await storage.put(blob_b, good)
    manifest = await storage.get("checkpoints/c/manifest.json")
    await storage.put("checkpoints/c/manifest.json", manifest.replace(b"a.txt", b"z.txt"))
    with pytest.raises(CheckpointError, match=r"manifest .* fails its checksum"):
        await Sandbox.resume(storage, "c", base_path=base)
    await storage.put("checkpoints/c/manifest.json", manifest[: len(manifest) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"manifest .* is not valid"):
        await Sandbox.resume(storage, "c", base_path=base)
    assert not base.exists()  # refused before any sandbox was created
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        await local_sandbox.checkpoint(storage, "../x")


async def test_the_policy_checks_user_code_not_the_checkpoint_helpers(storage: LocalStorage, tmp_path: Path) -> None:
    policy = SecurityPolicy(blocked_imports=["pickle", "tarfile"])
    async with Sandbox.create_local(base_path=tmp_path / "p", security_policy=policy) as sandbox:
        async with sandbox.session() as py:
            await py.run("answer = 42")
            with pytest.raises(SecurityViolationError):
                await py.run("import pickle")
            res = await sandbox.checkpoint(storage, "policy")
        assert res.sessions == {"default": ("answer",)}
    resumed = await Sandbox.resume(storage, "policy", base_path=tmp_path / "q", security_policy=policy)
    async with resumed, resumed.session() as py:
        assert (await py.run("answer")).value == "42"
