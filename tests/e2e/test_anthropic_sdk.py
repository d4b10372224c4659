"""End to end through the real ``anthropic`` SDK: a scripted Claude stand-in at a local HTTP
endpoint writes a file, runs it, reads its output and answers. Every request is checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alphora.sandbox import Sandbox, SandboxTools

from .e2e_support import FakeLLMServer, anthropic_message, load_example

anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is a dev dependency")

SCRIPT = """\
import json, os
rows = [{"n": n, "square": n * n} for n in range(1, 6)]
with open("squares.json", "w") as f:
    json.dump(rows, f)
print("rows:", len(rows), "cwd has squares.json:", os.path.exists("squares.json"))
"""


def _tool_results(body: dict[str, Any], ids: list[str]) -> list[dict[str, Any]]:
    """The last user turn must carry one tool_result block per tool_use id, in order."""
    assistant, user = body["messages"][-2:]
    assert assistant["role"] == "assistant"
    uses = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert [b["id"] for b in uses] == ids
    assert user["role"] == "user"
    assert [b["type"] for b in user["content"]] == ["tool_result"] * len(ids)
    assert [b["tool_use_id"] for b in user["content"]] == ids
    out = []
    for block in user["content"]:
        result = json.loads(block["content"])
        assert block["is_error"] is (not result["success"])
        out.append(result)
    return out


class MessagesScript:
    def __init__(self, expected_tools: list[dict[str, Any]]) -> None:
        self.expected_tools = expected_tools
        self.step = 0

    def __call__(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/v1/messages", path
        assert body["tools"] == self.expected_tools, "the SDK must send get_anthropic_tools() unchanged"
        assert body["max_tokens"] > 0
        assert isinstance(body["system"], str)
        step, self.step = self.step, self.step + 1
        if step == 0:
            assert body["messages"] == [{"role": "user", "content": "squares please"}]
            return anthropic_message(
                step,
                [
                    {"type": "text", "text": "I'll write the script."},
                    {
                        "type": "tool_use",
                        "id": "toolu_save",
                        "name": "save_file",
                        "input": {"path": "work/squares.py", "content": SCRIPT},
                    },
                ],
                "tool_use",
            )
        if step == 1:
            (saved,) = _tool_results(body, ["toolu_save"])
            assert saved["success"] is True
            assert saved["path"] == "work/squares.py"
            # a mistyped argument and a correct call in the same turn
            return anthropic_message(
                step,
                [
                    {
                        "type": "tool_use",
                        "id": "toolu_bad",
                        "name": "run_shell_command",
                        "input": {"command": "cd work && python3 squares.py", "timeout": "10s"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_run",
                        "name": "run_shell_command",
                        "input": {"command": "cd work && python3 squares.py", "timeout": 30},
                    },
                ],
                "tool_use",
            )
        if step == 2:
            bad, ran = _tool_results(body, ["toolu_bad", "toolu_run"])
            assert bad["error_type"] == "invalid_arguments"
            assert "argument 'timeout' must be a number, got string \"10s\"" in bad["error"]
            assert ran["success"] is True, ran
            assert ran["output"] == "rows: 5 cwd has squares.json: True\n"
            return anthropic_message(
                step,
                [
                    {
                        "type": "tool_use",
                        "id": "toolu_read",
                        "name": "read_file",
                        "input": {"path": "work/squares.json"},
                    },
                ],
                "tool_use",
            )
        if step == 3:
            (read,) = _tool_results(body, ["toolu_read"])
            rows = json.loads(read["content"])
            assert rows[-1] == {"n": 5, "square": 25}
            return anthropic_message(step, [{"type": "text", "text": "The squares are 1, 4, 9, 16, 25."}], "end_turn")
        raise AssertionError(f"unexpected request #{step}")


async def test_anthropic_messages_agent_loop(sandbox: Sandbox) -> None:
    example = load_example("anthropic_agent")
    tools = SandboxTools(sandbox)
    script = MessagesScript(tools.get_anthropic_tools())
    with FakeLLMServer(script) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="test-key", max_retries=0)
        answer = await example.agent_loop(client, tools, "squares please", model="fake-model")
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert answer == "The squares are 1, 4, 9, 16, 25."
    assert script.step == 4
    headers = fake.requests[0][2]
    assert "test-key" in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in fake.requests[0][2]
    assert json.loads(await sandbox.read_file("work/squares.json"))[0] == {"n": 1, "square": 1}


async def test_anthropic_policy_refusal_reaches_the_model(tmp_path: Any) -> None:
    """With shell disabled by policy the model gets a refusal it can act on, as an is_error result."""
    from alphora.sandbox import SecurityPolicy

    box = Sandbox.create_local(base_path=tmp_path / "sb", security_policy=SecurityPolicy(allow_shell=False))
    await box.start()
    try:
        tools = SandboxTools(box)
        seen: list[dict[str, Any]] = []

        def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
            seen.append(body)
            if len(seen) == 1:
                return anthropic_message(
                    0,
                    [
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "run_shell_command",
                            "input": {"command": "cat /etc/passwd"},
                        }
                    ],
                    "tool_use",
                )
            (refused,) = _tool_results(body, ["t1"])
            assert refused["error_type"] == "policy_violation"
            assert "do not retry" in refused["error"]
            return anthropic_message(1, [{"type": "text", "text": "Shell is not allowed here."}], "end_turn")

        example = load_example("anthropic_agent")
        with FakeLLMServer(script) as fake:
            client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
            answer = await example.agent_loop(client, tools, "read passwd", model="fake-model")
            await client.close()
        assert not fake.errors, fake.errors[0]
        assert answer == "Shell is not allowed here."
    finally:
        await box.destroy()
