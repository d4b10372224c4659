"""alphora-sandbox Docker backend plugin: hardened containers on a real engine.

::

    from alphora.sandbox import Sandbox, DockerBackend, is_docker_available

    if is_docker_available():
        async with Sandbox.create_docker(docker_image="python:3.11-slim") as sandbox:
            result = await sandbox.run("import sys; print(sys.version)")

Images are built locally with ``alphora-sandbox docker build`` (no registry needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import is_docker_available
    from .backend import DockerBackend
    from .images import RECIPES, BuildOptions, BuildReport, ImageRecipe, build_images
    from .options import DockerOptions
    from .reaper import PruneReport, aprune_orphans, prune_orphans

# name -> module that defines it, imported on first access (PEP 562): importing the package (as the
# plugin entry point does) costs nothing until a name is used
_LAZY: dict[str, str] = {
    "is_docker_available": "._client",
    "DockerBackend": ".backend",
    "RECIPES": ".images",
    "BuildOptions": ".images",
    "BuildReport": ".images",
    "ImageRecipe": ".images",
    "build_images": ".images",
    "DockerOptions": ".options",
    "PruneReport": ".reaper",
    "aprune_orphans": ".reaper",
    "prune_orphans": ".reaper",
}

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
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
