"""The ``alphora_sandbox`` entry point of alphora-sandbox-docker: registers the ``docker`` backend."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterBackend
from alphora.sandbox.plugins import hookimpl


@hookimpl
def sandbox_register_backends(register: RegisterBackend) -> None:
    # by reference: the backend module (and the Docker SDK) is imported when "docker" is first looked up
    register("docker", "alphora.sandbox_docker.backend:DockerBackend")
