"""SandboxTools on a real local sandbox: every tool, the result shape, and what a model sees when
it calls badly or the sandbox refuses."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphora.sandbox import Sandbox, SandboxTools, SecurityPolicy
from alphora.sandbox.tools import ERROR_TYPES, SESSION_NOTE, TOOL_SPECS

CODE_KEYS = {"success", "output", "error", "execution_time"}


@pytest.fixture
async def tools(local_sandbox: Sandbox) -> AsyncIterator[SandboxTools]:
    async with SandboxTools(local_sandbox) as t:
        yield t


async def _policy_sandbox(tmp_path: Path, policy: SecurityPolicy) -> Sandbox:
    box = Sandbox.create_local(base_path=tmp_path / "policy", security_policy=policy)
    await box.start()
    return box


def _assert_error(result: dict[str, Any], error_type: str) -> str:
    assert result["success"] is False, result
    assert result["error_type"] == error_type, result
    assert error_type in ERROR_TYPES
    assert isinstance(result["error"], str)
    assert result["error"]
    json.dumps(result)
    message: str = result["error"]
    return message


# -- the spec's example and the code tools -------------------------------------------------------


async def test_spec_example_run_python_code(tools: SandboxTools) -> None:
    result = await tools.run_python_code("print(1 + 1)")
    assert set(result) >= CODE_KEYS
    assert result["success"] is True
    assert result["output"] == "2\n"
    assert result["error"] == ""
    assert isinstance(result["execution_time"], float)
    assert result["exit_code"] == 0
    saved = await tools.save_file("test.py", "print('hello')")
    assert saved == {"success": True, "path": "test.py", "size": 14, "file_type": "python", "error": ""}


async def test_failing_code_is_data_with_the_exception_line_as_error(tools: SandboxTools) -> None:
    result = await tools.run_python_code("print('before')\n1 / 0")
    assert set(result) >= CODE_KEYS
    _assert_error(result, "execution_failed")
    assert result["output"].startswith("before\n")
    assert "Traceback" in result["output"]
    assert "ZeroDivisionError: division by zero" in result["error"]
    assert result["exit_code"] != 0


async def test_timeout_kills_and_says_so(tools: SandboxTools) -> None:
    start = time.monotonic()
    result = await tools.run_python_code("import time\nprint('tick', flush=True)\ntime.sleep(60)", timeout=1)
    assert time.monotonic() - start < 15  # generous: timeout + process teardown
    message = _assert_error(result, "timeout")
    assert "killed" in message
    assert result["status"] == "timeout"


async def test_long_output_is_cut_in_the_middle_with_a_marker(local_sandbox: Sandbox) -> None:
    tools = SandboxTools(local_sandbox, max_output_chars=1000)
    result = await tools.run_python_code("print('START' + 'x' * 200000 + 'END')")
    assert result["success"] is True
    assert result["truncated"] is True
    assert result["output"].startswith("START")
    assert result["output"].endswith("END\n")
    assert "characters cut from the middle" in result["output"]
    assert len(result["output"]) < 1200
    assert result["truncated_chars"] == 200009 - 1000
    unlimited = SandboxTools(local_sandbox, max_output_chars=None)
    assert len((await unlimited.run_python_code("print('y' * 50000)"))["output"]) == 50001
    with pytest.raises(ValueError, match="max_output_chars"):
        SandboxTools(local_sandbox, max_output_chars=5)


async def test_run_python_file_and_shell(tools: SandboxTools) -> None:
    await tools.save_file("src/app.py", "import sys\nprint('args', sys.argv[1:])")
    ran = await tools.run_python_file("src/app.py", ["a", "b c"])
    assert ran["output"] == "args ['a', 'b c']\n"
    shell = await tools.run_shell_command("echo 'Hello' | tr '[:lower:]' '[:upper:]'")
    assert shell["output"] == "HELLO\n"
    assert set(shell) >= CODE_KEYS
    missing = await tools.run_python_file("nope.py")
    assert set(missing) >= CODE_KEYS
    _assert_error(missing, "not_found")


# -- files ---------------------------------------------------------------------------------------


async def test_file_tools_round_trip(tools: SandboxTools) -> None:
    assert (await tools.file_exists("d/a.txt"))["exists"] is False
    await tools.save_file("d/a.txt", "alpha")
    assert (await tools.file_exists("d/a.txt"))["exists"] is True
    assert (await tools.read_file("d/a.txt"))["content"] == "alpha"
    assert (await tools.copy_file("d/a.txt", "d/b.txt")) == {
        "success": True,
        "source": "d/a.txt",
        "dest": "d/b.txt",
        "error": "",
    }
    assert (await tools.move_file("d/b.txt", "e/c.txt"))["dest"] == "e/c.txt"
    top = await tools.list_files()
    assert {f["name"] for f in top["files"]} >= {"d", "e"}
    deep = await tools.list_files("", recursive=True)
    paths = {f["path"] for f in deep["files"]}
    assert {"d/a.txt", "e/c.txt"} <= paths
    assert "d/b.txt" not in paths
    assert (await tools.delete_file("d"))["deleted"] is True
    _assert_error(await tools.delete_file("d"), "not_found")
    _assert_error(await tools.read_file("d/a.txt"), "not_found")


async def test_read_file_refuses_binary_and_cuts_long_text(local_sandbox: Sandbox) -> None:
    tools = SandboxTools(local_sandbox, max_output_chars=500)
    await local_sandbox.write_file_bytes("img.bin", bytes(range(256)) * 4)
    message = _assert_error(await tools.read_file("img.bin"), "tool_error")
    assert "not UTF-8 text" in message
    assert "run_python_code" in message
    await local_sandbox.write_file("big.txt", "a" * 300 + "b" * 3000 + "z" * 300)
    big = await tools.read_file("big.txt")
    assert big["truncated"] is True
    assert big["content"].startswith("a" * 250)
    assert big["content"].endswith("z" * 250)
    assert big["size"] == 3600


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b", "x\x00y"])
async def test_paths_outside_the_workspace_are_refused(tools: SandboxTools, path: str) -> None:
    for result in (await tools.read_file(path), await tools.save_file(path, "x"), await tools.delete_file(path)):
        assert result["success"] is False
        assert result["error_type"] in ("path_not_allowed", "policy_violation")
        assert "root:" not in json.dumps(result)


async def test_symlink_planted_by_code_does_not_leak_host_files(tools: SandboxTools) -> None:
    planted = await tools.run_shell_command("ln -s /etc/passwd link && ln -s / rootlink && echo ok")
    assert planted["output"] == "ok\n"
    for result in (
        await tools.read_file("link"),
        await tools.read_file("rootlink/etc/passwd"),
        await tools.save_file("rootlink/tmp/pwned", "x"),
    ):
        assert result["success"] is False, result
        assert "root:x" not in json.dumps(result)


# -- env, status, packages, reset ----------------------------------------------------------------


async def test_environment_variables(tools: SandboxTools) -> None:
    assert (await tools.get_environment_variable("DATA_DIR")) == {
        "success": True,
        "key": "DATA_DIR",
        "value": None,
        "is_set": False,
        "error": "",
    }
    assert (await tools.set_environment_variable("DATA_DIR", "/data"))["success"] is True
    assert (await tools.get_environment_variable("DATA_DIR"))["value"] == "/data"
    shown = await tools.run_python_code("import os; print(os.environ['DATA_DIR'])")
    assert shown["output"] == "/data\n"
    bad = await tools.set_environment_variable("1 BAD", "x")
    assert bad["success"] is False
    assert "invalid environment variable name" in bad["error"]


async def test_status_and_usage_are_json(tools: SandboxTools) -> None:
    status = await tools.get_sandbox_status()
    assert status["success"] is True
    assert status["status"] == "running"
    assert status["limits"]["timeout_seconds"] == tools.max_timeout
    assert status["policy"]["allow_shell"] is True
    assert status["stateful_python"] is False
    usage = await tools.get_resource_usage()
    assert {"cpu_percent", "memory_mb", "disk_mb", "process_count"} <= set(usage)
    json.dumps([status, usage])


async def test_package_queries_and_invalid_names(tools: SandboxTools) -> None:
    listed = await tools.list_installed_packages()
    assert listed["success"] is True
    assert listed["count"] == len(listed["packages"])
    names = {p["name"].lower() for p in listed["packages"]}
    assert "attrs" not in names  # installed for the agent (this test), not in the sandbox's environment
    assert (await tools.check_package_installed("attrs"))["installed"] is False
    assert (await tools.check_package_installed("surely-not-installed-pkg"))["installed"] is False
    for bad in ("-r /etc/passwd", "requests; rm -rf /", "--index-url=http://evil"):
        _assert_error(await tools.install_pip_package(bad), "package_error")
    _assert_error(await tools.install_pip_packages(["ok-name", "--pre"]), "package_error")
    _assert_error(await tools.uninstall_pip_package("-y"), "package_error")


async def test_reset_sandbox_restarts_and_empties_the_workspace(tools: SandboxTools) -> None:
    await tools.save_file("a.txt", "1")
    await tools.save_file("dir/b.txt", "2")
    await tools.set_environment_variable("KEEP", "yes")
    await tools.run_python_code("import tempfile; tempfile.NamedTemporaryFile(delete=False).write(b'x')")
    result = await tools.reset_sandbox()
    assert result == {"success": True, "status": "running", "files_deleted": 2, "error": ""}
    left = (await tools.list_files("", recursive=True))["files"]
    assert [f["path"] for f in left if not f["path"].startswith((".venv/", ".venv"))] in ([], [".tmp"])
    assert (await tools.file_exists("a.txt"))["exists"] is False
    assert (await tools.get_environment_variable("KEEP"))["value"] == "yes"
    assert (await tools.run_python_code("print('alive')"))["output"] == "alive\n"


async def test_stateful_session_persists_and_reset_forgets(local_sandbox: Sandbox) -> None:
    async with SandboxTools(local_sandbox, use_session=True) as tools:
        (definition,) = tools.get_openai_tools(include=["run_python_code"])
        assert SESSION_NOTE in definition["function"]["description"]
        assert "fresh interpreter" not in definition["function"]["description"]
        assert (await tools.get_sandbox_status())["stateful_python"] is True
        assert (await tools.run_python_code("x = 41\nimport math"))["success"] is True
        second = await tools.run_python_code("print(x + 1)\nmath.pi")
        assert second["output"] == "42\n"
        assert second["value"] == "3.141592653589793"
        await tools.reset_sandbox()
        after = await tools.run_python_code("print(x)")
        _assert_error(after, "execution_failed")
        assert "NameError" in after["error"]
    stateless = SandboxTools(local_sandbox)
    assert "fresh interpreter" in stateless.get_anthropic_tools()[0]["description"]
    await stateless.run_python_code("y = 1")
    assert "NameError" in (await stateless.run_python_code("print(y)"))["error"]


# -- policy refusals and infrastructure errors ---------------------------------------------------


async def test_shell_disabled_by_policy_is_a_clear_refusal(tmp_path: Path) -> None:
    box = await _policy_sandbox(tmp_path, SecurityPolicy(allow_shell=False))
    try:
        result = await SandboxTools(box).run_shell_command("ls")
        message = _assert_error(result, "policy_violation")
        assert message.startswith("Refused by the sandbox security policy")
        assert "do not retry" in message
        assert set(result) >= CODE_KEYS
    finally:
        await box.destroy()


async def test_strict_policy_blocks_imports_and_writes_when_disabled(tmp_path: Path) -> None:
    box = await _policy_sandbox(tmp_path, SecurityPolicy(allow_file_write=False, blocked_imports=["subprocess"]))
    try:
        tools = SandboxTools(box)
        _assert_error(await tools.run_python_code("import subprocess"), "policy_violation")
        _assert_error(await tools.save_file("x.txt", "no"), "policy_violation")
        assert (await tools.run_python_code("print('fine')"))["output"] == "fine\n"
    finally:
        await box.destroy()


async def test_stopped_sandbox_is_reported_not_raised(tmp_path: Path) -> None:
    box = Sandbox.create_local(base_path=tmp_path / "stopped")
    try:
        tools = SandboxTools(box)
        message = _assert_error(await tools.run_python_code("print(1)"), "sandbox_not_running")
        assert "not running" in message
        _assert_error(await tools.get_resource_usage(), "sandbox_not_running")
    finally:
        await box.destroy()


# -- the model's bad calls through execute_tool --------------------------------------------------


async def test_execute_tool_bad_calls_are_results(tools: SandboxTools) -> None:
    unknown = await tools.execute_tool("run_pyhton_code", {"code": "print(1)"})
    assert "did you mean 'run_python_code'?" in _assert_error(unknown, "unknown_tool")
    missing = await tools.execute_tool("save_file", {"path": "a.txt"})
    assert "missing required argument 'content'" in _assert_error(missing, "invalid_arguments")
    wrong = await tools.execute_tool("run_python_code", {"code": "print(1)", "timeout": "10s"})
    assert "argument 'timeout' must be a number, got string \"10s\"" in _assert_error(wrong, "invalid_arguments")
    as_text = await tools.execute_tool("read_file", '{"path": "a.txt"}')  # type: ignore[arg-type]
    assert "must be a JSON object" in _assert_error(as_text, "invalid_arguments")
    not_json = await tools.execute_tool_json("read_file", '{"path": ')
    assert "not valid JSON" in _assert_error(not_json, "invalid_arguments")
    double = await tools.execute_tool_json("read_file", json.dumps('{"path": "a.txt"}'))
    assert "must be a JSON object" in _assert_error(double, "invalid_arguments")
    ok = await tools.execute_tool_json("run_python_code", '{"code": "print(3)"}')
    assert ok["output"] == "3\n"
    assert (await tools.execute_tool_json("get_sandbox_status", ""))["success"] is True


async def test_direct_calls_are_validated_too(tools: SandboxTools) -> None:
    result = await tools.run_python_code(123)  # type: ignore[arg-type]
    assert "argument 'code' must be a string, got integer 123" in _assert_error(result, "invalid_arguments")
    assert set(result) >= CODE_KEYS


async def test_every_tool_returns_json_with_success_and_error(tools: SandboxTools) -> None:
    await tools.save_file("f.py", "print('f')")
    calls: dict[str, dict[str, Any]] = {
        "run_python_code": {"code": "print(1)"},
        "run_python_file": {"file_path": "f.py"},
        "run_shell_command": {"command": "true"},
        "save_file": {"path": "g.txt", "content": "g"},
        "read_file": {"path": "g.txt"},
        "delete_file": {"path": "g.txt"},
        "list_files": {},
        "file_exists": {"path": "f.py"},
        "copy_file": {"source": "f.py", "dest": "h.py"},
        "move_file": {"source": "h.py", "dest": "i.py"},
        "install_pip_package": {"package": "-bad"},
        "install_pip_packages": {"packages": ["-bad"]},
        "uninstall_pip_package": {"package": "-bad"},
        "list_installed_packages": {},
        "check_package_installed": {"package": "attrs"},
        "set_environment_variable": {"key": "K", "value": "v"},
        "get_environment_variable": {"key": "K"},
        "get_sandbox_status": {},
        "get_resource_usage": {},
        "reset_sandbox": {},
    }
    assert list(calls) == [s.name for s in TOOL_SPECS]
    for name, args in calls.items():
        result = await tools.execute_tool(name, args)
        assert isinstance(result["success"], bool), name
        assert isinstance(result["error"], str), name
        assert result["success"] or result["error"], name
        json.dumps(result)


_names = st.sampled_from(
    [
        "read_file",
        "save_file",
        "list_files",
        "file_exists",
        "copy_file",
        "move_file",
        "delete_file",
        "get_environment_variable",
        "set_environment_variable",
        "nope",
        "",
    ]
)
_values = st.none() | st.booleans() | st.integers() | st.text(max_size=30) | st.lists(st.text(max_size=5), max_size=3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=_names,
    args=st.dictionaries(
        st.sampled_from(["path", "content", "source", "dest", "key", "value", "recursive", "x"]), _values, max_size=4
    ),
)
async def test_hostile_calls_never_raise(local_sandbox: Sandbox, name: str, args: dict[str, Any]) -> None:
    tools = SandboxTools(local_sandbox)
    result = await tools.execute_tool(name, args)
    assert isinstance(result["success"], bool)
    json.dumps(result)
    assert local_sandbox.is_running


async def test_an_unexpected_exception_inside_a_tool_becomes_a_result(tmp_path: Path) -> None:
    """A backend that crashes mid-call (here: a LocalBackend whose run raises) must not kill the loop."""
    from alphora.sandbox import LocalBackend, ProcessRequest
    from alphora.sandbox.backend import OutputCallback
    from alphora.sandbox.types import ExecutionResult

    class CrashingBackend(LocalBackend):
        async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
            raise RuntimeError("runner connection lost")

    backend = CrashingBackend("crashing", tmp_path / "crashing")
    box = Sandbox(backend=backend)
    await box.start()
    try:
        tools = SandboxTools(box)
        result = await tools.run_python_code("print(1)")
        message = _assert_error(result, "tool_error")
        assert message == "the tool failed: RuntimeError: runner connection lost"
        assert set(result) >= CODE_KEYS
        assert (await tools.save_file("still.txt", "works"))["success"] is True
    finally:
        await box.destroy()


async def test_a_model_cannot_extend_the_timeout_past_the_sandbox_limit(tmp_path: Path) -> None:
    from alphora.sandbox import ResourceLimits

    box = Sandbox.create_local(base_path=tmp_path / "limits", resource_limits=ResourceLimits(timeout_seconds=5))
    await box.start()
    try:
        tools = SandboxTools(box)
        assert tools.max_timeout == 5
        refused = await tools.execute_tool("run_python_code", {"code": "print(1)", "timeout": 3600})
        message = _assert_error(refused, "invalid_arguments")
        assert "argument 'timeout' must be greater than 0 and at most 5, got 3600" in message
        assert "at most 5 (this sandbox's limit); omit it to use the limit" in message
        (schema,) = [t["input_schema"] for t in tools.get_anthropic_tools(include=["run_python_code"])]
        assert schema["properties"]["timeout"]["maximum"] == 5  # the model sees the range up front
        assert (await tools.execute_tool("run_python_code", {"code": "print(1)", "timeout": 5}))["success"] is True
        generous = SandboxTools(box, max_timeout=60)
        assert (await generous.run_shell_command("echo ok", timeout=60))["output"] == "ok\n"
    finally:
        await box.destroy()


async def test_parallel_calls_share_one_session(local_sandbox: Sandbox) -> None:
    async with SandboxTools(local_sandbox, use_session=True) as tools:
        results = await asyncio.gather(*(tools.run_python_code(f"v{i} = {i}") for i in range(4)))
        assert all(r["success"] for r in results), results
        total = await tools.run_python_code("print(v0 + v1 + v2 + v3)")
        assert total["output"] == "6\n"


async def test_session_code_that_ignores_interrupts_is_killed_and_the_model_is_told(local_sandbox: Sandbox) -> None:
    stubborn = (
        "import time\nwhile True:\n    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass"
    )
    async with SandboxTools(local_sandbox, use_session=True) as tools:
        await tools.run_python_code("x = 1")
        start = time.monotonic()
        result = await tools.run_python_code(stubborn, timeout=1)
        assert time.monotonic() - start < 20
        message = _assert_error(result, "timeout")
        assert result["state_lost"] is True
        assert "restarted" in message
        assert message.count("restarted") == 1
        assert "NameError" in (await tools.run_python_code("print(x)"))["error"]
        assert (await tools.run_python_code("print('recovered')"))["output"] == "recovered\n"


async def test_listing_the_root_leaves_out_the_sandbox_own_folders(tools: SandboxTools) -> None:
    await tools.run_python_code("import tempfile; tempfile.NamedTemporaryFile(dir='.tmp', delete=False).write(b'x')")
    await tools.save_file("mine.txt", "x")
    for path in ("", ".", "./"):
        listed = await tools.list_files(path, recursive=True)
        assert [f["path"] for f in listed["files"]] == ["mine.txt"], path
    assert (await tools.list_files(".tmp"))["count"] == 1


def _wheel(tmp_path: Path, name: str, version: str) -> Path:
    """A tiny wheel written by hand (a zip with its dist-info), so package tools are tested
    without the network or a build backend."""
    out = tmp_path / "wheels"
    out.mkdir(exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: alphora-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    records = [f"{path},," for path in files] + [f"{dist}/RECORD,,"]
    with zipfile.ZipFile(out / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
        whl.writestr(f"{dist}/RECORD", "\n".join(records) + "\n")
    return out


@pytest.mark.slow
async def test_package_tools_install_check_and_survive_a_reset(tmp_path: Path) -> None:
    wheels = _wheel(tmp_path, "alphora_tool_probe", "0.1.0")
    _wheel(tmp_path, "alphora_tool_probe2", "2.0.0")
    box = Sandbox.create_local(base_path=tmp_path / "pkg")
    await box.start()
    try:
        await box.set_env("PIP_NO_INDEX", "1")
        await box.set_env("PIP_FIND_LINKS", str(wheels))
        tools = SandboxTools(box)
        assert (await tools.check_package_installed("alphora_tool_probe"))["installed"] is False
        installed = await tools.install_pip_package("alphora_tool_probe", "0.1.0")
        assert installed["success"] is True, installed
        assert "Successfully installed alphora" in installed["output"]
        assert installed["package"] == "alphora_tool_probe"
        both = await tools.install_pip_packages(["alphora_tool_probe2>=2"])
        assert both["success"] is True, both
        assert (await tools.check_package_installed("alphora-tool-probe"))["installed"] is True
        used = await tools.run_python_code(
            "import alphora_tool_probe, alphora_tool_probe2\n"
            "print(alphora_tool_probe.VERSION, alphora_tool_probe2.VERSION)"
        )
        assert used["output"] == "0.1.0 2.0.0\n"
        names = {p["name"].lower().replace("_", "-") for p in (await tools.list_installed_packages())["packages"]}
        assert {"alphora-tool-probe", "alphora-tool-probe2"} <= names
        missing = await tools.install_pip_package("alphora_tool_probe", "9.9.9")
        assert missing["success"] is False
        assert missing["error_type"] == "execution_failed"
        assert "9.9.9" in missing["output"]
        # reset_sandbox empties the workspace but keeps what was installed
        assert (await tools.reset_sandbox())["success"] is True
        assert (await tools.check_package_installed("alphora_tool_probe"))["installed"] is True
        removed = await tools.uninstall_pip_package("alphora_tool_probe")
        assert removed["success"] is True, removed
        assert (await tools.check_package_installed("alphora_tool_probe"))["installed"] is False
        host = subprocess.run([sys.executable, "-c", "import alphora_tool_probe2"], capture_output=True, check=False)
        assert host.returncode != 0, "the package leaked into the host's environment"
    finally:
        await box.destroy()


async def test_absurd_inputs_stay_small_results(tools: SandboxTools) -> None:
    deep_text = '{"path": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert "nested too deeply" in _assert_error(
        await tools.execute_tool_json("read_file", deep_text), "invalid_arguments"
    )
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    for result in (
        await tools.execute_tool("read_file", {"path": deep}),
        await tools.execute_tool("run_python_file", {"file_path": "a.py", "args": deep}),
    ):
        assert len(_assert_error(result, "invalid_arguments")) < 400
    huge = "x" * 1_000_000
    assert len(_assert_error(await tools.execute_tool(huge, {}), "unknown_tool")) < 1000
    assert len(_assert_error(await tools.execute_tool("read_file", {huge: 1, "path": "a"}), "invalid_arguments")) < 1000
    long_path = await tools.execute_tool("read_file", {"path": huge})
    assert long_path["success"] is False
    assert len(long_path["error"]) < 1500


async def test_a_file_over_the_policy_size_is_refused(tmp_path: Path) -> None:
    box = await _policy_sandbox(tmp_path, SecurityPolicy(max_file_size_mb=1))
    try:
        result = await SandboxTools(box).save_file("big.txt", "x" * (2 * 1024 * 1024))
        _assert_error(result, "policy_violation")
        assert not await box.file_exists("big.txt")
    finally:
        await box.destroy()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=200)
    | st.builds(
        json.dumps,
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["path", "key", "x"]), c, max_size=3),
            max_leaves=8,
        ),
    )
)
async def test_any_arguments_text_gives_a_result(local_sandbox: Sandbox, text: str) -> None:
    tools = SandboxTools(local_sandbox, include=["read_file", "file_exists", "get_environment_variable"])
    for name in ("read_file", "file_exists", "get_environment_variable"):
        result = await tools.execute_tool_json(name, text)
        assert isinstance(result["success"], bool)
        json.dumps(result)


@pytest.mark.network
async def test_the_spec_sandboxtools_block_as_written(tmp_path: Path) -> None:
    """The spec's 'SandboxTools 类' example, verbatim apart from base_path (pip may reach the index)."""
    async with Sandbox.create_local(base_path=tmp_path / "spec") as sandbox:
        tools = SandboxTools(sandbox)

        result = await tools.run_python_code("print(1 + 1)")
        assert {k: result[k] for k in ("success", "output", "error")} == {"success": True, "output": "2\n", "error": ""}
        assert isinstance(result["execution_time"], float)

        result = await tools.save_file("test.py", "print('hello')")
        assert result["success"] is True

        result = await tools.install_pip_package("requests")
        assert result["success"] is True, result["output"][-2000:]
        assert (await tools.run_python_code("import requests; print('ok')"))["output"] == "ok\n"
        await sandbox.destroy()


async def test_cancellation_is_not_swallowed(tools: SandboxTools) -> None:
    """An agent framework that cancels a tool call must see the cancellation, and the sandbox
    must stay usable afterwards."""
    task = asyncio.create_task(tools.run_python_code("import time; time.sleep(30)"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await tools.run_python_code("print('still here')"))["output"] == "still here\n"
