"""The image builder on the real engine: reuse, aliases, CA certificates baked in."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import Sandbox
from alphora.sandbox_docker import BuildOptions, build_images
from alphora.sandbox_docker.images import LABEL_RECIPE, split_pem_bundle


def _host_bundle() -> Path:
    # the bundle .ci/docker-setup.sh bakes in
    for cand in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return Path(cand)
    pytest.skip("this host has no CA bundle to compare with")


def test_build_is_reused_when_up_to_date(docker_client: Any) -> None:
    opts = BuildOptions(ca_certs=[_host_bundle()])
    build_images(["base"], options=opts)  # builds only if the recipe changed
    again = build_images(["minimal"], options=opts)
    assert [r.name for r in again] == ["base"]
    assert again[0].reused is True
    assert set(again[0].tags) >= {"alphora/sandbox:base", "alphora/sandbox:minimal"}
    image = docker_client.images.get("alphora/sandbox:minimal")
    assert image.id == again[0].image_id
    assert image.labels[LABEL_RECIPE]
    assert image.attrs["Config"]["User"] == "1000:1000"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def our_sandbox(our_image: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox.create_docker(base_path=tmp_path_factory.mktemp("ours"), docker_image=our_image)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.destroy()


@pytest.mark.asyncio(loop_scope="module")
async def test_extra_ca_certificates_are_trusted_inside(our_sandbox: Sandbox) -> None:
    # needs our image: the CA certificates are what our builder bakes in
    host = {c.strip() for c in split_pem_bundle(_host_bundle().read_bytes())}
    result = await our_sandbox.run("print(open('/etc/ssl/certs/ca-certificates.crt').read())")
    assert result.success, result.stderr
    inside = {c.strip() for c in split_pem_bundle(result.stdout.encode())}
    assert host
    assert host <= inside, f"{len(host - inside)} of the host's certificates are not trusted in the image"
    pip_env = await our_sandbox.run("import os; print(os.environ.get('PIP_CERT'), os.environ.get('SSL_CERT_FILE'))")
    assert pip_env.stdout.split() == ["/etc/ssl/certs/ca-certificates.crt"] * 2


def test_registry_path_builds_from_the_upstream_image(monkeypatch: pytest.MonkeyPatch, docker_client: Any) -> None:
    """With an upstream python:3.11-slim available (here: a foreign image under a test name, since no
    registry is reachable), the base is built FROM it instead of from Debian packages."""
    from alphora.sandbox_docker import images

    upstream = "alphora-test/upstream-python:3.11-slim"
    target = "alphora-test/sandbox:base"
    rootfs = docker_client.images.get(images.ROOTFS_TAG)  # plain Debian + python3: no recipe label
    rootfs.tag(upstream)
    monkeypatch.setattr(images, "UPSTREAM_BASE", upstream)
    monkeypatch.setattr(images, "RECIPES", {"base": images.ImageRecipe(name="base", tag=target, description="t")})
    monkeypatch.setattr(images, "_NAME_ALIASES", {})
    try:
        (report,) = build_images(["base"], options=BuildOptions(source="registry"))
        assert report.source == "registry"
        assert report.reused is False
        built = docker_client.images.get(target)
        assert built.attrs["Config"]["User"] == "1000:1000"
        assert built.labels[LABEL_RECIPE]
        history = [h.get("Id") for h in built.history()]
        assert rootfs.id in history  # really FROM the upstream image
        out = docker_client.containers.run(target, ["python", "-c", "import os; print(os.getuid())"], remove=True,
                                           network_mode="none")
        assert out.strip() == b"1000"
    finally:
        for tag in (target, upstream):
            try:
                docker_client.images.remove(tag, noprune=False)
            except Exception:  # noqa: BLE001 - best-effort cleanup of test tags
                pass
