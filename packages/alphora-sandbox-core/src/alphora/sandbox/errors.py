"""The exception tree of alphora-sandbox.

::

    SandboxError
    ├── SandboxNotFoundError
    ├── SandboxAlreadyExistsError
    ├── SandboxNotRunningError
    ├── SandboxAlreadyRunningError
    ├── ExecutionError
    │   ├── ExecutionTimeoutError        (also builtins.TimeoutError)
    │   └── ExecutionFailedError
    ├── FileSystemError                  (also builtins.OSError)
    │   ├── FileNotFoundError            (also builtins.FileNotFoundError)
    │   └── PathTraversalError           (also builtins.PermissionError)
    ├── PackageError
    │   └── PackageInstallError
    ├── SecurityViolationError           (also builtins.PermissionError)
    │   └── ShellAccessDeniedError
    ├── BackendError
    │   └── DockerError
    │       └── ContainerError
    ├── StorageError
    │   └── StorageNotFoundError         (also builtins.KeyError)
    └── ConfigurationError               (also builtins.ValueError)

Failing *user code* is not an exception: it is an :class:`~alphora.sandbox.types.ExecutionResult`
with ``success == False``. Exceptions are for misuse and for infrastructure failures.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import ExecutionResult

__all__ = [
    "BackendError",
    "ConfigurationError",
    "ContainerError",
    "DockerError",
    "ExecutionError",
    "ExecutionFailedError",
    "ExecutionTimeoutError",
    "FileNotFoundError",
    "FileSystemError",
    "PackageError",
    "PackageInstallError",
    "PathTraversalError",
    "SandboxAlreadyExistsError",
    "SandboxAlreadyRunningError",
    "SandboxError",
    "SandboxNotFoundError",
    "SandboxNotRunningError",
    "SecurityViolationError",
    "ShellAccessDeniedError",
    "StorageError",
    "StorageNotFoundError",
]


class SandboxError(Exception):
    """Root of every error this library raises on purpose."""

    def __init__(self, message: str = "", *, sandbox_id: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.sandbox_id = sandbox_id
        self.context = context

    def __str__(self) -> str:
        return self.message


class SandboxNotFoundError(SandboxError):
    """No sandbox with that id or name is known."""


class SandboxAlreadyExistsError(SandboxError):
    """A sandbox with that id already exists."""


class SandboxNotRunningError(SandboxError):
    """The operation needs a running sandbox and this one is not running."""


class SandboxAlreadyRunningError(SandboxError):
    """start() was called on a sandbox that is already running."""


class ExecutionError(SandboxError):
    """Running code failed for a reason outside the user's code (or raise_for_status was asked)."""

    def __init__(self, message: str = "", *, result: ExecutionResult | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.result = result


class ExecutionTimeoutError(ExecutionError, builtins.TimeoutError):
    """The code ran past its timeout and was killed (with everything it started)."""


class ExecutionFailedError(ExecutionError):
    """The code exited non-zero (raised only by ExecutionResult.raise_for_status)."""


class FileSystemError(SandboxError, builtins.OSError):
    """A file operation inside the workspace failed."""

    def __init__(self, message: str = "", *, path: str | None = None, **kw: Any) -> None:
        SandboxError.__init__(self, message, **kw)
        self.path = path
        self.filename = path

    def __str__(self) -> str:
        return self.message


class FileNotFoundError(FileSystemError, builtins.FileNotFoundError):
    """The path does not exist in the workspace."""


class PathTraversalError(FileSystemError, builtins.PermissionError):
    """The path would reach outside the workspace (``..``, absolute, symlink, NUL byte)."""


class PackageError(SandboxError):
    """A package-management operation failed or was given an invalid name."""

    def __init__(self, message: str = "", *, package: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.package = package


class PackageInstallError(PackageError):
    """pip could not install the package; ``.result`` holds pip's output."""

    def __init__(self, message: str = "", *, result: ExecutionResult | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.result = result


class SecurityViolationError(SandboxError, builtins.PermissionError):
    """The security policy refused the operation; ``.violations`` says why."""

    def __init__(self, message: str = "", *, violations: list[Any] | None = None, **kw: Any) -> None:
        SandboxError.__init__(self, message, **kw)
        self.violations = list(violations or [])

    def __str__(self) -> str:
        return self.message


class ShellAccessDeniedError(SecurityViolationError):
    """Shell commands are disabled by the security policy (allow_shell=False)."""


class BackendError(SandboxError):
    """The execution backend failed (could not start, crashed, lost its connection)."""


class DockerError(BackendError):
    """The Docker engine refused or failed an operation."""


class ContainerError(DockerError):
    """The sandbox's container is missing, dead or misbehaving."""


class StorageError(SandboxError):
    """A storage backend operation failed."""

    def __init__(self, message: str = "", *, key: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.key = key


class StorageNotFoundError(StorageError, builtins.KeyError):
    """No object is stored under that key."""

    def __str__(self) -> str:
        return self.message


class ConfigurationError(SandboxError, builtins.ValueError):
    """A configuration value is invalid; ``.field`` and ``.value`` name it."""

    def __init__(self, message: str = "", *, field: str | None = None, value: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field
        self.value = value
