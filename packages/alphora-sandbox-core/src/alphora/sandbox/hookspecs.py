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
    from .egress import EgressDecision, EgressRequest
    from .security import SecurityCheck
    from .storage.base import Storage
    from .tools.exporters import ToolExporter

NAME = "alphora_sandbox"
hookspec = pluggy.HookspecMarker(NAME)


class RegisterBackend(Protocol):
    def __call__(self, name: str, backend_class: type[Backend] | str, *, replace: bool = False) -> None: ...


class RegisterStorage(Protocol):
    def __call__(self, name: str, storage_class: type[Storage] | str, *, replace: bool = False) -> None: ...


class RegisterSecurityCheck(Protocol):
    def __call__(self, check: SecurityCheck) -> None: ...


class RegisterToolExporter(Protocol):
    def __call__(self, name: str, exporter: ToolExporter | str, *, replace: bool = False) -> None: ...


@hookspec
def sandbox_register_backends(register: RegisterBackend) -> None:
    """Register execution backend classes by name.

    ``register("local", LocalBackend)``. The name is what ``Sandbox.create(backend_type=...)``,
    ``SandboxConfig.backend_type`` and ``SANDBOX_BACKEND`` accept. The class must subclass
    :class:`alphora.sandbox.backend.Backend` and should pass
    :class:`alphora.sandbox.testing.BackendContractTests`. All implementations are called.

    The class may be given as a ``"module:Class"`` string (``register("docker",
    "alphora.sandbox_docker.backend:DockerBackend")``): it is imported only when the name is first
    looked up, so a process that never uses the backend never pays for importing it.
    """


@hookspec
def sandbox_register_storages(register: RegisterStorage) -> None:
    """Register storage classes by name (``local``, ``s3``, ``minio``, …).

    The class must subclass :class:`alphora.sandbox.storage.Storage` and take a
    ``StorageConfig``; ``StorageFactory.create(config)`` looks it up by ``config.storage_type``.
    All implementations are called. As for backends, the class may be a ``"module:Class"`` string,
    imported on first lookup.
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


@hookspec(firstresult=True)
def sandbox_egress_decide(request: EgressRequest) -> EgressDecision | None:
    """Decide one egress connection or request of a sandbox that has an egress policy.

    Called by the egress proxy (outside the sandbox) for every CONNECT and every plain-HTTP request,
    after the policy matched: ``request.allowed`` and ``request.rule`` carry the policy's verdict,
    ``request.sandbox_id`` says whose it is. Return None to keep the policy's verdict, or an
    :class:`~alphora.sandbox.egress.EgressDecision`: ``EgressDecision.allow(reason)``,
    ``EgressDecision.deny(reason)``, or ``EgressDecision.allow(reason, host=..., port=...)`` to send
    the request elsewhere. An allowed or rewritten destination is still resolved and checked: a
    private, loopback or link-local address is reached only when an address entry of the policy names it.
    The first non-None answer wins (``firstresult``). It may return an awaitable (an approval that waits
    on a human); it runs on the proxy's event loop, so keep it quick or async. A hook that raises
    denies the request. Every decision is written to the proxy's audit sink with ``reason`` as the rule.
    """
