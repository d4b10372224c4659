"""Numbers from models are finite and in range: NaN, ±Infinity, negative and huge values are refused
as ``invalid_arguments`` (naming the allowed range) for every numeric argument of every tool, through
``execute_tool`` and ``execute_tool_json``, before anything runs."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import ConfigurationError, ResourceLimits, Sandbox, SandboxTools
from alphora.sandbox.tools import TOOL_SPECS, ToolSpec

LIMIT = 2  # the sandbox's timeout_seconds: the longest timeout a model may ask for


def _numeric(spec: ToolSpec) -> list[str]:
    return [k for k, p in spec.properties.items() if p.get("type") in ("number", "integer")]


#: every (tool, numeric argument) pair of the built-in specs
NUMERIC = [(s.name, key) for s in TOOL_SPECS for key in _numeric(s)]


def _valid_args(spec: ToolSpec) -> dict[str, Any]:
    """The required arguments with harmless values (what runs if a bad number slipped through)."""
    fill = {"code": "print('ran')", "command": "echo ran", "file_path": "ran.py"}
    return {key: fill.get(key, "x") for key in spec.required}


@pytest.fixture
async def tools(tmp_path: Path) -> AsyncIterator[SandboxTools]:
    box = Sandbox.create_local(base_path=tmp_path / "numbers", resource_limits=ResourceLimits(timeout_seconds=LIMIT))
    await box.start()
    try:
        await box.write_file("ran.py", "print('ran')")
        yield SandboxTools(box)
    finally:
        await box.destroy()


def test_every_numeric_argument_is_bounded_on_both_sides(tmp_path: Path) -> None:
    """In what a model is shown (and the validator checks), every number has a finite range."""
    assert {name for name, _ in NUMERIC} == {"run_python_code", "run_python_file", "run_shell_command"}
    tools = SandboxTools(Sandbox.create_local(base_path=tmp_path, resource_limits=ResourceLimits(timeout_seconds=7)))
    for spec in tools.specs:
        for key in _numeric(spec):
            prop = spec.properties[key]
            low = [prop[k] for k in ("minimum", "exclusiveMinimum") if k in prop]
            high = [prop[k] for k in ("maximum", "exclusiveMaximum") if k in prop]
            assert low, f"{spec.name}.{key} has no lower bound"
            assert high, f"{spec.name}.{key} has no upper bound"
            assert all(math.isfinite(b) for b in low + high)
            if key == "timeout":
                assert high == [7]
                assert "7 seconds" in prop["description"]


BAD_NUMBERS: list[tuple[str, Any, str]] = [
    ("nan", float("nan"), "NaN"),
    ("inf", float("inf"), "Infinity"),
    ("-inf", float("-inf"), "-Infinity"),
    ("negative", -1, "-1"),
    ("zero", 0, "0"),
    ("huge float", 1e308, "1e+308"),
    ("huge int", 10**400, "1000000"),
    ("just over", LIMIT + 0.001, "2.001"),
]


@pytest.mark.parametrize(("tool", "key"), NUMERIC)
@pytest.mark.parametrize(("label", "value", "shown"), BAD_NUMBERS, ids=[b[0] for b in BAD_NUMBERS])
async def test_execute_tool_refuses_bad_numbers_with_the_range(
    tools: SandboxTools, tool: str, key: str, label: str, value: Any, shown: str
) -> None:
    spec = next(s for s in TOOL_SPECS if s.name == tool)
    result = await tools.execute_tool(tool, {**_valid_args(spec), key: value})
    assert result["success"] is False, result
    assert result["error_type"] == "invalid_arguments", result
    message = result["error"]
    assert f"argument '{key}' must be" in message
    assert f"greater than 0 and at most {LIMIT}" in message
    assert shown in message
    assert "ran" not in result.get("output", "")
    json.dumps(result, allow_nan=False)  # the result itself is plain JSON


@pytest.mark.parametrize(("tool", "key"), NUMERIC)
@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
async def test_execute_tool_json_refuses_the_non_json_constants(
    tools: SandboxTools, tool: str, key: str, text: str
) -> None:
    spec = next(s for s in TOOL_SPECS if s.name == tool)
    body = json.dumps(_valid_args(spec))[:-1] + f', "{key}": {text}}}'
    result = await tools.execute_tool_json(tool, body)
    assert result["success"] is False, result
    assert result["error_type"] == "invalid_arguments", result
    message = result["error"]
    assert f"contain {text}, which is not a JSON number" in message
    assert f"'{key}' greater than 0 and at most {LIMIT}" in message
    assert "ran" not in result.get("output", "")


@pytest.mark.parametrize(("tool", "key"), NUMERIC)
@pytest.mark.parametrize(
    ("text", "shown"), [("-1", "-1"), ("1e308", "1e+308"), ("1e400", "Infinity"), ("1" + "0" * 400, "1000000")]
)
async def test_execute_tool_json_refuses_negative_and_huge_numbers(
    tools: SandboxTools, tool: str, key: str, text: str, shown: str
) -> None:
    """``1e400`` is valid JSON that Python decodes to ``inf``: the validator refuses it too."""
    spec = next(s for s in TOOL_SPECS if s.name == tool)
    body = json.dumps(_valid_args(spec))[:-1] + f', "{key}": {text}}}'
    result = await tools.execute_tool_json(tool, body)
    assert result["error_type"] == "invalid_arguments", result
    assert f"argument '{key}' must be" in result["error"]
    assert f"greater than 0 and at most {LIMIT}" in result["error"]
    assert shown in result["error"]


@pytest.mark.parametrize("via", ["json", "dict"])
async def test_a_nan_timeout_does_not_outlive_the_limit(tools: SandboxTools, via: str) -> None:
    """The issue's case: an 8 s sleep with a NaN timeout under a 2 s limit is refused, not run."""
    started = time.monotonic()
    if via == "json":
        result = await tools.execute_tool_json(
            "run_python_code", '{"code": "import time; time.sleep(8); print(\'slept\')", "timeout": NaN}'
        )
    else:
        result = await tools.execute_tool(
            "run_python_code", {"code": "import time; time.sleep(8); print('slept')", "timeout": float("nan")}
        )
    assert time.monotonic() - started < 7.5  # generous: the sleep alone would take 8 s
    assert result["error_type"] == "invalid_arguments", result
    assert "slept" not in result["output"]


