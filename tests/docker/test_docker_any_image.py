"""Any image with python3 works: images made here, locally, to stand for what users have (no pulls, no
registry). An image without python3 is one clear error naming it; the ``user`` option keeps working;
the image's own PATH and ENTRYPOINT do not get in the way; the setup step refuses what it cannot do."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import DockerError, ResourceLimits, Sandbox

WHO = r"""
import json, os
st = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
open("mine.txt", "w").write("x")
open(os.path.expanduser("~/mine.txt"), "w").write("x")
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "cap_eff": int(st["CapEff"], 16),
                  "cap_prm": int(st["CapPrm"], 16), "owner": os.stat("mine.txt").st_uid}))
"""


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _build(client: Any, tag: str, dockerfile: str) -> None:
    out = client.api.build(
        fileobj=io.BytesIO(_tar({"Dockerfile": dockerfile.encode()})),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        network_mode="none",
        decode=True,
    )
    errors = [chunk["error"] for chunk in out if "error" in chunk]
    assert not errors, errors


@pytest.fixture(scope="module")
def made_images(docker_client: Any, foreign_image: str) -> Iterator[dict[str, str]]:
    """Images made here: one without python3 (``docker import`` of a tiny tarball), and two on top
    of the foreign image: python3 only on the image's own PATH, and an ENTRYPOINT that is not python."""
    tags = {
        "no_python": "alphora-test/no-python:1",
        "own_path": "alphora-test/python-elsewhere:1",
        "entrypoint": "alphora-test/with-entrypoint:1",
    }
    repo, _, tag = tags["no_python"].rpartition(":")
    docker_client.api.import_image_from_data(_tar({"etc/motd": b"no python here\n"}), repository=repo, tag=tag)
    _build(
        docker_client,
        tags["own_path"],
        (
            f"FROM {foreign_image}\n"
            'RUN mkdir -p /opt/py/bin && ln -s "$(readlink -f /usr/bin/python3)" /opt/py/bin/python3 '
            "&& rm /usr/bin/python3\n"
            "ENV PATH=/opt/py/bin:/usr/bin:/bin\n"
        ),
    )
    _build(docker_client, tags["entrypoint"], f'FROM {foreign_image}\nENTRYPOINT ["/bin/false"]\nCMD ["--nope"]\n')
    try:
        yield tags
    finally:
        for name in tags.values():
            try:
                docker_client.images.remove(name, force=True)
            except Exception:  # noqa: BLE001 - best-effort cleanup of this module's own images
                pass


async def test_image_without_python3_is_one_clear_error(
    tmp_path: Path, made_images: dict[str, str], objects_of: Any
) -> None:
    image = made_images["no_python"]
    sandbox = Sandbox.create_docker(base_path=tmp_path, docker_image=image)
    with pytest.raises(DockerError) as err:
        await sandbox.start()
    message = str(err.value)
    assert message.startswith(f"image {image!r} has no python3"), message
    assert "3.8 or newer" in message
    await sandbox.destroy()
    assert objects_of(sandbox.sandbox_id) == ([], [])


async def test_python3_on_the_images_own_path(tmp_path: Path, made_images: dict[str, str]) -> None:
    async with Sandbox.create_docker(base_path=tmp_path, docker_image=made_images["own_path"]) as sandbox:
        result = await sandbox.run("import os, sys; print(sys.executable, os.environ['PATH'])")
        assert result.success, result
        executable, path = result.stdout.split()
        assert executable.startswith("/opt/py/bin/python3")
        assert path == "/home/sandbox/.local/bin:/opt/py/bin:/usr/bin:/bin"
        await sandbox.destroy()


async def test_the_images_entrypoint_is_not_used(tmp_path: Path, made_images: dict[str, str]) -> None:
    async with Sandbox.create_docker(base_path=tmp_path, docker_image=made_images["entrypoint"]) as sandbox:
        await sandbox.write_file("a.txt", "A")
        assert (await sandbox.run("print(open('a.txt').read())")).stdout == "A\n"
        await sandbox.destroy()


@pytest.mark.parametrize("user", ["4321:4322", "4321"])
async def test_user_option_runs_code_as_that_user(tmp_path: Path, image: str, user: str) -> None:
    # on ours the home volume starts with the image's /home/sandbox (owned by 1000, mode 0700):
    # the setup step gives all of it to the user asked for
    sandbox = Sandbox.create_docker(
        base_path=tmp_path,
        docker_image=image,
        backend_options={"user": user},
        resource_limits=ResourceLimits(timeout_seconds=30),
    )
    async with sandbox:
        result = await sandbox.run(WHO)
        assert result.success, result.stderr
        info = json.loads(result.stdout)
        gid = int(user.partition(":")[2] or user)  # no group given and no passwd entry: the uid's number
        assert info == {"uid": 4321, "gid": gid, "cap_eff": 0, "cap_prm": 0, "owner": 4321}
        await sandbox.write_file("api.txt", "y")
        owner = await sandbox.run("import os; print(os.stat('api.txt').st_uid)")
        assert owner.stdout == "4321\n"
        await sandbox.destroy()


async def test_user_option_by_name(tmp_path: Path, our_image: str) -> None:
    # needs our image: the name ``sandbox`` is in its /etc/passwd (a foreign image has no such user)
    sandbox = Sandbox.create_docker(base_path=tmp_path, docker_image=our_image, backend_options={"user": "sandbox"})
    async with sandbox:
        info = json.loads((await sandbox.run(WHO)).stdout)
        assert info == {"uid": 1000, "gid": 1000, "cap_eff": 0, "cap_prm": 0, "owner": 1000}
        await sandbox.destroy()


async def test_user_option_root_on_purpose_has_no_capability(tmp_path: Path, foreign_image: str) -> None:
    sandbox = Sandbox.create_docker(base_path=tmp_path, docker_image=foreign_image, backend_options={"user": "0:0"})
    async with sandbox:
        info = json.loads((await sandbox.run(WHO)).stdout)
        assert info == {"uid": 0, "gid": 0, "cap_eff": 0, "cap_prm": 0, "owner": 0}
        await sandbox.destroy()


async def test_unknown_user_is_refused_naming_the_image(tmp_path: Path, foreign_image: str, objects_of: Any) -> None:
    sandbox = Sandbox.create_docker(
        base_path=tmp_path, docker_image=foreign_image, backend_options={"user": "nobody-here"}
    )
    with pytest.raises(DockerError) as err:
        await sandbox.start()
    assert str(err.value) == (
        f"the sandbox cannot start in image {foreign_image!r}: user 'nobody-here' is not in the image's "
        f"/etc/passwd; give a numeric uid:gid"
    )
    await sandbox.destroy()
    assert objects_of(sandbox.sandbox_id) == ([], [])
