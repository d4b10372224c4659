"""Build the sandbox images locally, with or without an image registry.

The spec's preset images (``alphora/sandbox:minimal``, ``alphora/sandbox:datascience``,
``alphora/sandbox:ml``) are built on the engine itself:

* **base** (also tagged ``alphora/sandbox:minimal``): a Debian bookworm root filesystem with
  Python 3.11, pip, venv and CA certificates. It starts ``FROM python:3.11-slim`` when the engine
  has the upstream image or a registry gives it; otherwise the root filesystem is made from Debian
  packages with ``mmdebstrap`` and ``docker import``-ed. A small build step on top adds the
  non-root ``sandbox`` user (uid 1000), ``/workspace``, the ``python`` name, extra CA certificates
  (so pip works behind a TLS-intercepting proxy) and the environment.
* **datascience** / **ml**: ``FROM`` the base, with pip packages installed at build time.

The builder never tags an image ``python:3.11-slim`` or ``python:3.11``: those names belong to the
upstream images (the spec's default image is the real ``python:3.11-slim``, which the Docker backend
runs as it is). Every image carries the label ``org.alphora.sandbox.recipe`` (a hash of everything
that went into it); an image whose label matches is reused, not rebuilt. Extra CA certificates
stick: a build that names none keeps those the existing base was built with (``keep_ca_certs``).

What each image is (names, tags, aliases, pip packages) is data in :mod:`.recipes`; the Debian root
filesystem step is in :mod:`._rootfs`. This module is the builder and re-exports the recipe names.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from alphora.sandbox.errors import ConfigurationError, DockerError

from ._errors import map_docker_errors
from ._rootfs import DEBIAN_SUITE, ROOTFS_TAG, _import_rootfs, _mmdebstrap
from .recipes import (
    _NAME_ALIASES,
    RECIPES,
    UPSTREAM_TAGS,
    ImageRecipe,
    missing_image_hint,
    recipe_for_tag,
)

if TYPE_CHECKING:
    import docker

__all__ = [
    "LABEL_RECIPE",
    "RECIPES",
    "ROOTFS_TAG",
    "BuildOptions",
    "BuildReport",
    "ImageRecipe",
    "Reporter",
    "build_images",
    "image_status",
    "missing_image_hint",
    "recipe_for_tag",
    "split_pem_bundle",
]

#: bump when the recipe text changes in a way the hash would not see
RECIPE_VERSION = "1"
LABEL_RECIPE = "org.alphora.sandbox.recipe"
LABEL_IMAGE = "org.alphora.sandbox.image"
SANDBOX_UID = 1000
UPSTREAM_BASE = "python:3.11-slim"
CA_DIR = "/usr/local/share/ca-certificates/alphora"

Source = Literal["auto", "debian", "registry"]


def _paths(values: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    return tuple(Path(x) for x in values)


@attrs.frozen(kw_only=True)
class BuildOptions:
    """How to build. ``ca_certs``: PEM files (bundles allowed) trusted inside the images."""

    source: Source = "auto"
    ca_certs: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    force: bool = False
    mirror: str | None = None
    pip_index_url: str | None = None
    pip_extra_args: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: network mode of build steps (pip needs one); None: the engine's default bridge
    build_network: str | None = None
    #: with no ``ca_certs``, build the base with the extra CA certificates the existing base has (so a
    #: plain rebuild never silently drops a proxy's CA); False builds without any
    keep_ca_certs: bool = True


class Reporter:
    """Progress sink. The CLI passes a rich one; the default is silent."""

    def step(self, text: str) -> None:
        """A new phase begins."""

    def log(self, line: str) -> None:
        """A line of build output."""

    def done(self, text: str) -> None:
        """A phase finished."""

    def note(self, text: str) -> None:
        """Something the user should know (shown even when not verbose)."""

    def upload(self, total: int) -> Callable[[int], None]:
        """Start a byte-count progress; returns the advance callback."""
        return lambda _n: None


@attrs.frozen(kw_only=True)
class BuildReport:
    name: str
    tag: str
    image_id: str
    reused: bool
    seconds: float
    tags: tuple[str, ...]
    source: str


# -- CA certificates -----------------------------------------------------------------------------

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.S)


def split_pem_bundle(data: bytes) -> list[bytes]:
    """Individual PEM certificates of a bundle, in order, without duplicates."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    for m in _PEM.finditer(data):
        cert = m.group(0).strip() + b"\n"
        if cert not in seen:
            seen.add(cert)
            out.append(cert)
    return out


