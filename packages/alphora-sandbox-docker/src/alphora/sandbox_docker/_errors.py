"""Map the docker SDK's exceptions to the library's error tree, in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alphora.sandbox.errors import ContainerError, DockerError

__all__ = ["build_hint", "map_docker_errors"]


def build_hint(image: str) -> str:
    """What to do about a missing image: build it locally (ours) or pull it (anything else)."""
    from .images import missing_image_hint

    return missing_image_hint(image)


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
            f"{what}: docker image {img!r} is not on the engine. {build_hint(img)}",
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
