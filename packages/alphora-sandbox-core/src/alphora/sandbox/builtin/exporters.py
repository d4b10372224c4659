"""Built-in plugin: the tool-definition formats ``openai``, ``openai-responses``, ``anthropic``,
``gemini`` and ``spec`` (the neutral ``{name, description, parameters}`` form)."""

from __future__ import annotations

from alphora.sandbox.hookspecs import RegisterToolExporter
from alphora.sandbox.plugins import hookimpl

_MODULE = "alphora.sandbox.tools.exporters"


@hookimpl
def sandbox_register_tool_exporters(register: RegisterToolExporter) -> None:
    # by reference: the tools package is imported when a format is first looked up
    register("openai", f"{_MODULE}:export_openai_chat")
    register("openai-responses", f"{_MODULE}:export_openai_responses")
    register("anthropic", f"{_MODULE}:export_anthropic")
    register("gemini", f"{_MODULE}:export_gemini")
    register("spec", f"{_MODULE}:export_spec_dicts")
