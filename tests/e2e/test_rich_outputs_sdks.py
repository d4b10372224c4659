"""The model sees the chart: a session cell's PNG goes through each real SDK, in that API's own
tool-result shape, to the local server that plays the model, which checks the bytes it received.

Anthropic (``image`` blocks in ``tool_result``), OpenAI Responses (``input_image`` in
``function_call_output``), OpenAI Chat Completions (a ``user`` message of ``image_url`` parts after
the tool messages), Gemini (``inline_data`` parts after the ``function_response``) and MCP
(``ImageContent``, through the ``mcp`` SDK's stdio client). One local sandbox for the module.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alphora.sandbox import Sandbox, SandboxTools
from alphora.sandbox.tools import (
    anthropic_tool_result,
    gemini_parts,
    openai_chat_messages,
    openai_responses_output,
)
from tests._support.rich import PNG_SIGNATURE, RICH_CLASSES, host_site_packages

from .e2e_support import (
    FakeLLMServer,
    anthropic_message,
    load_example,
    openai_text,
    openai_tool_calls,
    responses_output,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: the cell the scripted model sends: a stdlib-made PNG chart as the trailing value
CODE = RICH_CLASSES + "\nChart(16, 12)"


def _expected_png() -> bytes:
    ns: dict[str, Any] = {}
    exec(RICH_CLASSES, ns)  # the same code, on the host: the bytes the model must receive
    png: bytes = ns["Chart"](16, 12)._repr_png_()
    assert png.startswith(PNG_SIGNATURE)
    return png


PNG = _expected_png()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tools(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxTools]:
    sandbox = Sandbox.create_local(base_path=tmp_path_factory.mktemp("rich-sdk") / "sb")
    await sandbox.start()
    try:
        async with SandboxTools(sandbox, use_session=True) as t:
            yield t
    finally:
        await sandbox.destroy()


def _check_result_json(text: str) -> None:
    result = json.loads(text)
    assert result["success"] is True, result
    assert result["value"] == "<Chart 16x12>"
    png, plain = result["attachments"]
    assert re.fullmatch(r"output-\d+-1\.png", png.pop("name"))  # the session's cell number, then the output's
    assert png == {"mime_type": "image/png", "size": len(PNG), "shown": True}
    assert plain["text"] == "<Chart 16x12>"


async def test_anthropic_tool_result_carries_the_png(tools: SandboxTools) -> None:
    anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is a dev dependency")
    step = 0

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal step
        step += 1
        if step == 1:
            use = {"type": "tool_use", "id": "toolu_1", "name": "run_python_code", "input": {"code": CODE}}
            return anthropic_message(0, [use], "tool_use")
        (block,) = body["messages"][-1]["content"]
        assert block["type"] == "tool_result"
        assert block["tool_use_id"] == "toolu_1"
        assert block["is_error"] is False
        text, image = block["content"]
        _check_result_json(text["text"])
        assert image["type"] == "image"
        assert image["source"]["type"] == "base64"
        assert image["source"]["media_type"] == "image/png"
        assert base64.b64decode(image["source"]["data"]) == PNG
        return anthropic_message(1, [{"type": "text", "text": "A 16x12 gradient."}], "end_turn")

    example = load_example("anthropic_agent")  # the documented loop, now with image blocks
    with FakeLLMServer(script) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        answer = await example.agent_loop(client, tools, "show me a chart", model="fake-model")
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert answer == "A 16x12 gradient."
    assert anthropic_tool_result("x", {"success": True})["content"] == '{"success": true}'  # no images: text


async def test_openai_responses_function_call_output_carries_the_png(tools: SandboxTools) -> None:
    openai = pytest.importorskip("openai", reason="the openai SDK is a dev dependency")
    turns: list[dict[str, Any]] = []

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/v1/responses", path
        turns.append(body)
        if len(turns) == 1:
            call = {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "run_python_code",
                "arguments": json.dumps({"code": CODE}),
                "status": "completed",
            }
            return responses_output(0, [call])
        (out,) = [i for i in body["input"] if i.get("type") == "function_call_output"]
        assert out["call_id"] == "call_1"
        text, image = out["output"]
        assert text["type"] == "input_text"
        _check_result_json(text["text"])
        assert image["type"] == "input_image"
        assert image["image_url"] == PNG_URI
        msg = {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "seen", "annotations": []}],
        }
        return responses_output(1, [msg])

    with FakeLLMServer(script) as fake:
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
        definitions: Any = tools.get_openai_responses_tools()
        items: list[Any] = [{"role": "user", "content": "chart please"}]
        response = await client.responses.create(model="fake-model", input=items, tools=definitions)
        while calls := [o for o in response.output if o.type == "function_call"]:
            items += response.output
            for call in calls:
                result = await tools.execute_tool_json(call.name, call.arguments)
                items.append(openai_responses_output(call.call_id, result))
            response = await client.responses.create(model="fake-model", input=items, tools=definitions)
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert response.output_text == "seen"


async def test_openai_chat_sends_the_png_in_a_user_message_after_the_tool_messages(tools: SandboxTools) -> None:
    openai = pytest.importorskip("openai", reason="the openai SDK is a dev dependency")
    step = 0

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal step
        step += 1
        if step == 1:
            return openai_tool_calls(0, [("c1", "run_python_code", {"code": CODE}), ("c2", "get_sandbox_status", {})])
        assistant, tool1, tool2, user = body["messages"][-4:]
        assert assistant["role"] == "assistant"
        assert (tool1["role"], tool1["tool_call_id"], tool2["tool_call_id"]) == ("tool", "c1", "c2")
        assert isinstance(tool1["content"], str)  # a tool message holds text only
        _check_result_json(tool1["content"])
        assert user["role"] == "user"
        note, image = user["content"]
        assert note["type"] == "text"
        assert re.fullmatch(r"Images produced by tool call c1: output-\d+-1\.png", note["text"])
        assert image == {"type": "image_url", "image_url": {"url": PNG_URI}}
        return openai_text(1, "seen")

    example = load_example("openai_agent")  # the documented loop, now with the image message
    with FakeLLMServer(script) as fake:
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0)
        answer = await example.agent_loop(client, tools, "chart please", model="fake-model")
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert answer == "seen"
    assert openai_chat_messages([("c", {"success": True})]) == [
        {"role": "tool", "tool_call_id": "c", "content": '{"success": true}'}
    ]


async def test_gemini_inline_data_carries_the_png(tools: SandboxTools) -> None:
    genai = pytest.importorskip("google.genai", reason="google-genai is optional: pip install google-genai")
    from google.genai import types

    step = 0

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal step
        step += 1
        reply: list[dict[str, Any]]
        if step == 1:
            reply = [{"functionCall": {"id": "g1", "name": "run_python_code", "args": {"code": CODE}}}]
        else:
            response, blob = body["contents"][-1]["parts"]
            assert response["functionResponse"]["name"] == "run_python_code"
            _check_result_json(json.dumps(response["functionResponse"]["response"]))
            inline = blob["inlineData"]  # this SDK version writes mime_type (proto JSON takes both spellings)
            assert inline.get("mimeType", inline.get("mime_type")) == "image/png"
            assert base64.urlsafe_b64decode(inline["data"]) == PNG  # google-genai sends URL-safe base64
            reply = [{"text": "seen"}]
        return {
            "candidates": [{"content": {"role": "model", "parts": reply}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
        }

    with FakeLLMServer(script) as fake:
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url))
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=tools.export_tools("gemini"))],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        contents: list[Any] = [types.Content(role="user", parts=[types.Part(text="chart please")])]
        for _ in range(3):
            response = await client.aio.models.generate_content(model="fake", contents=contents, config=config)
            if not response.function_calls:
                break
            contents.append(response.candidates[0].content)
            parts: list[Any] = []
            for call in response.function_calls:
                result = await tools.execute_tool(call.name or "", call.args or {})
                parts += [types.Part(**p) for p in gemini_parts(call.name or "", result, call.id)]
            contents.append(types.Content(role="user", parts=parts))
    assert not fake.errors, fake.errors[0]
    assert response.text == "seen"


@pytest.mark.timeout(120)
async def test_mcp_image_content_carries_the_png(tmp_path: Path) -> None:
    mcp = pytest.importorskip("mcp", reason="the mcp SDK is the [mcp] extra")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    params = mcp.StdioServerParameters(
        command=sys.executable,
        args=["-m", "alphora.sandbox.tools.mcp_server", "--base-path", str(tmp_path / "mcp"), "--use-session"],
        env=env,
    )
    async with mcp.Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool("run_python_code", {"code": CODE})
    text, image = result.content
    _check_result_json(text.text)
    assert result.structured_content == json.loads(text.text)
    assert image.type == "image"
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data) == PNG


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed here")
async def test_chart_agent_example_model_sees_the_matplotlib_chart(tools: SandboxTools) -> None:
    """examples/chart_agent.py: the model plots with matplotlib and answers from the chart it got."""
    anthropic = pytest.importorskip("anthropic", reason="the anthropic SDK is a dev dependency")
    example = load_example("chart_agent")
    code = (
        f"import sys; sys.path.append({host_site_packages()!r})\n"  # the dev env's matplotlib (see module doc)
        "import matplotlib.pyplot as plt\n"
        "plt.plot(['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun'], [12, 15, 14, 19, 23, 30])\n"
        "plt.title('Monthly sales')\n"
        "plt.show()"
    )
    seen: list[bytes] = []

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert [t["name"] for t in body["tools"]] == ["run_python_code"]
        if len(body["messages"]) == 1:
            assert body["messages"][0]["content"] == example.PROMPT
            use = {"type": "tool_use", "id": "t1", "name": "run_python_code", "input": {"code": code}}
            return anthropic_message(0, [use], "tool_use")
        (block,) = body["messages"][-1]["content"]
        text, image = block["content"]
        result = json.loads(text["text"])
        assert result["success"] is True, result
        assert [a["mime_type"] for a in result["attachments"]] == ["image/png"]
        seen.append(base64.b64decode(image["source"]["data"]))
        return anthropic_message(1, [{"type": "text", "text": "Sales rise, fastest from April to June."}], "end_turn")

    with FakeLLMServer(script) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
        answer = await example.ask_about_chart(client, tools, example.PROMPT, model="fake-model")
        await client.close()
    assert not fake.errors, fake.errors[0]
    assert answer == "Sales rise, fastest from April to June."
    (png,) = seen
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 5000
