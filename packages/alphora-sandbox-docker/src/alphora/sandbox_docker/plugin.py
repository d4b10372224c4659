"""The ``alphora_sandbox`` entry point of alphora-sandbox-docker: registers the ``docker`` backend."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterBackend
from alphora.sandbox.plugins import hookimpl


@hookimpl
def sandbox_register_backends(register: RegisterBackend) -> None:
    from .backend import DockerBackend

    register("docker", DockerBackend)
