"""Tool results as each LLM SDK's own tool-result shape, images included.

A code tool's result (:class:`ToolResult`, a plain dict a model reads as JSON) carries the call's
rich outputs two ways: their text (a Markdown table, JSON, a repr) inside the dict, under
``attachments``; and the raster images (PNG, JPEG …) in :attr:`ToolResult.images`, which JSON
cannot carry usefully. The functions here put both into the message each API expects:

* Anthropic Messages: a ``tool_result`` block whose ``content`` is the JSON text plus ``image`` blocks;
* OpenAI Responses: a ``function_call_output`` whose ``output`` is ``input_text`` plus ``input_image``;
* OpenAI Chat Completions: a ``tool`` message holds text only, so the images of a turn's tool calls
  follow the tool messages in one ``user`` message of ``image_url`` parts (data URIs);
* Gemini (google-genai): a ``function_response`` part, then one ``inline_data`` part per image;
* MCP: ``TextContent`` plus ``ImageContent`` (see :mod:`.mcp_server`).

A result without images gives exactly what these helpers gave before (JSON text). Which images are
sent is decided once, in :func:`alphora.sandbox.tools.results.execution_result`, under the size
budget of :class:`~alphora.sandbox.tools.SandboxTools` (``max_images``, ``max_image_bytes``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..types import Attachment

__all__ = [
    "ToolResult",
    "anthropic_tool_result",
    "data_uri",
    "gemini_parts",
    "openai_chat_messages",
    "openai_responses_output",
    "result_images",
    "result_text",
]


class ToolResult(dict[str, Any]):
    """A tool's result: a plain JSON-able dict (compare, serialize and index it as one), plus the
    raster images the call produced (:attr:`images`, within the tools' size budget), for the SDK
    helpers in :mod:`alphora.sandbox.tools.content`."""

    images: tuple[Attachment, ...] = ()


def result_images(result: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """The images to show the model with ``result`` (none for a plain dict)."""
    return getattr(result, "images", ())


def result_text(result: Mapping[str, Any]) -> str:
    """The result as the JSON text a model reads."""
    return json.dumps(result, ensure_ascii=False, default=str)


def data_uri(image: Attachment) -> str:
    """``data:<mime>;base64,<data>``: how the OpenAI APIs take an inline image."""
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def anthropic_tool_result(tool_use_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic Messages ``tool_result`` block for one ``tool_use``; images become ``image``
    blocks (base64 source) after the JSON text block."""
    images = result_images(result)
    content: str | list[dict[str, Any]] = result_text(result)
    if images:
        content = [{"type": "text", "text": content}] + [
            {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": a.mime_type,
                    "data": base64.b64encode(a.data).decode("ascii"),
                },
            }
            for a in images
        ]
    return {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": content,
        "is_error": not result.get("success", False),
    }


def openai_responses_output(call_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The Responses API ``function_call_output`` item for one ``function_call``; with images its
    ``output`` is a list of ``input_text`` and ``input_image`` (data URI) items."""
    images = result_images(result)
    output: str | list[dict[str, Any]] = result_text(result)
    if images:
        output = [{"type": "input_text", "text": output}] + [
            {"type": "input_image", "image_url": data_uri(a), "detail": "auto"} for a in images
        ]
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def openai_chat_messages(results: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The Chat Completions messages answering one assistant turn's ``tool_calls``: a ``tool``
    message per ``(tool_call_id, result)``, in order, then, if any result has images, one ``user``
    message carrying them as ``image_url`` parts (a ``tool`` message may hold text only, and the
    tool messages must directly follow the assistant's ``tool_calls``)."""
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for call_id, result in results:
        messages.append({"role": "tool", "tool_call_id": call_id, "content": result_text(result)})
        images = result_images(result)
        if images:
            names = ", ".join(a.name or a.mime_type for a in images)
            parts.append({"type": "text", "text": f"Images produced by tool call {call_id}: {names}"})
            parts.extend({"type": "image_url", "image_url": {"url": data_uri(a)}} for a in images)
    if parts:
        messages.append({"role": "user", "content": parts})
    return messages


def gemini_parts(name: str, result: Mapping[str, Any], call_id: str | None = None) -> list[dict[str, Any]]:
    """google-genai ``Part`` dicts answering one ``function_call``: the ``function_response``, then an
    ``inline_data`` part per image (use them as ``types.Part(**part)`` or in a ``Content`` dict)."""
    response: dict[str, Any] = {"name": name, "response": dict(result)}
    if call_id:
        response["id"] = call_id
    parts: list[dict[str, Any]] = [{"function_response": response}]
    parts.extend({"inline_data": {"mime_type": a.mime_type, "data": a.data}} for a in result_images(result))
    return parts
