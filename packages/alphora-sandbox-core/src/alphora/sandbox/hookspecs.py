"""Hook specifications of the ``alphora_sandbox`` plugin system.

Hooks are synchronous and *register* things; the registered objects do the (async) work.
A plugin is any module or object with functions decorated by :data:`alphora.sandbox.hookimpl`;
third parties publish one through the ``alphora_sandbox`` entry-point group::

    [project.entry-points.alphora_sandbox]
    mybackend = "my_package.plugin"

Every hook below is called once per plugin manager, when the registry is first built; each
``register`` callable raises ``ValueError`` on a duplicate name unless ``replace=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .security import SecurityCheck
    from .storage.base import Storage
    from .tools.exporters import ToolExporter

NAME = "alphora_sandbox"
hookspec = pluggy.HookspecMarker(NAME)


class RegisterBackend(Protocol):
    def __call__(self, name: str, backend_class: type[Backend], *, replace: bool = False) -> None: ...


class RegisterStorage(Protocol):
    def __call__(self, name: str, storage_class: type[Storage], *, replace: bool = False) -> None: ...


class RegisterSecurityCheck(Protocol):
    def __call__(self, check: SecurityCheck) -> None: ...


class RegisterToolExporter(Protocol):
    def __call__(self, name: str, exporter: ToolExporter, *, replace: bool = False) -> None: ...


@hookspec
def sandbox_register_backends(register: RegisterBackend) -> None:
    """Register execution backend classes by name.

    ``register("local", LocalBackend)``. The name is what ``Sandbox.create(backend_type=...)``,
    ``SandboxConfig.backend_type`` and ``SANDBOX_BACKEND`` accept. The class must subclass
    :class:`alphora.sandbox.backend.Backend` and should pass
    :class:`alphora.sandbox.testing.BackendContractTests`. All implementations are called.
    """


@hookspec
def sandbox_register_storages(register: RegisterStorage) -> None:
    """Register storage classes by name (``local``, ``s3``, ``minio``, …).

    The class must subclass :class:`alphora.sandbox.storage.Storage` and take a
    ``StorageConfig``; ``StorageFactory.create(config)`` looks it up by ``config.storage_type``.
    All implementations are called.
    """


@hookspec
def sandbox_register_security_checks(register: RegisterSecurityCheck) -> None:
    """Register security checks run before code, shell commands and file paths are used.

    A check is an object with ``name`` and ``async def check(request, policy) -> list[Violation]``.
    Any violation refuses the operation with ``SecurityViolationError`` carrying every reason.
    All implementations are called; checks run in registration order.
    """


@hookspec
def sandbox_register_tool_exporters(register: RegisterToolExporter) -> None:
    """Register tool-definition formats by name (``openai``, ``anthropic``, …).

    An exporter is a callable taking the list of :class:`~alphora.sandbox.tools.ToolSpec` and
    returning the JSON-able list the target API expects. ``SandboxTools.export_tools(name)``
    uses it. All implementations are called.
    """
