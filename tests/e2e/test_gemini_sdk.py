"""The third format, ``gemini``, end to end through the real ``google-genai`` SDK against a local
scripted model: the declarations validate as the SDK's FunctionDeclaration, reach the wire with
every tool, and a write → run → read loop completes with functionResponse parts."""

from __future__ import annotations

from typing import Any

import pytest

from alphora.sandbox import Sandbox, SandboxTools

from .e2e_support import FakeLLMServer

genai = pytest.importorskip("google.genai", reason="google-genai is optional: pip install google-genai")
types = pytest.importorskip("google.genai.types")


def _gemini_reply(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
    }


def _responses(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["contents"][-1]
    assert last["role"] == "user"
    return [p["functionResponse"] for p in last["parts"]]


async def test_gemini_function_calling_loop(sandbox: Sandbox) -> None:
    tools = SandboxTools(sandbox)
    declarations = tools.export_tools("gemini")
    for decl in declarations:
        types.FunctionDeclaration.model_validate(decl)
    step = 0

    def script(path: str, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal step
        assert path.endswith("/models/fake-gemini:generateContent"), path
        sent = body["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in sent] == [d["name"] for d in declarations]
        assert [d["description"] for d in sent] == [d["description"] for d in declarations]
        for got, want in zip(sent, declarations, strict=True):
            assert sorted(got.get("parameters", {}).get("properties", {})) == sorted(
                want.get("parameters", {}).get("properties", {})
            )
            assert got.get("parameters", {}).get("required", []) == want.get("parameters", {}).get("required", [])
        step += 1
        if step == 1:
            return _gemini_reply(
                [
                    {
                        "functionCall": {
                            "id": "g1",
                            "name": "save_file",
                            "args": {"path": "sq.py", "content": "print(sum(i*i for i in range(10)))"},
                        }
                    }
                ]
            )
        if step == 2:
            (saved,) = _responses(body)
            assert saved["name"] == "save_file"
            assert saved["response"]["success"] is True
            return _gemini_reply(
                [{"functionCall": {"id": "g2", "name": "run_python_file", "args": {"file_path": "sq.py"}}}]
            )
        if step == 3:
            (ran,) = _responses(body)
            assert ran["response"]["output"] == "285\n"
            return _gemini_reply([{"text": "The sum of squares below 10 is 285."}])
        raise AssertionError(f"unexpected request {step}")

    with FakeLLMServer(script) as fake:
        client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=fake.url))
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=declarations)],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        contents: list[Any] = [types.Content(role="user", parts=[types.Part(text="sum of squares below 10?")])]
        for _ in range(5):
            response = await client.aio.models.generate_content(model="fake-gemini", contents=contents, config=config)
            if not response.function_calls:
                break
            contents.append(response.candidates[0].content)
            parts = []
            for call in response.function_calls:
                result = await tools.execute_tool(call.name or "", call.args or {})
                parts.append(types.Part.from_function_response(name=call.name or "", response=result))
            contents.append(types.Content(role="user", parts=parts))
    assert not fake.errors, fake.errors[0]
    assert response.text == "The sum of squares below 10 is 285."
    assert step == 3
