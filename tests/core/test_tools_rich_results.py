"""What a model is told about a call's rich outputs, and which images it is shown (no sandbox:
the result shaping and the per-SDK helpers on hand-made results)."""

from __future__ import annotations

import json

import pytest

from alphora.sandbox import Attachment, ExecutionResult, Sandbox, SandboxTools
from alphora.sandbox.tools import (
    anthropic_tool_result,
    gemini_parts,
    openai_chat_messages,
    openai_responses_output,
    result_images,
)
from alphora.sandbox.tools.results import attachment_entries, execution_result

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


def _png(name: str, size: int = 108) -> Attachment:
    return Attachment(mime_type="image/png", data=PNG[:size].ljust(size, b"\0"), name=name)


def _text(mime: str, name: str, text: str) -> Attachment:
    return Attachment(mime_type=mime, data=text.encode(), name=name)


def test_one_text_form_per_output_is_inlined_markdown_first() -> None:
    frame = [
        _text("text/html", "output-1-1.html", "<table>…</table>"),
        _text("text/markdown", "output-1-1.md", "| a |"),
        _text("text/plain", "output-1-1.txt", "   a"),
        _text("text/plain", "output-1-2.txt", "{'k': 1}"),
        _text("image/svg+xml", "figure-1-3.svg", "<svg/>"),
    ]
    entries, images = attachment_entries(tuple(frame), 100)
    assert [e.get("text") for e in entries] == [None, "| a |", None, "{'k': 1}", None]
    assert images == ()
    long = _text("text/markdown", "output-2-1.md", "x" * 500)
    ((entry,), _) = attachment_entries((long,), 100)
    assert "characters cut from the middle" in entry["text"]


def test_images_are_shown_within_the_count_and_byte_budget() -> None:
    shots = (_png("a.png", 300), _png("b.png", 300), _png("c.png", 300), _png("d.png", 100))
    entries, images = attachment_entries(shots, None, max_images=3, max_image_bytes=700)
    assert [a.name for a in images] == ["a.png", "b.png", "d.png"]
    assert [e["shown"] for e in entries] == [True, True, False, True]
    assert entries[2]["note"] == "not shown: over the image budget of 700 bytes per result"
    entries, images = attachment_entries(shots, None, max_images=1)
    assert len(images) == 1
    assert entries[1]["note"] == "not shown: at most 1 image per result"
    cut = Attachment(mime_type="image/png", data=b"", name="big.png", truncated=True)
    ((entry,), images) = attachment_entries((cut,), None)
    assert images == ()
    assert entry == {
        "mime_type": "image/png",
        "name": "big.png",
        "size": 0,
        "truncated": True,
        "shown": False,
        "note": "the image was over the sandbox's output size cap and was left out",
    }


def test_a_result_is_a_plain_json_dict_and_each_sdk_gets_the_images() -> None:
    r = ExecutionResult(
        value="<Chart>", attachments=(_png("output-1-1.png"), _text("text/plain", "output-1-1.txt", "<Chart>"))
    )
    result = execution_result(r, 1000)
    assert json.loads(json.dumps(result)) == result
    assert isinstance(result, dict)
    assert result_images(result) == (r.attachments[0],)
    assert result_images(dict(result)) == ()  # a plain copy has no images: helpers send text only
    block = anthropic_tool_result("t", result)
    assert [b["type"] for b in block["content"]] == ["text", "image"]
    assert [i["type"] for i in openai_responses_output("c", result)["output"]] == ["input_text", "input_image"]
    assert [m["role"] for m in openai_chat_messages([("c", result), ("d", {"success": True})])] == [
        "tool",
        "tool",
        "user",
    ]
    assert [next(iter(p)) for p in gemini_parts("run_python_code", result)] == ["function_response", "inline_data"]


async def test_the_budget_arguments_are_checked(local_sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="max_images and max_image_bytes must be >= 0"):
        SandboxTools(local_sandbox, max_images=-1)
    tools = SandboxTools(local_sandbox, use_session=True, max_images=0)
    async with tools:
        result = await tools.run_python_code("class P:\n    def _repr_png_(self): return b'\\x89PNG'\nP()")
    assert result["attachments"][0]["note"] == "not shown: at most 0 images per result"
    assert result_images(result) == ()
