"""Result shaping for tools: plain JSON-able dicts, errors a model can act on, output cut to fit."""

from __future__ import annotations

import errno
from typing import Any

from ..errors import (
    ExecutionTimeoutError,
    FileNotFoundError,
    FileSystemError,
    PackageError,
    PathTraversalError,
    SandboxError,
    SandboxNotRunningError,
    SecurityViolationError,
)
from ..types import ExecutionResult, ExecutionStatus

__all__ = ["error_result", "exception_result", "execution_result", "truncate_middle"]

#: ``error_type`` values a result can carry (stable: agents may branch on them)
ERROR_TYPES = (
    "unknown_tool",
    "invalid_arguments",
    "policy_violation",
    "path_not_allowed",
    "not_found",
    "timeout",
    "execution_failed",
    "package_error",
    "sandbox_not_running",
    "tool_error",
)


#: longest exception message passed on to a model
_MAX_MESSAGE = 1000


def truncate_middle(text: str, limit: int | None) -> tuple[str, int]:
    """Keep the head and the tail of ``text`` within ``limit`` characters; return (text, cut count).

    The marker in the middle says how much was cut, so a model knows it saw only part.
    """
    if limit is None or len(text) <= limit:
        return text, 0
    head = limit // 2
    tail = limit - head
    cut = len(text) - head - tail
    marker = f"\n\n[... {cut:,} characters cut from the middle ({len(text):,} in total) ...]\n\n"
    return text[:head] + marker + (text[-tail:] if tail else ""), cut


def error_result(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """A failed tool call as a model sees it."""
    return {"success": False, "error": message, "error_type": error_type, **extra}


def _derive_error(result: ExecutionResult, timeout: float | None) -> str:
    if result.success:
        return ""
    if result.status is ExecutionStatus.TIMEOUT:
        limit = f" after {timeout:g} s" if timeout else ""
        base = result.error or f"timed out{limit}"
        return f"{base}; the process and everything it started were killed. Output before the kill is in 'output'."
    if result.error:
        return result.error
    for line in reversed(result.stderr.strip().splitlines()):
        if line.strip():
            return f"{line.strip()} (exit code {result.return_code})"
    return f"exit code {result.return_code}"


def execution_result(result: ExecutionResult, limit: int | None, *, timeout: float | None = None) -> dict[str, Any]:
    """The spec's code-tool shape ``{success, output, error, execution_time}`` plus exit_code,
    status and (when cut) truncated/truncated_chars; session runs add ``value``."""
    output, cut = truncate_middle(result.output, limit)
    out: dict[str, Any] = {
        "success": result.success,
        "output": output,
        "error": _derive_error(result, timeout),
        "execution_time": round(result.execution_time, 3),
        "exit_code": result.return_code,
        "status": result.status.value,
    }
    if cut or result.stdout_truncated or result.stderr_truncated:
        out["truncated"] = True
        if cut:
            out["truncated_chars"] = cut
    if result.value is not None:
        out["value"], _ = truncate_middle(result.value, limit)
    if result.attachments:
        out["attachments"] = [
            {"mime_type": a.mime_type, "name": a.name, "size": len(a.data)} for a in result.attachments
        ]
    if result.state_lost:
        out["state_lost"] = True
        if "restarted" not in out["error"]:
            out["error"] = (out["error"].rstrip(".") + ". " if out["error"] else "") + (
                "The Python session was restarted: variables and imports from earlier calls are gone."
            )
    if not result.success:
        out["error_type"] = "timeout" if result.status is ExecutionStatus.TIMEOUT else "execution_failed"
    return out


def exception_result(exc: Exception) -> dict[str, Any]:
    """Map an exception raised inside a tool to a result a model can act on."""
    msg, _ = truncate_middle(str(exc) or type(exc).__name__, _MAX_MESSAGE)  # it may echo a huge argument
    if isinstance(exc, SecurityViolationError):
        reason = msg.removeprefix("refused by security policy:").strip()
        return error_result(
            "policy_violation",
            f"Refused by the sandbox security policy: {reason}. This is a rule, not a transient error: "
            "do not retry the same call; achieve the goal another way or tell the user it is not allowed.",
        )
    if isinstance(exc, PathTraversalError):
        return error_result(
            "path_not_allowed",
            f"{msg}. Use a relative path inside the workspace, like 'data/file.txt' (no '..', no absolute paths, no links).",
        )
    if isinstance(exc, FileNotFoundError) or (isinstance(exc, OSError) and exc.errno == errno.ENOENT):
        return error_result("not_found", f"{msg}. Check the name with list_files.")
    if isinstance(exc, ExecutionTimeoutError):
        return error_result("timeout", msg)
    if isinstance(exc, PackageError):
        return error_result("package_error", msg)
    if isinstance(exc, SandboxNotRunningError):
        return error_result(
            "sandbox_not_running",
            f"The sandbox is not running, so no tool can work until the application hosting it starts it again ({msg}).",
        )
    if isinstance(exc, FileSystemError | SandboxError):
        return error_result("tool_error", msg)
    return error_result("tool_error", f"the tool failed: {type(exc).__name__}: {msg}")
