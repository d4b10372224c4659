"""Tool specs, the argument validator and the exporters (no sandbox needed)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphora.sandbox import Sandbox, SandboxTools, hookimpl
from alphora.sandbox.plugins import PluginRegistry, get_registry, make_plugin_manager
from alphora.sandbox.tools import (
    TOOL_SPECS,
    ArgumentError,
    ToolSpec,
    export_anthropic,
    export_gemini,
    export_openai_chat,
    export_openai_responses,
    get_spec,
    select_specs,
    truncate_middle,
    validate_arguments,
    with_timeout_cap,
)

SPEC_TOOLS = [
    ("run_python_code", ["code", "timeout"]),
    ("run_python_file", ["file_path", "args", "timeout"]),
    ("run_shell_command", ["command", "timeout"]),
    ("save_file", ["path", "content"]),
    ("read_file", ["path"]),
    ("delete_file", ["path"]),
    ("list_files", ["path", "recursive"]),
    ("file_exists", ["path"]),
    ("copy_file", ["source", "dest"]),
    ("move_file", ["source", "dest"]),
    ("install_pip_package", ["package", "version"]),
    ("install_pip_packages", ["packages"]),
    ("uninstall_pip_package", ["package"]),
    ("list_installed_packages", []),
    ("check_package_installed", ["package"]),
    ("set_environment_variable", ["key", "value"]),
    ("get_environment_variable", ["key"]),
    ("get_sandbox_status", []),
    ("get_resource_usage", []),
    ("reset_sandbox", []),
]


# -- the specs -----------------------------------------------------------------------------------


def test_the_twenty_tools_of_the_spec_in_order_with_its_arguments() -> None:
    assert [(s.name, list(s.properties)) for s in TOOL_SPECS] == SPEC_TOOLS


@pytest.mark.parametrize("spec", TOOL_SPECS, ids=lambda s: s.name)
def test_each_method_has_exactly_the_spec_arguments_and_defaults(spec: ToolSpec) -> None:
    sig = inspect.signature(getattr(SandboxTools, spec.name))
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    assert list(params) == list(spec.properties)
    for name, param in params.items():
        if name in spec.required:
            assert param.default is inspect.Parameter.empty, f"{spec.name}.{name} is required in the spec"
        else:
            assert param.default is not inspect.Parameter.empty, f"{spec.name}.{name} is optional in the spec"
            assert param.default in (None, spec.defaults().get(name)), f"{spec.name}.{name} default differs"
    assert inspect.iscoroutinefunction(getattr(SandboxTools, spec.name))


@pytest.mark.parametrize("spec", TOOL_SPECS, ids=lambda s: s.name)
def test_schemas_are_valid_json_schema_and_closed(spec: ToolSpec) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (an mcp dependency) checks the meta-schema")
    schema = spec.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) <= set(schema["properties"])
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{spec.name}.{name} has no description for the model"
        assert "type" in prop


@pytest.mark.parametrize("spec", TOOL_SPECS, ids=lambda s: s.name)
def test_descriptions_tell_a_model_what_comes_back(spec: ToolSpec) -> None:
    assert len(spec.description) >= 60
    assert "Returns" in spec.description or "{success" in spec.description


def test_specs_are_immutable_and_json_schema_returns_copies() -> None:
    spec = get_spec("run_python_file")
    assert spec is not None
    schema = spec.json_schema()
    schema["properties"]["args"]["default"].append("x")
    schema["required"].append("zzz")
    assert spec.json_schema()["properties"]["args"]["default"] == []
    assert "zzz" not in spec.required
    with pytest.raises(TypeError):
        spec.parameters["type"] = "array"  # type: ignore[index]


def test_select_by_name_category_and_read_only() -> None:
    read_only = select_specs(read_only=True)
    assert {s.name for s in read_only} == {
        "read_file",
        "list_files",
        "file_exists",
        "list_installed_packages",
        "check_package_installed",
        "get_environment_variable",
        "get_sandbox_status",
        "get_resource_usage",
    }
    no_shell = select_specs(exclude=["shell"])
    assert "run_shell_command" not in {s.name for s in no_shell}
    assert len(no_shell) == 19
    files = select_specs(include=["files", "run_python_code"])
    assert next(s.name for s in files) == "run_python_code"
    assert all(s.category == "files" for s in files[1:])
    assert len(files) == 8
    with pytest.raises(ValueError, match="unknown tool or category"):
        select_specs(include=["rm_rf"])


# -- the validator -------------------------------------------------------------------------------


def _problems(args: Any, tool: str) -> list[str]:
    spec = get_spec(tool)
    assert spec is not None
    with pytest.raises(ArgumentError) as info:
        validate_arguments(args, spec.parameters)
    return info.value.problems


def test_wrong_type_names_the_argument_the_type_and_the_value() -> None:
    assert _problems({"code": "print(1)", "timeout": "10s"}, "run_python_code") == [
        "argument 'timeout' must be a number, got string \"10s\""
    ]


def test_booleans_are_not_numbers_and_numbers_are_not_strings() -> None:
    assert _problems({"code": "1", "timeout": True}, "run_python_code") == [
        "argument 'timeout' must be a number, got boolean true"
    ]
    assert _problems({"path": 42}, "read_file") == ["argument 'path' must be a string, got integer 42"]


def test_missing_required_argument_says_what_it_is() -> None:
    assert _problems({"path": "a.txt"}, "save_file") == [
        "missing required argument 'content' (a string): The complete text content (UTF-8)"
    ]


def test_unknown_argument_suggests_the_close_one() -> None:
    problems = _problems({"filename": "a.txt"}, "read_file")
    assert problems[0].startswith("unknown argument 'filename'; did you mean")
    assert problems[1].startswith("missing required argument 'path'")


def test_all_problems_are_reported_at_once() -> None:
    assert len(_problems({"source": 1, "dest": None, "extra": 2}, "copy_file")) == 3


def test_json_text_instead_of_an_object_is_refused_with_a_hint() -> None:
    (problem,) = _problems('{"path": "a.txt"}', "read_file")
    assert problem.startswith("arguments must be a JSON object")
    assert "not as JSON text inside a string" in problem
    (problem,) = _problems(["a.txt"], "read_file")
    assert "got array" in problem


def test_array_items_and_bounds() -> None:
    assert _problems({"file_path": "a.py", "args": ["x", 3]}, "run_python_file") == [
        "argument 'args[1]' must be a string, got integer 3"
    ]
    assert _problems({"packages": []}, "install_pip_packages") == [
        "argument 'packages' must have at least 1 item(s), got 0"
    ]
    assert _problems({"code": "x", "timeout": 0}, "run_python_code") == [
        "argument 'timeout' must be greater than 0, got 0"
    ]
    assert _problems({"code": ""}, "run_python_code") == ["argument 'code' must not be empty"]


def test_defaults_are_filled_and_null_means_default_for_optional_arguments() -> None:
    spec = get_spec("list_files")
    assert spec is not None
    assert validate_arguments({}, spec.parameters) == {"path": "", "recursive": False}
    assert validate_arguments({"recursive": None}, spec.parameters) == {"path": "", "recursive": False}
    spec = get_spec("run_python_file")
    assert spec is not None
    first = validate_arguments({"file_path": "a.py"}, spec.parameters)
    first["args"].append("mutated")
    assert validate_arguments({"file_path": "a.py"}, spec.parameters)["args"] == []


def test_enum_integer_and_bounds_on_a_custom_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mode": {"type": "string", "enum": ["r", "w"]},
            "n": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["mode"],
        "additionalProperties": False,
    }
    assert validate_arguments({"mode": "r", "n": 2.0}, schema) == {"mode": "r", "n": 2}
    with pytest.raises(ArgumentError) as info:
        validate_arguments({"mode": "x", "n": 2.5}, schema)
    assert info.value.problems == [
        'argument \'mode\' must be one of "r", "w"; got "x"',
        "argument 'n' must be an integer, got number 2.5",
    ]
    with pytest.raises(ArgumentError, match="at most 5"):
        validate_arguments({"mode": "w", "n": 9}, schema)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_whatever_the_bounds(bad: float) -> None:
    """Every comparison with NaN is false: without this, NaN would pass minimum and maximum."""
    schema = {"type": "object", "properties": {"x": {"type": "number"}, "n": {"type": "integer", "minimum": 1}}}
    with pytest.raises(ArgumentError) as info:
        validate_arguments({"x": bad, "n": bad}, schema)
    assert (
        info.value.problems[0] == f"argument 'x' must be a finite number, got {json.dumps(bad)} "
        "(NaN and Infinity are not numbers)"
    )
    assert info.value.problems[1].startswith("argument 'n' must be an integer")
    schema["properties"]["x"] = {"type": "number", "minimum": -1, "exclusiveMaximum": 1.5}
    with pytest.raises(ArgumentError, match=r"finite number at least -1 and less than 1\.5"):
        validate_arguments({"x": bad}, schema)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    spec=st.sampled_from(TOOL_SPECS),
    args=_json
    | st.dictionaries(
        st.sampled_from(
            ["code", "path", "timeout", "args", "packages", "key", "value", "source", "dest", "recursive", "x"]
        ),
        _json,
    ),
)
def test_any_json_either_validates_or_raises_argument_error(spec: ToolSpec, args: Any) -> None:
    try:
        clean = validate_arguments(args, spec.parameters)
    except ArgumentError as exc:
        problems = exc.problems
    else:
        problems = []
    if problems:
        assert all(isinstance(p, str) and p for p in problems)
        return
    assert set(clean) <= set(spec.properties)
    assert set(spec.required) <= set(clean)
    json.dumps(clean)


# -- truncation ----------------------------------------------------------------------------------


def test_truncate_keeps_head_and_tail_and_says_how_much_was_cut() -> None:
    text = "HEAD" + "x" * 10_000 + "TAIL"
    cut_text, cut = truncate_middle(text, 1000)
    assert cut == len(text) - 1000
    assert cut_text.startswith("HEAD")
    assert cut_text.endswith("TAIL")
    assert f"{cut:,} characters cut from the middle" in cut_text
    assert truncate_middle("short", 1000) == ("short", 0)
    assert truncate_middle(text, None) == (text, 0)


# -- exporters -----------------------------------------------------------------------------------


def test_builtin_exporters_are_registered_by_the_plugin() -> None:
    registry = PluginRegistry(make_plugin_manager(autoload=False))
    assert {"openai", "openai-responses", "anthropic", "gemini", "spec"} <= set(registry.tool_exporters)
    assert "alphora.sandbox.builtin.exporters" in registry.plugin_names()
    assert registry.exporter("OpenAI") is export_openai_chat


def test_blocking_the_builtin_exporter_plugin_removes_the_formats() -> None:
    registry = PluginRegistry(make_plugin_manager(autoload=False, blocked=["alphora.sandbox.builtin.exporters"]))
    assert "openai" not in registry.tool_exporters
    with pytest.raises(ValueError, match="unknown tool format 'openai'"):
        registry.exporter("openai")


def test_openai_chat_shape_validates_against_the_sdk_types() -> None:
    pydantic = pytest.importorskip("pydantic")
    params = pytest.importorskip("openai.types.chat")
    tools = export_openai_chat(TOOL_SPECS)
    adapter = pydantic.TypeAdapter(list[params.ChatCompletionToolParam])  # type: ignore[name-defined]
    adapter.validate_python(tools)
    for tool, spec in zip(tools, TOOL_SPECS, strict=True):
        assert tool == {
            "type": "function",
            "function": {"name": spec.name, "description": spec.description, "parameters": spec.json_schema()},
        }
    json.dumps(tools)


def test_openai_responses_shape() -> None:
    pydantic = pytest.importorskip("pydantic")
    responses = pytest.importorskip("openai.types.responses")
    tools = export_openai_responses(TOOL_SPECS)
    pydantic.TypeAdapter(list[responses.FunctionToolParam]).validate_python(tools)  # type: ignore[name-defined]
    assert tools[0] == {
        "type": "function",
        "name": "run_python_code",
        "description": TOOL_SPECS[0].description,
        "parameters": TOOL_SPECS[0].json_schema(),
        "strict": False,
    }


def test_anthropic_shape_validates_against_the_sdk_types() -> None:
    pydantic = pytest.importorskip("pydantic")
    types = pytest.importorskip("anthropic.types")
    tools = export_anthropic(TOOL_SPECS)
    pydantic.TypeAdapter(list[types.ToolParam]).validate_python(tools)  # type: ignore[name-defined]
    assert tools[3] == {
        "name": "save_file",
        "description": TOOL_SPECS[3].description,
        "input_schema": TOOL_SPECS[3].json_schema(),
    }


def _walk_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _walk_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _walk_keys(v)}
    return set()


def test_gemini_declarations_use_only_the_openapi_subset() -> None:
    decls = export_gemini(TOOL_SPECS)
    assert [d["name"] for d in decls] == [s.name for s in TOOL_SPECS]
    keys = _walk_keys([d.get("parameters", {}) for d in decls])
    assert not keys & {"additionalProperties", "default", "exclusiveMinimum", "$schema"}
    by_name = {d["name"]: d for d in decls}
    assert "parameters" not in by_name["get_sandbox_status"]
    timeout = by_name["run_python_code"]["parameters"]["properties"]["timeout"]
    assert "greater than 0" in timeout["description"]
    assert "Default: False" in by_name["list_files"]["parameters"]["properties"]["recursive"]["description"]
    assert by_name["run_python_code"]["parameters"]["required"] == ["code"]


class _YamlishExporter:
    """A third-party format registered through the hook."""

    @staticmethod
    @hookimpl
    def sandbox_register_tool_exporters(register: Any) -> None:
        register("names-only", lambda specs: [{"tool": s.name} for s in specs])


def test_a_third_party_exporter_plugin_is_usable_through_sandbox_tools(tmp_path: Path) -> None:
    registry = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[_YamlishExporter()]))
    # exporting needs no running sandbox: definitions are static
    tools = SandboxTools(Sandbox.create_local(base_path=tmp_path, registry=registry), registry=registry, read_only=True)
    assert tools.export_tools("names-only") == [{"tool": n} for n in tools.get_available_tools()]
    assert tools.export_tools("names-only", include=["read_file"]) == [{"tool": "read_file"}]
    duplicated = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[_YamlishExporter(), _Dup()]))
    with pytest.raises(ValueError, match="already registered"):
        duplicated.tool_exporters  # noqa: B018 - the table is built (and the conflict found) when first read


class _Dup:
    @staticmethod
    @hookimpl
    def sandbox_register_tool_exporters(register: Any) -> None:
        register("names-only", lambda specs: [])


def test_default_registry_exports_match_the_module_functions(tmp_path: Path) -> None:
    tools = SandboxTools(Sandbox.create_local(base_path=tmp_path), registry=get_registry())
    capped = [with_timeout_cap(s, tools.max_timeout) for s in TOOL_SPECS]
    assert tools.get_openai_tools() == export_openai_chat(capped)
    assert tools.get_anthropic_tools() == export_anthropic(capped)
    assert tools.get_openai_responses_tools() == export_openai_responses(capped)
    assert tools.get_tool_definitions() == [s.to_dict() for s in capped]
    assert tools.get_available_tools() == [name for name, _ in SPEC_TOOLS]
    assert [t["function"]["name"] for t in tools.get_openai_tools(read_only=True)] == [
        s.name for s in TOOL_SPECS if s.read_only
    ]
