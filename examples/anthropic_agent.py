"""A complete agent loop: a Claude model solves a task with the sandbox's tools.

Run it with a real key::

    pip install 'alphora-sandbox' anthropic
    ANTHROPIC_API_KEY=sk-ant-... python examples/anthropic_agent.py "Compute the first 20 primes with Python"

The end-to-end tests import ``agent_loop`` from this file and drive it through the real
``anthropic`` SDK against a local stand-in for the model, so this is exactly the code that is tested.
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
    "You are a careful engineer with an isolated Python sandbox. Use the tools to write files, run them "
    "and check their output before you answer. Paths are relative to the sandbox workspace."
)


async def agent_loop(
    client: AsyncAnthropic, tools: SandboxTools, prompt: str, *, model: str, max_steps: int = 20
) -> str:
    """Ask, run the tool_use blocks, send tool_result blocks back, until the model stops asking."""
    messages: list[Any] = [{"role": "user", "content": prompt}]
    tool_definitions: Any = tools.get_anthropic_tools()
    for _ in range(max_steps):
        response = await client.messages.create(
            model=model, max_tokens=4096, system=SYSTEM, messages=messages, tools=tool_definitions
        )
        messages.append({"role": "assistant", "content": response.content})
        if response.stop_reason != "tool_use":
            return "".join(block.text for block in response.content if block.type == "text")
        results = []
        for block in response.content:
            if block.type == "tool_use":
                # execute_tool never raises for anything the model sent: failures come back as data
                result = await tools.execute_tool(block.name, block.input)
                # the JSON result, plus image blocks for any chart the code showed
                results.append(anthropic_tool_result(block.id, result))
        messages.append({"role": "user", "content": results})
    return "(stopped: too many steps)"


async def main() -> None:
    prompt = " ".join(sys.argv[1:]) or "Write fib.py that prints the first 10 Fibonacci numbers, run it, and tell me the output."
    if not os.environ.get("ANTHROPIC_API_KEY"):
        # the SDK would only fail at the first request, with a TypeError about authentication headers
        sys.exit("set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for another endpoint) to run this example")
    client = AsyncAnthropic()  # reads ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL if set)
    async with Sandbox.create_local() as sandbox:
        tools = SandboxTools(sandbox)
        print(await agent_loop(client, tools, prompt, model=os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5")))


if __name__ == "__main__":
    asyncio.run(main())
