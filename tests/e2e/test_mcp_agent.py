"""An agent over MCP, end to end: the real ``anthropic`` SDK talks to a scripted model on
localhost, and every tool call goes through the real ``mcp`` client to the sandbox's MCP server.
The tools the model is offered over MCP must be the very ones ``get_anthropic_tools()`` gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import ResourceLimits
from alphora.sandbox.tools import export_anthropic, select_specs, with_timeout_cap

from .e2e_support import FakeLLMServer, anthropic_message, load_example

anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is a dev dependency")
mcp = pytest.importorskip("mcp", reason="the mcp SDK is the [mcp] extra")


@pytest.mark.timeout(120)
async def test_claude_loop_with_tools_from_the_mcp_server(tmp_path: Path) -> None:
    example = load_example("mcp_agent")
    cap = ResourceLimits().timeout_seconds  # the server's sandbox has the default limits
    expected_tools = export_anthropic([with_timeout_cap(s, cap) for s in select_specs(exclude=["admin"])])
    step = 0

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal step
        assert body["tools"] == expected_tools
        step += 1
        if step == 1:
            return anthropic_message(
                1,
                [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "save_file",
                        "input": {
                            "path": "primes.py",
                            "content": "print([n for n in range(2, 30) if all(n % d for d in range(2, n))])",
                        },
                    }
                ],
                "tool_use",
            )
        if step == 2:
            return anthropic_message(
                2,
                [
                    {"type": "tool_use", "id": "t2", "name": "run_python_file", "input": {"file_path": "primes.py"}},
                    {"type": "tool_use", "id": "t3", "name": "reset_sandbox", "input": {}},
                ],
                "tool_use",
            )
        if step == 3:
            ran, reset = (json.loads(b["content"]) for b in body["messages"][-1]["content"])
            assert ran["output"] == "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29]\n"
            assert reset["error_type"] == "unknown_tool"  # excluded on the server's command line
            assert [b["is_error"] for b in body["messages"][-1]["content"]] == [False, True]
            return anthropic_message(3, [{"type": "text", "text": "Primes below 30: 2 … 29."}], "end_turn")
        raise AssertionError(f"unexpected request {step}")

    base = tmp_path / "mcp-agent"
    with FakeLLMServer(script) as fake:
        llm = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        params = example.server_parameters("--exclude", "admin", "--base-path", str(base))
        async with mcp.Client(params, read_timeout_seconds=60) as session:
            answer = await example.agent_loop(llm, session, "primes below 30", model="fake-model")
        await llm.close()
    assert not fake.errors, fake.errors[0]
    assert answer == "Primes below 30: 2 … 29."
    assert step == 3
    assert list(base.iterdir()) == []  # the server removed the session's sandbox
