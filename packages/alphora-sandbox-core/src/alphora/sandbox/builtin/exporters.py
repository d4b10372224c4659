"""Built-in plugin: the tool-definition formats ``openai``, ``openai-responses``, ``anthropic``,
``gemini`` and ``spec`` (the neutral ``{name, description, parameters}`` form)."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterToolExporter
from alphora.sandbox.plugins import hookimpl
from alphora.sandbox.tools.exporters import (
    export_anthropic,
    export_gemini,
    export_openai_chat,
    export_openai_responses,
    export_spec_dicts,
)


@hookimpl
def sandbox_register_tool_exporters(register: RegisterToolExporter) -> None:
    register("openai", export_openai_chat)
    register("openai-responses", export_openai_responses)
    register("anthropic", export_anthropic)
    register("gemini", export_gemini)
    register("spec", export_spec_dicts)
