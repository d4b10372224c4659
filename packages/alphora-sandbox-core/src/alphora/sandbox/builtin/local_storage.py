"""Built-in plugin: registers LocalStorage as the ``local`` storage."""

from __future__ import annotations

from ..hookspecs import RegisterStorage
from ..plugins import hookimpl
from ..storage.local import LocalStorage


@hookimpl
def sandbox_register_storages(register: RegisterStorage) -> None:
    register("local", LocalStorage)
