"""alphora-sandbox: a secure code-execution sandbox for AI agents.

Quick start::

    from alphora.sandbox import Sandbox

    async with Sandbox.create_local() as sandbox:
        result = await sandbox.run("print('Hello, World!')")
        print(result.stdout)

Names provided by plugins (``DockerBackend``) resolve lazily on first access; a missing plugin gives
an ImportError naming the extra to install. ``from alphora.sandbox import *`` exports them only when
their plugin is installed, so it works on a core-only install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendError,
    ConfigurationError,
    ContainerError,
    DockerError,
    ExecutionError,
    ExecutionFailedError,
    ExecutionTimeoutError,
    FileNotFoundError,
    FileSystemError,
    PackageError,
    PackageInstallError,
    PathTraversalError,
    SandboxAlreadyExistsError,
    SandboxAlreadyRunningError,
    SandboxError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SecurityViolationError,
    ShellAccessDeniedError,
    StorageError,
    StorageNotFoundError,
)
from .plugins import hookimpl, plugin_attr, plugin_installed
from .types import (
    Attachment,
    BackendType,
    ExecutionResult,
    ExecutionStatus,
    FileInfo,
    FileType,
    PackageInfo,
    ResourceLimits,
    ResourceUsage,
    SandboxInfo,
    SandboxStatus,
    SecurityPolicy,
    StorageType,
)

if TYPE_CHECKING:
    from .backend import Backend, OutputChunk, ProcessRequest
    from .builtin.local_backend import LocalBackend
    from .checkpoint import CheckpointError, CheckpointResult, ResumeReport
    from .config import SandboxConfig, config_from_env, config_from_file
    from .egress import EgressDecision, EgressPolicy, EgressProxy, EgressRequest
    from .manager import SandboxLimitError, SandboxManager
    from .pool import OnRelease, PoolClosedError, PoolStats, PoolTimeoutError, SandboxPool
    from .sandbox import Sandbox
    from .session import PythonSession
    from .tools import SandboxTools

__version__ = "0.1.0"

# name -> module that defines it (imported on first access, PEP 562)
_LAZY: dict[str, str] = {
    "Sandbox": ".sandbox",
    "Backend": ".backend",
    "ProcessRequest": ".backend",
    "OutputChunk": ".backend",
    "PythonSession": ".session",
    "LocalBackend": ".builtin.local_backend",
    "SandboxConfig": ".config",
    "config_from_env": ".config",
    "config_from_file": ".config",
    "SandboxManager": ".manager",
    "SandboxLimitError": ".manager",
    "SandboxPool": ".pool",
    "OnRelease": ".pool",
    "PoolStats": ".pool",
    "PoolTimeoutError": ".pool",
    "PoolClosedError": ".pool",
    "SandboxTools": ".tools",
    "EgressPolicy": ".egress",
    "EgressProxy": ".egress",
    "EgressDecision": ".egress",
    "EgressRequest": ".egress",
    "CheckpointError": ".checkpoint",
    "CheckpointResult": ".checkpoint",
    "ResumeReport": ".checkpoint",
}

# name -> (module of the plugin that provides it, extra to install)
_PLUGIN_NAMES: dict[str, tuple[str, str]] = {
    "DockerBackend": ("alphora.sandbox_docker", "docker"),
}


def is_docker_available() -> bool:
    """True when the Docker plugin is installed and a Docker engine answers."""
    try:
        mod = importlib.import_module("alphora.sandbox_docker")
    except ImportError:
        return False
    return bool(mod.is_docker_available())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _PLUGIN_NAMES:
        module, extra = _PLUGIN_NAMES[name]
        return plugin_attr(module, name, extra)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Attachment",
    "Backend",
    "BackendError",
    "BackendType",
    "CheckpointError",
    "CheckpointResult",
    "ConfigurationError",
    "ContainerError",
    "DockerError",
    "EgressDecision",
    "EgressPolicy",
    "EgressProxy",
    "EgressRequest",
    "ExecutionError",
    "ExecutionFailedError",
    "ExecutionResult",
    "ExecutionStatus",
    "ExecutionTimeoutError",
    "FileInfo",
    "FileNotFoundError",
    "FileSystemError",
    "FileType",
    "LocalBackend",
    "OnRelease",
    "OutputChunk",
    "PackageError",
    "PackageInfo",
    "PackageInstallError",
    "PathTraversalError",
    "PoolClosedError",
    "PoolStats",
    "PoolTimeoutError",
    "ProcessRequest",
    "PythonSession",
    "ResourceLimits",
    "ResourceUsage",
    "ResumeReport",
    "Sandbox",
    "SandboxAlreadyExistsError",
    "SandboxAlreadyRunningError",
    "SandboxConfig",
    "SandboxError",
    "SandboxInfo",
    "SandboxLimitError",
    "SandboxManager",
    "SandboxNotFoundError",
    "SandboxNotRunningError",
    "SandboxPool",
    "SandboxStatus",
    "SandboxTools",
    "SecurityPolicy",
    "SecurityViolationError",
    "ShellAccessDeniedError",
    "StorageError",
    "StorageNotFoundError",
    "StorageType",
    "config_from_env",
    "config_from_file",
    "hookimpl",
    "is_docker_available",
]

# a star import resolves every name listed here: plugin names only when their plugin is installed
__all__ += [name for name, (module, _) in _PLUGIN_NAMES.items() if plugin_installed(module)]
