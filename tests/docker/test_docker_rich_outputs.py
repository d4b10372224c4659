"""Rich outputs of a session cell in a container (both images: ours and the foreign python:3.11-slim):
the runner's display protocol is shipped with the runner, so it needs nothing from the image."""

from __future__ import annotations

from typing import Any

import pytest

from alphora.sandbox import OutputChunk, Sandbox, SandboxTools
from alphora.sandbox.tools import result_images
from tests._support.rich import PNG_SIGNATURE, RICH_CLASSES

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def test_display_outputs_come_back_from_a_container(shared_sandbox: Sandbox) -> None:
    ns: dict[str, Any] = {}
    exec(RICH_CLASSES, ns)
    expected_png = ns["Chart"](6, 4)._repr_png_()
    chunks: list[OutputChunk] = []
    async with shared_sandbox.session("rich") as py:
        r = await py.run(RICH_CLASSES + "\ndisplay(Note())\ndisplay(Badge())\nChart(6, 4)", on_output=chunks.append)
    assert r.success, r.stderr
    assert [a.mime_type for a in r.attachments] == [
        "text/markdown",
        "text/plain",
        "image/svg+xml",
        "text/plain",
        "image/png",
        "text/plain",
    ]
    assert r.attachments[0].text == "**sales** rose by *12%*"
    assert r.attachments[4].data == expected_png
    assert expected_png.startswith(PNG_SIGNATURE)
    assert [len(c.attachments) for c in chunks if c.stream == "display"] == [2, 2, 2]


async def test_the_tools_show_the_model_a_containers_png(shared_sandbox: Sandbox) -> None:
    async with SandboxTools(shared_sandbox, use_session=True, session_name="rich-tools") as tools:
        result = await tools.run_python_code(RICH_CLASSES + "\nChart(3, 3)")
    assert result["success"] is True, result
    assert result["attachments"][0]["shown"] is True
    (png,) = result_images(result)
    assert png.data.startswith(PNG_SIGNATURE)
