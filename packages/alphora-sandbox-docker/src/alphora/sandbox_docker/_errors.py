"""Map the docker SDK's exceptions to the library's error tree, in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alphora.sandbox.errors import ContainerError, DockerError

__all__ = ["build_hint", "map_docker_errors"]


def build_hint(image: str) -> str:
    """The command that builds a missing image locally (no registry needed)."""
    from .images import recipe_for_tag

    recipe = recipe_for_tag(image)
    name = recipe.name if recipe is not None else "base"
    return f"alphora-sandbox docker build {name}  (or: python -m alphora.sandbox_docker build {name})"


@contextlib.contextmanager
def map_docker_errors(what: str, *, sandbox_id: str | None = None, image: str | None = None) -> Iterator[None]:
    """Re-raise docker SDK / engine failures as DockerError / ContainerError with context."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except DockerError:
        raise
    except docker.errors.ImageNotFound as exc:
        img = image or "?"
        raise DockerError(
            f"{what}: docker image {img!r} is not present on the engine and no registry is used. "
            f"Build it locally with: {build_hint(img)}",
            sandbox_id=sandbox_id,
            image=img,
        ) from exc
    except docker.errors.NotFound as exc:
        raise ContainerError(f"{what}: {exc.explanation or exc}", sandbox_id=sandbox_id) from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: {exc.explanation or exc}", sandbox_id=sandbox_id) from exc
    except docker.errors.DockerException as exc:
        raise DockerError(f"{what}: {exc}", sandbox_id=sandbox_id) from exc
    except requests.exceptions.RequestException as exc:
        raise DockerError(f"{what}: the Docker engine did not answer ({exc})", sandbox_id=sandbox_id) from exc
