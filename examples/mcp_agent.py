"""A complete agent loop over MCP: a Claude model uses the sandbox tools served by
``alphora-sandbox mcp``, the way any MCP host (an IDE, a desktop app) would wire them.

    pip install 'alphora-sandbox[mcp]' anthropic
    ANTHROPIC_API_KEY=sk-ant-... python examples/mcp_agent.py "Compute the first 20 primes with Python"

The model talks to Anthropic; every tool call goes to the MCP server, which owns the sandbox and
removes it when this script disconnects. ``tests/e2e/test_mcp_agent.py`` runs this exact
``agent_loop`` against a local stand-in for the model and the real MCP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from anthropic import AsyncAnthropic
from mcp import Client, StdioServerParameters


def server_parameters(*args: str) -> StdioServerParameters:
    """How to launch the sandbox's MCP server (``alphora-sandbox mcp`` with these options)."""
    return StdioServerParameters(command=sys.executable, args=["-m", "alphora.sandbox.tools.mcp_server", *args])


async def agent_loop(client: AsyncAnthropic, mcp: Client, prompt: str, *, model: str, max_steps: int = 20) -> str:
    """List the server's tools for the model, route each tool_use to the MCP server, feed results back."""
    listed = await mcp.list_tools()
    tool_definitions: Any = [
        {"name": t.name, "description": t.description or "", "input_schema": t.input_schema} for t in listed.tools
    ]
    messages: list[Any] = [{"role": "user", "content": prompt}]
    for _ in range(max_steps):
        response = await client.messages.create(model=model, max_tokens=4096, messages=messages, tools=tool_definitions)
        messages.append({"role": "assistant", "content": response.content})
        if response.stop_reason != "tool_use":
            return "".join(block.text for block in response.content if block.type == "text")
        results = []
        for block in response.content:
            if block.type == "tool_use":
                result = await mcp.call_tool(block.name, dict(block.input))
                results.append({
                    "type": "tool_result",
                    "tool_use_id": block.id,
                    "content": json.dumps(result.structured_content),
                    "is_error": result.is_error,
                })
        messages.append({"role": "user", "content": results})
    return "(stopped: too many steps)"


async def main() -> None:
    prompt = " ".join(sys.argv[1:]) or "Write fib.py that prints the first 10 Fibonacci numbers, run it, and tell me the output."
    async with Client(server_parameters("--exclude", "admin")) as mcp:
        answer = await agent_loop(AsyncAnthropic(), mcp, prompt, model=os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5"))
    print(answer)


if __name__ == "__main__":
    asyncio.run(main())