def _load_certs(paths: Iterable[Path]) -> list[bytes]:
    certs: list[bytes] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read CA certificate file {str(path)!r}: {exc}", field="ca_certs") from exc
        found = split_pem_bundle(data)
        if not found:
            raise ConfigurationError(f"{str(path)!r} holds no PEM certificate", field="ca_certs", value=str(path))
        certs.extend(c for c in found if c not in certs)
    return certs


# -- Dockerfiles ---------------------------------------------------------------------------------

_BASE_DOCKERFILE = """\
FROM {root}
USER root
COPY ca/ /usr/local/share/ca-certificates/alphora/
RUN set -eu; \\
    if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null; fi; \\
    command -v python >/dev/null 2>&1 || ln -s "$(command -v python3)" /usr/local/bin/python; \\
    rm -f /usr/lib/python3*/EXTERNALLY-MANAGED; \\
    if ! getent passwd {uid} >/dev/null; then \\
        groupadd -g {uid} sandbox && useradd -u {uid} -g {uid} -m -d /home/sandbox -s /bin/sh sandbox; \\
    fi; \\
    mkdir -p /workspace /home/sandbox; \\
    usersite="$(HOME=/home/sandbox python3 -c 'import site; print(site.getusersitepackages())')"; \\
    mkdir -p "$usersite" /home/sandbox/.local/bin; \\
    chown -R {uid}:{uid} /workspace /home/sandbox; chmod 0755 /workspace; chmod 0700 /home/sandbox; \\
    python3 -c "import ssl, sys, venv, ensurepip; print(sys.version)"; \\
    python3 -m pip --version
ENV LANG=C.UTF-8 \\
    HOME=/home/sandbox \\
    PYTHONUNBUFFERED=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_NO_CACHE_DIR=1 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABEL {label_image}="base" {label_recipe}="{recipe}"
USER {uid}:{uid}
WORKDIR /workspace
CMD ["python3"]
"""

_DERIVED_DOCKERFILE = """\
FROM {parent}
USER root
ARG PIP_INDEX_URL
RUN set -eu; python3 -m pip install --no-cache-dir --no-warn-script-location {pip_args} {packages}; \\
    python3 -c "{check}"
LABEL {label_image}="{name}" {label_recipe}="{recipe}"
USER {uid}:{uid}
WORKDIR /workspace
CMD ["python3"]
"""

_IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL"}


def _base_dockerfile(root: str, recipe_hash: str) -> str:
    return _BASE_DOCKERFILE.format(
        root=root, uid=SANDBOX_UID, label_image=LABEL_IMAGE, label_recipe=LABEL_RECIPE, recipe=recipe_hash
    )


def _derived_dockerfile(recipe: ImageRecipe, parent: str, recipe_hash: str, opts: BuildOptions) -> str:
    imports = [_IMPORT_NAMES.get(p, p).replace("-", "_") for p in recipe.pip_packages]
    return _DERIVED_DOCKERFILE.format(
        parent=parent,
        pip_args=" ".join(_shell_quote(a) for a in opts.pip_extra_args),
        packages=" ".join(_shell_quote(p) for p in recipe.pip_packages),
        check="; ".join(f"import {m}" for m in imports) or "pass",
        name=recipe.name,
        uid=SANDBOX_UID,
        label_image=LABEL_IMAGE,
        label_recipe=LABEL_RECIPE,
        recipe=recipe_hash,
    )


