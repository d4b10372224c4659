"""The docker SDK client, availability probe, and running blocking SDK calls off the event loop."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import _root_cause, engine_address, engine_unreachable

if TYPE_CHECKING:
    import docker

__all__ = ["in_thread", "is_docker_available", "make_client"]

T = TypeVar("T")

#: HTTP connections kept per engine (sandboxes share one client; calls run in worker threads)
_POOL = 32

_clients: dict[tuple[str | None, tuple[str | None, ...], float], docker.DockerClient] = {}
_clients_lock = threading.Lock()


def make_client(base_url: str | None = None, *, timeout: float = 120.0) -> docker.DockerClient:
    """A shared client for ``base_url`` (None: ``DOCKER_HOST`` / the local socket), API version negotiated.

    No engine at that address is one :class:`~alphora.sandbox.errors.DockerError`: "cannot reach the
    Docker engine at <address>: <reason>. <fix>" (negotiating the version is the first contact)."""
    import docker as docker_mod

    # without base_url the address comes from the environment, which may change within a process
    env = () if base_url else tuple(os.environ.get(v) for v in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"))
    key = (base_url, env, timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                if base_url:
                    client = docker_mod.DockerClient(
                        base_url=base_url, timeout=int(timeout), version="auto", max_pool_size=_POOL
                    )
                else:
                    client = docker_mod.from_env(timeout=int(timeout), version="auto", max_pool_size=_POOL)
            except docker_mod.errors.DockerException as exc:
                # the socket error is the cause worth showing; the SDK's wrappers above it add nothing
                raise engine_unreachable(exc, engine_address(base_url)) from _root_cause(exc)
            _clients[key] = client
        return client


async def in_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking docker SDK call in a worker thread. Cancelling the await does not abort the
    HTTP request already sent (the engine finishes it); callers make their calls idempotent."""
    return await asyncio.to_thread(functools.partial(func, *args, **kwargs))


_probe_cache: dict[str | None, tuple[float, bool]] = {}
_PROBE_TTL = 5.0


def is_docker_available(base_url: str | None = None, *, timeout: float = 3.0) -> bool:
    """True when the docker SDK imports and an engine answers ``ping`` within ``timeout`` seconds.

    The answer is cached for a few seconds, so calling it before every sandbox is cheap."""
    now = time.monotonic()
    cached = _probe_cache.get(base_url)
    if cached is not None and now - cached[0] < _PROBE_TTL:
        return cached[1]
    try:
        import docker as docker_mod

        if base_url:
            # types-docker says int; the SDK hands the timeout to requests, which takes seconds as a float
            client = docker_mod.DockerClient(base_url=base_url, timeout=timeout, version="auto")  # type: ignore[arg-type]
        else:
            client = docker_mod.from_env(timeout=timeout, version="auto")  # type: ignore[arg-type]
        try:
            ok = bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure (no SDK, no engine, bad DOCKER_HOST) means "no"
        ok = False
    _probe_cache[base_url] = (time.monotonic(), ok)
    return ok