async def test_valid_numbers_still_run(tools: SandboxTools) -> None:
    ok = await tools.execute_tool_json("run_python_code", '{"code": "print(40 + 2)", "timeout": 1.5}')
    assert ok["success"] is True, ok
    assert ok["output"] == "42\n"
    ok = await tools.execute_tool("run_shell_command", {"command": "echo fine", "timeout": LIMIT})
    assert ok["output"] == "fine\n"


async def test_a_session_run_refuses_nan_as_well(tmp_path: Path) -> None:
    box = Sandbox.create_local(base_path=tmp_path / "s", resource_limits=ResourceLimits(timeout_seconds=LIMIT))
    await box.start()
    try:
        async with SandboxTools(box, use_session=True) as tools:
            result = await tools.execute_tool("run_python_code", {"code": "x = 1", "timeout": float("nan")})
            assert result["error_type"] == "invalid_arguments", result
    finally:
        await box.destroy()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0, "10"])
def test_max_timeout_must_be_a_finite_positive_number(tmp_path: Path, bad: Any) -> None:
    """A NaN cap would make every comparison false and let any timeout through."""
    with pytest.raises(ConfigurationError, match="max_timeout"):
        SandboxTools(Sandbox.create_local(base_path=tmp_path), max_timeout=bad)


# -- the limits a model's numbers are checked against are finite too -----------------------------


@pytest.mark.parametrize("field", ["timeout_seconds", "cpu_cores"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_resource_limits_refuse_non_finite_numbers(field: str, bad: float) -> None:
    """A NaN timeout_seconds would be no timeout at all, and no cap on what a model asks for."""
    with pytest.raises(ValueError, match=f"{field} must be a finite number > 0"):
        ResourceLimits(**{field: bad})


def test_security_policy_refuses_a_nan_file_size_cap() -> None:
    from alphora.sandbox import SecurityPolicy

    with pytest.raises(ValueError, match="max_file_size_mb must be a finite number > 0"):
        SecurityPolicy(max_file_size_mb=float("nan"))


def test_a_yaml_nan_limit_is_a_configuration_error() -> None:
    import yaml

    from alphora.sandbox import SandboxConfig

    with pytest.raises(ConfigurationError, match=r"\$\.resource_limits\.timeout_seconds: .*finite"):
        SandboxConfig.from_dict(yaml.safe_load("resource_limits:\n  timeout_seconds: .nan\n"))


@pytest.mark.parametrize("command", [["run", "print(1)"], ["mcp"]])
@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0"])
def test_the_cli_refuses_a_non_finite_timeout(command: list[str], bad: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "alphora.sandbox.cli", *command[:1], "--timeout", bad, *command[1:]],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"argument --timeout: must be a finite positive number of seconds, got '{bad}'" in done.stderr
