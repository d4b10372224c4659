"""The ``alphora_sandbox`` entry point of alphora-sandbox-ray: registers the ``ray`` backend.

Ray itself is imported only when a ray sandbox starts, so loading the plugin registry stays cheap."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterBackend
from alphora.sandbox.plugins import hookimpl


@hookimpl
def sandbox_register_backends(register: RegisterBackend) -> None:
    from .backend import RayBackend

    register("ray", RayBackend)
