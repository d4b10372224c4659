"""Map the docker SDK's exceptions to the library's error tree, in one place."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator

from alphora.sandbox.errors import ContainerError, DockerError

from .recipes import missing_image_hint

__all__ = ["build_hint", "engine_address", "engine_unreachable", "map_docker_errors"]


def build_hint(image: str) -> str:
    """What to do about a missing image: build it locally (ours) or pull it (anything else)."""
    return missing_image_hint(image)


def engine_address(base_url: str | None = None) -> str:
    """The engine a client for ``base_url`` talks to, written the way DOCKER_HOST is."""
    if base_url:
        return base_url
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    import docker.constants

    default = docker.constants.DEFAULT_NPIPE if sys.platform == "win32" else docker.constants.DEFAULT_UNIX_SOCKET
    return default.replace("http+unix://", "unix://")


def engine_is_local(address: str) -> bool:
    """Whether an engine address (as :func:`engine_address` writes it) is on this machine: a unix
    socket, a named pipe, or TCP to a loopback address. Host paths bound into a container (the egress
    proxy's socket) exist only when it is; ``ssh://`` and TCP to any other name count as remote."""
    from urllib.parse import urlsplit

    from alphora.sandbox.rules import is_loopback_host

    parts = urlsplit(address if "://" in address else f"unix://{address}")
    if parts.scheme in ("unix", "http+unix", "npipe"):
        return True
    if parts.scheme not in ("tcp", "http", "https"):
        return False
    return is_loopback_host(parts.hostname or "")


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (the socket error under the SDK's and urllib3's wrappers)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def _connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failure to talk to the engine at all."""
    import requests.exceptions

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, requests.exceptions.ConnectionError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def engine_unreachable(
    exc: BaseException, address: str | None = None, *, what: str | None = None, sandbox_id: str | None = None
) -> DockerError:
    """The one error for "no engine answers": the address (when known), the socket's own reason,
    then the fix. ``what`` names the operation when the engine went away in the middle of one."""
    root = _root_cause(exc)
    reason = root.strerror if isinstance(root, OSError) and root.strerror else (str(root) or type(root).__name__)
    code = getattr(root, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        fix = (
            "This user may not use the engine's socket: add it to the 'docker' group, "
            "or set DOCKER_HOST (or the docker_host option) to an engine it may use."
        )
    elif isinstance(root, OSError):
        fix = (
            "Is the engine running? Start it (e.g. `sudo systemctl start docker`), "
            "or set DOCKER_HOST (or the docker_host option) to an engine that runs."
        )
    else:
        fix = "Check DOCKER_HOST (or the docker_host option): e.g. unix:///var/run/docker.sock or tcp://HOST:PORT."
    at = f" at {address}" if address else ""
    during = f" while {what}" if what else ""
    return DockerError(f"cannot reach the Docker engine{at}{during}: {reason}. {fix}", sandbox_id=sandbox_id)


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
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        if _connection_failure(exc):
            # the socket error is the cause worth showing; the SDK's wrappers above it add nothing
            raise engine_unreachable(exc, what=what, sandbox_id=sandbox_id) from _root_cause(exc)
        if isinstance(exc, docker.errors.DockerException):
            raise DockerError(f"{what}: {exc}", sandbox_id=sandbox_id) from exc
        raise DockerError(f"{what}: the Docker engine did not answer ({exc})", sandbox_id=sandbox_id) from exc
