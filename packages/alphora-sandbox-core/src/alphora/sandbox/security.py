"""Security checks run before code, shell commands and file operations.

Checks are plugins (``sandbox_register_security_checks``). Each sees a :class:`CheckRequest` and
the sandbox's :class:`~alphora.sandbox.types.SecurityPolicy` and returns violations; any violation
refuses the operation with :class:`~alphora.sandbox.errors.SecurityViolationError`.

These checks read the code *before* it runs. They are a guard rail against accidents and careless
models, not a security boundary: code can always be written to evade a static check. Isolation
comes from the backend (Docker: no network, dropped capabilities, limits).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

import attrs

from .errors import SecurityViolationError, ShellAccessDeniedError
from .types import SecurityPolicy

__all__ = ["CheckRequest", "SecurityCheck", "Violation", "run_checks"]


@attrs.frozen(kw_only=True)
class CheckRequest:
    """What is about to happen. ``kind``: python code, a shell command, a file read or a file write."""

    kind: Literal["python", "shell", "read", "write", "delete", "package"]
    content: str = ""
    path: str = ""
    size: int = 0


@attrs.frozen(kw_only=True)
class Violation:
    check: str
    reason: str

    def __str__(self) -> str:
        return self.reason


@runtime_checkable
class SecurityCheck(Protocol):
    name: str

    async def check(self, request: CheckRequest, policy: SecurityPolicy) -> list[Violation]: ...


async def run_checks(
    checks: Iterable[SecurityCheck], request: CheckRequest, policy: SecurityPolicy, *, sandbox_id: str | None = None
) -> None:
    """Run every check; raise one error carrying all violations (ShellAccessDeniedError when the
    shell itself is refused)."""
    violations: list[Violation] = []
    for check in checks:
        violations.extend(await check.check(request, policy))
    if not violations:
        return
    message = "refused by security policy: " + "; ".join(v.reason for v in violations)
    if request.kind == "shell" and any(v.check == "shell" for v in violations):
        raise ShellAccessDeniedError(message, violations=violations, sandbox_id=sandbox_id)
    raise SecurityViolationError(message, violations=violations, sandbox_id=sandbox_id)
