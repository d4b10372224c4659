"""A model draws a chart in the sandbox, looks at it, and answers about it.

The tools run code in one Python session (``use_session=True``): what a cell shows -- a
matplotlib figure, ``display(df)``, a trailing DataFrame -- comes back in the tool result, and
``anthropic_tool_result`` turns the figures into ``image`` blocks inside the ``tool_result``,
so a vision model sees the plot itself, not just ``{mime, name, size}``.

Run it with a real key (the sandbox needs matplotlib: it is installed into the sandbox's own
environment first)::

    pip install 'alphora-sandbox' anthropic
    ANTHROPIC_API_KEY=sk-ant-... python examples/chart_agent.py

The end-to-end test (tests/e2e/test_rich_outputs_sdks.py) drives ``ask_about_chart`` through the
real ``anthropic`` SDK against a local stand-in for the model, which checks the PNG it receives.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from anthropic import AsyncAnthropic

from alphora.sandbox import Sandbox, SandboxTools
from alphora.sandbox.tools import anthropic_tool_result

SYSTEM = (
    "You analyse data with an isolated Python session. Plot with matplotlib and call plt.show(): "
    "you will see the figure. Answer from what the chart shows."
)
PROMPT = (
    "Monthly sales were 12, 15, 14, 19, 23 and 30 (January to June). "
    "Plot them as a line chart and tell me, from the chart, how the trend looks."
)


async def ask_about_chart(client: AsyncAnthropic, tools: SandboxTools, prompt: str, *, model: str) -> str:
    """The agent loop: run the model's tool calls, send results (with their images) back."""
    messages: list[Any] = [{"role": "user", "content": prompt}]
    definitions: Any = tools.get_anthropic_tools(include=["run_python_code"])
    for _ in range(10):
        response = await client.messages.create(
            model=model, max_tokens=2048, system=SYSTEM, messages=messages, tools=definitions
        )
        messages.append({"role": "assistant", "content": response.content})
        if response.stop_reason != "tool_use":
            return "".join(block.text for block in response.content if block.type == "text")
        results = []
        for block in response.content:
            if block.type == "tool_use":
                result = await tools.execute_tool(block.name, block.input)
                results.append(anthropic_tool_result(block.id, result))  # JSON text + image blocks
        messages.append({"role": "user", "content": results})
    return "(stopped: too many steps)"


async def main() -> None:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        # the SDK would only fail at the first request, with a TypeError about authentication headers
        sys.exit("set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for another endpoint) to run this example")
    client = AsyncAnthropic()  # reads ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL if set)
    async with Sandbox.create_local() as sandbox:
        if not await sandbox.package_installed("matplotlib"):
            (await sandbox.install_package("matplotlib")).raise_for_status()
        async with SandboxTools(sandbox, use_session=True) as tools:
            model = os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5")
            print(await ask_about_chart(client, tools, PROMPT, model=model))


if __name__ == "__main__":
    asyncio.run(main())
