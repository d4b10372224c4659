"""SandboxTools and the MCP server on the Docker backend (a real engine, the locally built image).

Gated by tests/docker/conftest.py: skipped with the reason when no engine or image is there, except under
``CI`` where that fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import ResourceLimits, Sandbox, SandboxTools, SecurityPolicy

pytestmark = pytest.mark.docker


@pytest.fixture
async def docker_sandbox(our_image: str, tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = Sandbox.create_docker(
        base_path=tmp_path / "docker-tools",
        docker_image=our_image,
        resource_limits=ResourceLimits(timeout_seconds=30, memory_mb=256),
    )
    await box.start()
    try:
        yield box
    finally:
        await box.destroy()


async def test_write_run_read_on_docker(docker_sandbox: Sandbox) -> None:
    tools = SandboxTools(docker_sandbox)
    assert (await tools.run_python_code("print(1 + 1)"))["output"] == "2\n"
    assert (await tools.save_file("job/fib.py", "import sys\nprint(sys.argv[1:])"))["success"] is True
    ran = await tools.run_python_file("job/fib.py", ["x"])
    assert ran["output"] == "['x']\n"
    shell = await tools.run_shell_command("id -u && ls job")
    assert shell["success"] is True
    assert shell["output"].splitlines()[0] != "0"  # not root in the container
    assert shell["output"].splitlines()[1] == "fib.py"
    listed = await tools.list_files("", recursive=True)
    assert "job/fib.py" in {f["path"] for f in listed["files"]}
    usage = await tools.get_resource_usage()
    assert usage["success"] is True
    json.dumps(usage)


async def test_docker_hostile_calls_come_back_as_refusals(docker_sandbox: Sandbox) -> None:
    tools = SandboxTools(docker_sandbox)
    planted = await tools.run_shell_command("ln -s /etc/passwd link && echo ok")
    assert planted["output"] == "ok\n"
    leaked = await tools.read_file("link")
    assert leaked["success"] is False
    assert "root:x" not in json.dumps(leaked)
    escape = await tools.read_file("../../etc/passwd")
    assert escape["error_type"] == "path_not_allowed"
    start = time.monotonic()
    slept = await tools.run_python_code("import time; time.sleep(60)", timeout=2)
    assert time.monotonic() - start < 20
    assert slept["error_type"] == "timeout"


async def test_docker_reset_sandbox_restarts_and_empties(docker_sandbox: Sandbox) -> None:
    tools = SandboxTools(docker_sandbox)
    await tools.save_file("a.txt", "1")
    await tools.set_environment_variable("KEEP", "yes")
    reset = await tools.reset_sandbox()
    assert reset["success"] is True, reset
    assert reset["files_deleted"] >= 1
    assert (await tools.file_exists("a.txt"))["exists"] is False
    after = await tools.run_python_code("import os; print(os.environ['KEEP'])")
    assert after["output"] == "yes\n"


async def test_docker_policy_refusal(our_image: str, tmp_path: Path) -> None:
    box = Sandbox.create_docker(
        base_path=tmp_path / "docker-policy", docker_image=our_image, security_policy=SecurityPolicy(allow_shell=False)
    )
    await box.start()
    try:
        refused = await SandboxTools(box).run_shell_command("ls")
        assert refused["error_type"] == "policy_violation"
    finally:
        await box.destroy()


@pytest.mark.timeout(180)
async def test_mcp_server_on_docker_removes_the_container_on_disconnect(
    our_image: str, objects_of: Callable[[str], tuple[list[str], list[str]]], tmp_path: Path
) -> None:
    mcp = pytest.importorskip("mcp", reason="the mcp SDK is the [mcp] extra")
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "DOCKER_HOST") or k.startswith("ALPHORA_SANDBOX_")
    }
    params = mcp.StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "alphora.sandbox.tools.mcp_server",
            "--backend",
            "docker",
            "--image",
            our_image,
            "--base-path",
            str(tmp_path / "mcp-docker"),
        ],
        env=env,
    )
    async with mcp.Client(params, read_timeout_seconds=120) as client:
        ran = await client.call_tool("run_python_code", {"code": "import platform; print(platform.system())"})
        assert ran.structured_content["output"] == "Linux\n"
        status: dict[str, Any] = (await client.call_tool("get_sandbox_status", {})).structured_content
        assert status["backend_type"] == "docker"
        sandbox_id = status["sandbox_id"]
        assert objects_of(sandbox_id)[0]
    assert objects_of(sandbox_id)[0] == []
