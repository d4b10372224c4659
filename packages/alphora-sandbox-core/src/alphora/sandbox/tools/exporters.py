"""Tool-definition formats: turn :class:`ToolSpec` objects into what an LLM API expects.

An exporter is any callable ``(specs) -> list[dict]``. The built-in ones are registered by the
``alphora.sandbox.builtin.exporters`` plugin under the names ``openai`` (Chat Completions),
``openai-responses`` (Responses API), ``anthropic`` (Messages API) and ``gemini`` (function
declarations). A third party adds a format with the ``sandbox_register_tool_exporters`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .specs import ToolSpec

__all__ = [
    "ToolExporter",
    "export_anthropic",
    "export_gemini",
    "export_openai_chat",
    "export_openai_responses",
    "export_spec_dicts",
]

#: A tool-definition format: takes the specs, returns the JSON-able list the target API expects.
ToolExporter = Callable[["Sequence[ToolSpec]"], "list[dict[str, Any]]"]


def export_spec_dicts(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The neutral form: ``[{name, description, parameters}]`` (also what MCP's inputSchema takes)."""
    return [s.to_dict() for s in specs]


def export_openai_chat(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Chat Completions ``tools=``: ``{"type": "function", "function": {name, description, parameters}}``."""
    return [
        {
            "type": "function",
            "function": {"name": s.name, "description": s.description, "parameters": s.json_schema()},
        }
        for s in specs
    ]


def export_openai_responses(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Responses API ``tools=``: flat ``{"type": "function", name, description, parameters, strict}``.

    ``strict`` is False: strict mode requires every property to be listed as required, which
    would force the model to send the optional ones (timeouts, defaults) explicitly.
    """
    return [
        {
            "type": "function",
            "name": s.name,
            "description": s.description,
            "parameters": s.json_schema(),
            "strict": False,
        }
        for s in specs
    ]


def export_anthropic(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Anthropic Messages ``tools=``: ``{name, description, input_schema}``."""
    return [{"name": s.name, "description": s.description, "input_schema": s.json_schema()} for s in specs]


# The OpenAPI-3 subset that Gemini's ``Schema`` accepts (anything else is rejected by the API).
_GEMINI_KEYS = frozenset(
    {
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "anyOf",
        "propertyOrdering",
    }
)


def _gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _gemini_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _gemini_schema(value)
        elif key == "default":
            notes.append(f"Default: {value!r}.")
        elif key == "exclusiveMinimum":
            notes.append(f"Must be greater than {value}.")
        elif key in _GEMINI_KEYS:
            out[key] = list(value) if isinstance(value, list | tuple) else value
    if notes:
        out["description"] = " ".join([out.get("description", ""), *notes]).strip()
    if out.get("type") == "object" and not out.get("properties"):
        out.pop("properties", None)
        out.pop("required", None)
    return out


def export_gemini(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Gemini ``function_declarations``: ``{name, description, parameters}`` with an OpenAPI-subset
    schema (no ``additionalProperties``/``default``; defaults and bounds move into descriptions).
    A tool without parameters has no ``parameters`` key, as the API requires.

    Use as ``tools=[{"function_declarations": tools.export_tools("gemini")}]``.
    """
    out: list[dict[str, Any]] = []
    for s in specs:
        decl: dict[str, Any] = {"name": s.name, "description": s.description}
        params = _gemini_schema(s.json_schema())
        if params.get("properties"):
            decl["parameters"] = params
        out.append(decl)
    return out
