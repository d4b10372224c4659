"""Built-in plugin: registers LocalStorage as the ``local`` storage."""

from __future__ import annotations

from ..hookspecs import RegisterStorage
from ..plugins import hookimpl


@hookimpl
def sandbox_register_storages(register: RegisterStorage) -> None:
    register("local", "alphora.sandbox.storage.local:LocalStorage")  # imported on first lookup
