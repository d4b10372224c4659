"""The image builder on the real engine: reuse, aliases, CA certificates baked in and kept. These are about
our images, so they run on ours only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import Sandbox
from alphora.sandbox_docker import BuildOptions, build_images
from alphora.sandbox_docker.images import LABEL_RECIPE, UPSTREAM_TAGS, Reporter, split_pem_bundle


class _Notes(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def done(self, text: str) -> None:
        self.lines.append(text)

    def note(self, text: str) -> None:
        self.lines.append(text)


def _host_bundle() -> Path:
    # the bundle .ci/docker-setup.sh bakes in
    for cand in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return Path(cand)
    pytest.skip("this host has no CA bundle to compare with")


def _image_id(client: Any, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except Exception:  # noqa: BLE001 - absent
        return None


def test_build_is_reused_when_up_to_date(docker_client: Any, our_image: str) -> None:
    opts = BuildOptions(source="debian", ca_certs=[_host_bundle()])  # what .ci/docker-setup.sh builds
    upstream_before = {tag: _image_id(docker_client, tag) for tag in UPSTREAM_TAGS}
    build_images(["base"], options=opts)  # builds only if the recipe changed
    again = build_images(["minimal"], options=opts)
    assert [r.name for r in again] == ["base"]
    assert again[0].reused is True
    assert set(again[0].tags) == {"alphora/sandbox:base", "alphora/sandbox:minimal"}
    # the upstream tags are never the builder's, whatever they hold
    assert {tag: _image_id(docker_client, tag) for tag in UPSTREAM_TAGS} == upstream_before
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
    notes = _Notes()
    try:
        (report,) = build_images(["base"], options=BuildOptions(source="registry"), reporter=notes)
        assert report.source == f"{upstream} (local)"
        assert report.reused is False
        assert f"using the engine's {upstream} (not built by alphora-sandbox; no registry used)" in notes.lines
        assert not [line for line in notes.lines if "from a registry" in line], notes.lines
        built = docker_client.images.get(target)
        assert built.attrs["Config"]["User"] == "1000:1000"
        assert built.labels[LABEL_RECIPE]
        history = [h.get("Id") for h in built.history()]
        assert rootfs.id in history  # really FROM the upstream image
        out = docker_client.containers.run(
            target, ["python", "-c", "import os; print(os.getuid())"], remove=True, network_mode="none"
        )
        assert out.strip() == b"1000"
    finally:
        for tag in (target, upstream):
            try:
                docker_client.images.remove(tag, noprune=False)
            except Exception:  # noqa: BLE001 - best-effort cleanup of test tags
                pass


@pytest.fixture
def test_base(monkeypatch: pytest.MonkeyPatch, docker_client: Any) -> Iterator[tuple[str, list[str]]]:
    """The builder's base recipe under a test tag (the shared alphora/sandbox:base stays as it is), and a
    list where the test puts the ids of the images it built (removed afterwards)."""
    from alphora.sandbox_docker import images

    target = "alphora-test/ca-sandbox:base"
    monkeypatch.setattr(images, "RECIPES", {"base": images.ImageRecipe(name="base", tag=target, description="t")})
    monkeypatch.setattr(images, "_NAME_ALIASES", {})
    built: list[str] = []
    try:
        yield target, built
    finally:
        for ref in (target, *built):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001 - best-effort cleanup of the test's own images
                pass


def test_a_build_without_ca_certificates_keeps_the_ones_the_image_has(
    test_base: tuple[str, list[str]], tmp_path: Path, docker_client: Any
) -> None:
    from alphora.sandbox_docker.images import _existing_certs

    test_base, built = test_base
    pem = tmp_path / "one.pem"
    pem.write_bytes(split_pem_bundle(_host_bundle().read_bytes())[0])
    (first,) = build_images(["base"], options=BuildOptions(source="debian", ca_certs=[pem]))
    built.append(first.image_id)
    assert _existing_certs(docker_client, test_base) == [pem.read_bytes()]
    notes = _Notes()
    (plain,) = build_images(["base"], options=BuildOptions(source="debian"), reporter=notes)
    assert plain.reused is True  # not silently rebuilt without the certificate
    assert plain.image_id == first.image_id
    assert any("keeping the 1 extra CA certificate(s)" in line for line in notes.lines), notes.lines
    (dropped,) = build_images(["base"], options=BuildOptions(source="debian", keep_ca_certs=False))
    built.append(dropped.image_id)
    assert dropped.reused is False
    assert _existing_certs(docker_client, test_base) == []
