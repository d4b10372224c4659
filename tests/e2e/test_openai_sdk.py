"""End to end through the real ``openai`` SDK: a scripted model at a local HTTP endpoint writes a
file, runs it, reads its output and answers. Every request is checked on the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alphora.sandbox import Sandbox, SandboxTools

from .e2e_support import FakeLLMServer, load_example, openai_text, openai_tool_calls, responses_output

openai = pytest.importorskip("openai", reason="the openai SDK is a dev dependency")

FIB = """\
import sys
n = int(sys.argv[1])
a, b = 0, 1
nums = []
for _ in range(n):
    nums.append(a)
    a, b = b, a + b
with open("out.txt", "w") as f:
    f.write(",".join(map(str, nums)))
print(f"wrote {n} numbers")
"""
EXPECTED = "0,1,1,2,3,5,8,13,21,34"


def _tool_messages(body: dict[str, Any], ids: list[str]) -> list[dict[str, Any]]:
    """The trailing tool messages of a request, checked to answer exactly ``ids``, decoded."""
    tail = body["messages"][-len(ids) :]
    assert [m["role"] for m in tail] == ["tool"] * len(ids)
    assert [m["tool_call_id"] for m in tail] == ids
    assert all(isinstance(m["content"], str) for m in tail)
    assistant = body["messages"][-len(ids) - 1]
    assert assistant["role"] == "assistant"
    assert [c["id"] for c in assistant["tool_calls"]] == ids
    assert all(c["type"] == "function" for c in assistant["tool_calls"])
    return [json.loads(m["content"]) for m in tail]


class ChatScript:
    """The "model": four turns, each asserting on what came back from the previous one."""

    def __init__(self, expected_tools: list[dict[str, Any]]) -> None:
        self.expected_tools = expected_tools
        self.step = 0

    def __call__(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/v1/chat/completions", path
        assert body["model"] == "fake-model"
        assert body["tools"] == self.expected_tools, "the SDK must send get_openai_tools() unchanged"
        step, self.step = self.step, self.step + 1
        if step == 0:
            assert [m["role"] for m in body["messages"]] == ["system", "user"]
            return openai_tool_calls(step, [("call_save", "save_file", {"path": "fib.py", "content": FIB})])
        if step == 1:
            (saved,) = _tool_messages(body, ["call_save"])
            assert saved == {"success": True, "path": "fib.py", "size": len(FIB), "file_type": "python", "error": ""}
            return openai_tool_calls(step, [("call_run", "run_python_file", {"file_path": "fib.py", "args": ["10"]})])
        if step == 2:
            (ran,) = _tool_messages(body, ["call_run"])
            assert ran["success"] is True, ran
            assert ran["output"] == "wrote 10 numbers\n"
            assert ran["error"] == ""
            assert isinstance(ran["execution_time"], float)
            # two calls in one turn: a good one and a bad one with JSON text that is not valid
            return openai_tool_calls(
                step,
                [
                    ("call_read", "read_file", {"path": "out.txt"}),
                    ("call_bad", "read_file", '{"path": "out.txt"'),
                ],
            )
        if step == 3:
            read, bad = _tool_messages(body, ["call_read", "call_bad"])
            assert read == {"success": True, "path": "out.txt", "content": EXPECTED, "size": len(EXPECTED), "error": ""}
            assert bad["success"] is False
            assert bad["error_type"] == "invalid_arguments"
            assert "not valid JSON" in bad["error"]
            return openai_text(step, f"The first 10 Fibonacci numbers are {EXPECTED}.")
        raise AssertionError(f"unexpected request #{step}")


async def test_openai_chat_completions_agent_loop(sandbox: Sandbox) -> None:
    example = load_example("openai_agent")
    tools = SandboxTools(sandbox)
    script = ChatScript(tools.get_openai_tools())
    with FakeLLMServer(script) as fake:
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="test-key", max_retries=0)
        answer = await example.agent_loop(client, tools, "Fibonacci please", model="fake-model")
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert answer == f"The first 10 Fibonacci numbers are {EXPECTED}."
    assert script.step == 4
    assert len(fake.requests) == 4
    assert fake.requests[0][2]["authorization"] == "Bearer test-key"
    # the sandbox really holds what the model made
    assert (await sandbox.read_file("out.txt")) == EXPECTED


async def test_openai_tool_definitions_are_accepted_by_the_sdk_for_a_subset(sandbox: Sandbox) -> None:
    """A read-only agent: the SDK sends exactly the subset, and a call outside it is refused as data."""
    tools = SandboxTools(sandbox, read_only=True)
    expected = tools.get_openai_tools()
    assert {t["function"]["name"] for t in expected} == set(tools.get_available_tools())
    seen: list[Any] = []

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert body["tools"] == expected
        seen.append(body)
        if len(seen) == 1:
            return openai_tool_calls(0, [("c1", "save_file", {"path": "x.txt", "content": "no"})])
        (refused,) = _tool_messages(body, ["c1"])
        assert refused["error_type"] == "unknown_tool"
        assert "not enabled for this agent" in refused["error"]
        return openai_text(1, "I may only read.")

    example = load_example("openai_agent")
    with FakeLLMServer(script) as fake:
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
        answer = await example.agent_loop(client, tools, "write x.txt", model="fake-model")
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert answer == "I may only read."
    assert not await sandbox.file_exists("x.txt")


async def test_openai_responses_api_function_tools(sandbox: Sandbox) -> None:
    """The Responses API shape: flat function tools in, function_call out, function_call_output back."""
    tools = SandboxTools(sandbox)
    expected = tools.get_openai_responses_tools()
    turns: list[dict[str, Any]] = []

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/v1/responses", path
        assert body["tools"] == expected
        turns.append(body)
        if len(turns) == 1:
            return responses_output(
                0,
                [
                    {
                        "type": "function_call",
                        "id": "fc_1",
                        "call_id": "call_1",
                        "name": "run_python_code",
                        "arguments": json.dumps({"code": "print(6 * 7)"}),
                        "status": "completed",
                    }
                ],
            )
        outputs = [item for item in body["input"] if item.get("type") == "function_call_output"]
        assert [o["call_id"] for o in outputs] == ["call_1"]
        result = json.loads(outputs[0]["output"])
        assert result["success"] is True
        assert result["output"] == "42\n"
        return responses_output(
            1,
            [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "42", "annotations": []}],
                }
            ],
        )

    with FakeLLMServer(script) as fake:
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
        items: list[Any] = [{"role": "user", "content": "what is 6*7? compute it"}]
        response = await client.responses.create(model="fake-model", input=items, tools=expected)
        for _ in range(5):
            calls = [o for o in response.output if o.type == "function_call"]
            if not calls:
                break
            items += response.output
            for call in calls:
                result = await tools.execute_tool_json(call.name, call.arguments)
                items.append({"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(result)})
            response = await client.responses.create(model="fake-model", input=items, tools=expected)
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert response.output_text == "42"
    assert len(turns) == 2
