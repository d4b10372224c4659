"""Agent integration: the sandbox as LLM tools.

* :class:`SandboxTools` — the spec's 20 tools as methods plus ``execute_tool`` for a model's calls.
* :class:`ToolSpec` / :data:`TOOL_SPECS` — each tool's name, description and JSON-schema
  parameters, written once.
* exporters — ``openai``, ``openai-responses``, ``anthropic``, ``gemini``, ``spec`` (plugins;
  add more with the ``sandbox_register_tool_exporters`` hook).
* :mod:`alphora.sandbox.tools.mcp_server` — the same tools over MCP (``alphora-sandbox mcp``).
"""

from __future__ import annotations

from .content import (
    ToolResult,
    anthropic_tool_result,
    gemini_parts,
    openai_chat_messages,
    openai_responses_output,
    result_images,
)
from .exporters import (
    ToolExporter,
    export_anthropic,
    export_gemini,
    export_openai_chat,
    export_openai_responses,
    export_spec_dicts,
)
from .results import ERROR_TYPES, truncate_middle
from .sandbox_tools import DEFAULT_MAX_OUTPUT_CHARS, MAX_LISTED_FILES, SandboxTools
from .specs import (
    CATEGORIES,
    SESSION_NOTE,
    TOOL_SPECS,
    ToolSpec,
    get_spec,
    select_specs,
    with_session_note,
    with_timeout_cap,
)
from .validation import ArgumentError, validate_arguments

__all__ = [
    "CATEGORIES",
    "DEFAULT_MAX_OUTPUT_CHARS",
    "ERROR_TYPES",
    "MAX_LISTED_FILES",
    "SESSION_NOTE",
    "TOOL_SPECS",
    "ArgumentError",
    "SandboxTools",
    "ToolExporter",
    "ToolResult",
    "ToolSpec",
    "anthropic_tool_result",
    "export_anthropic",
    "export_gemini",
    "export_openai_chat",
    "export_openai_responses",
    "export_spec_dicts",
    "gemini_parts",
    "get_spec",
    "openai_chat_messages",
    "openai_responses_output",
    "result_images",
    "select_specs",
    "truncate_middle",
    "validate_arguments",
    "with_session_note",
    "with_timeout_cap",
]
