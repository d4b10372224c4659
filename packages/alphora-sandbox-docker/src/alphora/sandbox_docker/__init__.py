"""alphora-sandbox Docker backend plugin: hardened containers on a real engine.

::

    from alphora.sandbox import Sandbox, DockerBackend, is_docker_available

    if is_docker_available():
        async with Sandbox.create_docker(docker_image="python:3.11-slim") as sandbox:
            result = await sandbox.run("import sys; print(sys.version)")

Images are built locally with ``alphora-sandbox docker build`` (no registry needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import is_docker_available
from .images import RECIPES, BuildOptions, BuildReport, ImageRecipe, build_images
from .options import DockerOptions
from .reaper import PruneReport, aprune_orphans, prune_orphans

if TYPE_CHECKING:
    from .backend import DockerBackend

__all__ = [
    "RECIPES",
    "BuildOptions",
    "BuildReport",
    "DockerBackend",
    "DockerOptions",
    "ImageRecipe",
    "PruneReport",
    "aprune_orphans",
    "build_images",
    "is_docker_available",
    "prune_orphans",
]


def __getattr__(name: str) -> Any:
    if name == "DockerBackend":
        from .backend import DockerBackend

        return DockerBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
