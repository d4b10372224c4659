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
from ..types import Attachment, ExecutionResult, ExecutionStatus
from .content import ToolResult

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_MAX_IMAGE_BYTES",
    "attachment_entries",
    "error_result",
    "exception_result",
    "execution_result",
    "truncate_middle",
]

#: the most images one tool result shows the model
DEFAULT_MAX_IMAGES = 4
#: the most image bytes one tool result shows the model (Anthropic takes at most 5 MB per image)
DEFAULT_MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: the text form a model reads of an output that has several, best first
_TEXT_PREFERENCE = ("text/markdown", "application/json", "text/latex", "text/plain", "text/html")

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


def _stem(a: Attachment) -> str:
    return a.name.rsplit(".", 1)[0] if a.name else a.mime_type


#: how each raster type a model takes begins: the sandbox names the MIME type, so it can claim
#: image/png for any bytes, and a model API refuses a request whose image does not decode (the whole
#: conversation fails, on every later turn too, as the image stays in its history)
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def _looks_like(a: Attachment) -> bool:
    """Whether an image's bytes start as its MIME type says (WebP: ``RIFF....WEBP``)."""
    if not a.data.startswith(_SIGNATURES.get(a.mime_type, (b"",))):
        return False
    return a.mime_type != "image/webp" or a.data[8:12] == b"WEBP"


def attachment_entries(
    attachments: tuple[Attachment, ...],
    limit: int | None,
    *,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> tuple[list[dict[str, Any]], tuple[Attachment, ...]]:
    """What a model is told about a call's rich outputs, and the images it is shown.

    One entry per attachment (``mime_type``, ``name``, ``size``). Of each output (the attachments
    sharing a name stem, e.g. a DataFrame's HTML, Markdown and plain text) one text form is
    inlined as ``text`` (Markdown first, cut to ``limit`` characters); raster images are shown
    (``"shown": true``) while ``max_images`` and ``max_image_bytes`` allow, else ``"shown": false``
    with the reason in ``note``. Outputs cut in the sandbox say ``truncated``."""
    entries: list[dict[str, Any]] = []
    images: list[Attachment] = []
    spent = 0
    inlined: set[str] = set()
    by_stem: dict[str, set[str]] = {}
    for a in attachments:
        by_stem.setdefault(_stem(a), set()).add(a.mime_type)
    for a in attachments:
        entry: dict[str, Any] = {"mime_type": a.mime_type, "name": a.name, "size": len(a.data)}
        if a.truncated:
            entry["truncated"] = True
        stem = _stem(a)
        if a.is_image:
            if a.truncated or not a.data:
                entry["shown"] = False
                entry["note"] = "the image was over the sandbox's output size cap and was left out"
            elif len(images) >= max_images:
                entry["shown"] = False
                entry["note"] = f"not shown: at most {max_images} image{'' if max_images == 1 else 's'} per result"
            elif spent + len(a.data) > max_image_bytes:
                entry["shown"] = False
                entry["note"] = f"not shown: over the image budget of {max_image_bytes:,} bytes per result"
            elif not _looks_like(a):
                entry["shown"] = False
                entry["note"] = f"not shown: the data is not {a.mime_type} (it lacks that format's signature)"
            else:
                entry["shown"] = True
                images.append(a)
                spent += len(a.data)
        elif a.is_text and stem not in inlined:
            best = next((m for m in _TEXT_PREFERENCE if m in by_stem[stem]), None)
            if best == a.mime_type:
                entry["text"], _ = truncate_middle(a.text, limit)
                inlined.add(stem)
        entries.append(entry)
    return entries, tuple(images)


def execution_result(
    result: ExecutionResult,
    limit: int | None,
    *,
    timeout: float | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> ToolResult:
    """The spec's code-tool shape ``{success, output, error, execution_time}`` plus exit_code,
    status and (when cut) truncated/truncated_chars; session runs add ``value``, and
    ``attachments`` for rich outputs (:func:`attachment_entries`; the images shown are in the
    result's ``images``, for the SDK helpers in :mod:`.content`)."""
    output, cut = truncate_middle(result.output, limit)
    out = ToolResult(
        {
            "success": result.success,
            "output": output,
            "error": _derive_error(result, timeout),
            "execution_time": round(result.execution_time, 3),
            "exit_code": result.return_code,
            "status": result.status.value,
        }
    )
    if cut or result.stdout_truncated or result.stderr_truncated:
        out["truncated"] = True
        if cut:
            out["truncated_chars"] = cut
    if result.value is not None:
        out["value"], _ = truncate_middle(result.value, limit)
    if result.attachments:
        out["attachments"], out.images = attachment_entries(
            result.attachments, limit, max_images=max_images, max_image_bytes=max_image_bytes
        )
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
