"""Find and remove containers and volumes left behind by crashed host processes.

Every container and volume a Docker sandbox creates carries labels naming its owner: the host
name, the pid and the pid's start time (``org.alphora.sandbox.host/.pid/.pid-start``). An owner
is *alive* when it is this host and a process with that pid and start time still runs; anything
else is an orphan. Owners on other hosts cannot be checked from here: they are skipped unless
``all_hosts=True``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import attrs

from ._client import in_thread, make_client
from ._errors import map_docker_errors
from ._spec import L_HOST, L_ID, L_PID, L_PID_START, LABEL, _process_start_time

if TYPE_CHECKING:
    import docker

__all__ = ["PruneReport", "aprune_orphans", "owner_alive", "prune_orphans"]


@attrs.frozen(kw_only=True)
class PruneReport:
    """What was (or, in a dry run, would be) removed, by name."""

    containers: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    skipped_alive: int = 0
    skipped_foreign: int = 0


def owner_alive(labels: dict[str, str]) -> bool | None:
    """True/False when the owner is on this host; None when it is on another host."""
    if labels.get(L_HOST) != socket.gethostname():
        return None
    try:
        pid = int(labels.get(L_PID, ""))
    except ValueError:
        return False
    started = _process_start_time(pid)
    if not started:
        return False
    expected = labels.get(L_PID_START, "")
    return not expected or abs(float(started) - float(expected)) < 1.0


def _decide(labels: dict[str, str], all_hosts: bool, include_alive: bool) -> str:
    alive = owner_alive(labels)
    if alive is None:
        return "remove" if all_hosts else "foreign"
    if alive and not include_alive:
        return "alive"
    return "remove"


def prune_orphans(
    *,
    client: docker.DockerClient | None = None,
    all_hosts: bool = False,
    include_alive: bool = False,
    dry_run: bool = False,
    sandbox_id: str | None = None,
) -> PruneReport:
    """Remove sandbox containers (and their volumes) whose owning process is gone. Blocking."""
    import docker.errors

    cli = client or make_client()
    filters: dict[str, Any] = {"label": [LABEL] + ([f"{L_ID}={sandbox_id}"] if sandbox_id else [])}
    removed_c: list[str] = []
    removed_v: list[str] = []
    alive = foreign = 0
    with map_docker_errors("pruning orphaned sandboxes"):
        for c in cli.containers.list(all=True, filters=filters):
            verdict = _decide(dict(c.labels or {}), all_hosts, include_alive)
            if verdict == "alive":
                alive += 1
                continue
            if verdict == "foreign":
                foreign += 1
                continue
            removed_c.append(c.name or c.short_id)  # the engine always names containers; the stub allows None
            if not dry_run:
                try:
                    c.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass
        for vol in cli.volumes.list(filters=filters):
            labels = dict(vol.attrs.get("Labels") or {})
            verdict = _decide(labels, all_hosts, include_alive)
            if verdict != "remove":
                continue
            removed_v.append(vol.name)
            if not dry_run:
                try:
                    vol.remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError:
                    removed_v.pop()  # still in use by a container we did not remove
    return PruneReport(
        containers=tuple(removed_c), volumes=tuple(removed_v), skipped_alive=alive, skipped_foreign=foreign
    )


async def aprune_orphans(**kwargs: Any) -> PruneReport:
    """:func:`prune_orphans` off the event loop."""
    return await in_thread(prune_orphans, **kwargs)