def _shell_quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256(RECIPE_VERSION.encode())
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _context_tar(dockerfile: str, files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = {"Dockerfile": dockerfile.encode(), **files}
        dirs = sorted({os.path.dirname(n) for n in entries if os.path.dirname(n)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


# -- engine helpers ------------------------------------------------------------------------------


def _get_image(client: docker.DockerClient, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _labels(image: Any) -> dict[str, str]:
    return dict((image.attrs.get("Config") or {}).get("Labels") or {})


def image_status(client: docker.DockerClient) -> list[dict[str, Any]]:
    """Which recipe images (and aliases) exist on the engine, and what holds the upstream tags
    (``ours`` True there means an older builder of ours took the tag)."""
    rows: list[dict[str, Any]] = []
    wanted = [(recipe.name, tag) for recipe in RECIPES.values() for tag in (recipe.tag, *recipe.aliases)]
    wanted += [("upstream", tag) for tag in UPSTREAM_TAGS]
    with map_docker_errors("listing images"):
        for name, tag in wanted:
            img = _get_image(client, tag)
            labels = _labels(img) if img is not None else {}
            rows.append(
                {
                    "recipe": name,
                    "tag": tag,
                    "present": img is not None,
                    "ours": LABEL_RECIPE in labels,
                    "id": img.short_id if img is not None else "",
                    "size_mb": round(img.attrs.get("Size", 0) / 1e6, 1) if img is not None else 0.0,
                }
            )
    return rows


def _stream_build(
    client: docker.DockerClient,
    dockerfile: str,
    files: dict[str, bytes],
    tag: str,
    opts: BuildOptions,
    reporter: Reporter,
    buildargs: dict[str, str] | None = None,
) -> str:
    """Run a build, relaying its output; return the image id."""
    ctx = _context_tar(dockerfile, files)
    image_id = ""
    last_error = ""
    for chunk in client.api.build(
        fileobj=ctx,
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
        buildargs=buildargs or None,
        network_mode=opts.build_network,
    ):
        if "stream" in chunk:
            for line in str(chunk["stream"]).splitlines():
                if line.strip():
                    reporter.log(line.rstrip())
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            image_id = str(chunk["aux"]["ID"])
        if "error" in chunk:
            last_error = str(chunk.get("error") or chunk.get("errorDetail"))
            reporter.log(last_error)
    if last_error or not image_id:
        raise DockerError(f"building {tag} failed: {last_error or 'no image produced'}", image=tag)
    return image_id


def _tag_aliases(client: docker.DockerClient, image_id: str, aliases: Sequence[str], reporter: Reporter) -> list[str]:
    """Tag the image with its aliases, never over a foreign image (one without our label)."""
    done: list[str] = []
    for alias in aliases:
        existing = _get_image(client, alias)
        if existing is not None and existing.id != image_id and LABEL_RECIPE not in _labels(existing):
            reporter.log(f"keeping the existing {alias} (not built by alphora-sandbox)")
            continue
        repo, _, tag = alias.rpartition(":")
        client.api.tag(image_id, repo, tag)
        done.append(alias)
    return done


def _upstream_base(client: docker.DockerClient, reporter: Reporter) -> str | None:
    """Where ``python:3.11-slim`` came from: ``"local"`` (the engine has the upstream image: not one
    of ours), ``"pulled"`` (a registry gave it now), or None."""
    import docker.errors

    img = _get_image(client, UPSTREAM_BASE)
    if img is not None and LABEL_RECIPE not in _labels(img):
        return "local"
    reporter.step(f"pulling {UPSTREAM_BASE} from a registry")
    try:
        repo, _, tag = UPSTREAM_BASE.rpartition(":")
        client.api.pull(repo, tag=tag)
    except (docker.errors.APIError, docker.errors.DockerException) as exc:
        reporter.log(f"no registry: pulling {UPSTREAM_BASE} failed ({str(exc).splitlines()[0][:160]})")
        return None
    return "pulled"


def _root_image(client: docker.DockerClient, opts: BuildOptions, reporter: Reporter) -> tuple[str, str]:
    """(image reference to build FROM, where it came from)."""
    if opts.source in ("auto", "registry"):
        how = _upstream_base(client, reporter)
        if how == "local":
            reporter.done(f"using the engine's {UPSTREAM_BASE} (not built by alphora-sandbox; no registry used)")
            return UPSTREAM_BASE, f"{UPSTREAM_BASE} (local)"
        if how == "pulled":
            reporter.done(f"pulled {UPSTREAM_BASE} from a registry")
            return UPSTREAM_BASE, f"{UPSTREAM_BASE} (pulled)"
        if opts.source == "registry":
            raise DockerError(
                f"the engine has no upstream {UPSTREAM_BASE} and no registry answered (use --source debian)"
            )
    existing = _get_image(client, ROOTFS_TAG)
    if existing is not None and not opts.force:
        reporter.done(f"reusing the Debian root filesystem {ROOTFS_TAG}")
        return ROOTFS_TAG, "debian"
    reporter.step(f"building a Debian {DEBIAN_SUITE} root filesystem with mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="alphora-rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        _mmdebstrap(tarball, opts.mirror, reporter)
        reporter.done(f"root filesystem built ({tarball.stat().st_size / 1e6:.0f} MB)")
        reporter.step(f"importing it as {ROOTFS_TAG}")
        _import_rootfs(client, tarball, reporter)
    reporter.done(f"imported {ROOTFS_TAG}")
    return ROOTFS_TAG, "debian"


# -- building ------------------------------------------------------------------------------------


def _order(names: Iterable[str]) -> list[ImageRecipe]:
    wanted: list[ImageRecipe] = []

    def add(recipe: ImageRecipe) -> None:
        if recipe.parent:
            add(RECIPES[recipe.parent])
        if recipe not in wanted:
            wanted.append(recipe)

    for name in names:
        if name == "all":
            for r in RECIPES.values():
                add(r)
            continue
        recipe = recipe_for_tag(name, RECIPES, _NAME_ALIASES)
        if recipe is None and name in UPSTREAM_TAGS:
            raise ConfigurationError(
                f"{name} is the upstream image's tag: the builder does not make it (and never tags over it). "
                f"Pull it where a registry answers, or build 'base' (alphora/sandbox:base) and use that",
                field="image",
                value=name,
            )
        if recipe is None:
            known = sorted({*RECIPES, *_NAME_ALIASES, "all"})
            raise ConfigurationError(f"unknown image {name!r}; known: {known}", field="image", value=name)
        add(recipe)
    return wanted


def build_images(
    names: Iterable[str],
    *,
    client: docker.DockerClient | None = None,
    options: BuildOptions | None = None,
    reporter: Reporter | None = None,
) -> list[BuildReport]:
    """Build (or reuse) the named images and what they build on. Blocking: call it in a thread
    from async code."""
    import docker as docker_mod

    opts = options or BuildOptions()
    rep = reporter or Reporter()
    with map_docker_errors("building images"):
        cli = client or docker_mod.from_env()
        recipes = _order(names)
        certs = _load_certs(opts.ca_certs)
        base = RECIPES["base"]
        if not certs and opts.keep_ca_certs and base in recipes:
            certs = _existing_certs(cli, base.tag)
            if certs:
                rep.note(
                    f"keeping the {len(certs)} extra CA certificate(s) {base.tag} was built with "
                    f"(give --ca-cert/--host-ca to change them, --drop-ca-certs to build without)"
                )
        cert_files = {f"ca/alphora-extra-{i:03d}.crt": c for i, c in enumerate(certs)}
        reports: list[BuildReport] = []
        built_ids: dict[str, str] = {}
        for recipe in recipes:
            t0 = time.monotonic()
            if recipe.parent is None:
                recipe_hash = _hash(_base_dockerfile("ROOT", ""), *certs, opts.source if opts.source != "auto" else "")
            else:
                parent_id = built_ids.get(recipe.parent) or _image_id(cli, RECIPES[recipe.parent].tag)
                recipe_hash = _hash(
                    _derived_dockerfile(recipe, "PARENT", "", opts), parent_id, opts.pip_index_url or ""
                )
            existing = _get_image(cli, recipe.tag)
            if existing is not None and not opts.force and _labels(existing).get(LABEL_RECIPE) == recipe_hash:
                tags = _tag_aliases(cli, existing.id, recipe.aliases, rep)
                rep.done(f"{recipe.tag} is up to date ({existing.short_id})")
                built_ids[recipe.name] = existing.id
                reports.append(
                    BuildReport(
                        name=recipe.name,
                        tag=recipe.tag,
                        image_id=existing.id,
                        reused=True,
                        seconds=time.monotonic() - t0,
                        tags=(recipe.tag, *tags),
                        source="cache",
                    )
                )
                continue
            if recipe.parent is None:
                root, source = _root_image(cli, opts, rep)
                rep.step(f"building {recipe.tag} FROM {root}")
                image_id = _stream_build(
                    cli, _base_dockerfile(root, recipe_hash), {"ca/.keep": b"", **cert_files}, recipe.tag, opts, rep
                )
            else:
                source = "pip"
                parent_tag = RECIPES[recipe.parent].tag
                rep.step(f"building {recipe.tag} FROM {parent_tag} (pip install {' '.join(recipe.pip_packages)})")
                buildargs = {"PIP_INDEX_URL": opts.pip_index_url} if opts.pip_index_url else None
                image_id = _stream_build(
                    cli,
                    _derived_dockerfile(recipe, parent_tag, recipe_hash, opts),
                    {},
                    recipe.tag,
                    opts,
                    rep,
                    buildargs,
                )
            tags = _tag_aliases(cli, image_id, recipe.aliases, rep)
            built_ids[recipe.name] = image_id
            rep.done(f"built {recipe.tag} ({image_id[7:19]}) in {time.monotonic() - t0:.0f} s")
            reports.append(
                BuildReport(
                    name=recipe.name,
                    tag=recipe.tag,
                    image_id=image_id,
                    reused=False,
                    seconds=time.monotonic() - t0,
                    tags=(recipe.tag, *tags),
                    source=source,
                )
            )
        for tag in UPSTREAM_TAGS:
            img = _get_image(cli, tag)
            if img is not None and LABEL_RECIPE in _labels(img):
                rep.note(
                    f"{tag} on this engine is an alphora-sandbox image an older builder tagged; it hides "
                    f"the upstream image: `docker rmi {tag}` (then pull the real one where a registry "
                    f"answers, or use alphora/sandbox:base)"
                )
        return reports


def _existing_certs(client: docker.DockerClient, tag: str) -> list[bytes]:
    """The extra CA certificates an existing image of ours was built with, in their build order."""
    import docker.errors

    img = _get_image(client, tag)
    if img is None or LABEL_RECIPE not in _labels(img):
        return []
    cid = client.api.create_container(img.id, entrypoint=["/bin/true"], network_disabled=True)["Id"]
    try:
        try:
            stream, _ = client.api.get_archive(cid, CA_DIR)
        except docker.errors.NotFound:
            return []
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".crt")), key=lambda m: m.name
            )
            found = [tar.extractfile(m) for m in members]
            return [fh.read() for fh in found if fh is not None]
    finally:
        client.api.remove_container(cid, force=True)


def _image_id(client: docker.DockerClient, tag: str) -> str:
    img = _get_image(client, tag)
    return img.id if img is not None else ""


def iter_recipes() -> Iterator[ImageRecipe]:
    yield from RECIPES.values()
