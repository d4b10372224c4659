"""A complete agent loop: an OpenAI model solves a task with the sandbox's tools.

Run it with a real key (any OpenAI-compatible server works through OPENAI_BASE_URL)::

    pip install 'alphora-sandbox' openai
    OPENAI_API_KEY=sk-... python examples/openai_agent.py "Compute the first 20 primes with Python"

The end-to-end tests import ``agent_loop`` from this file and drive it through the real ``openai``
SDK against a local stand-in for the model, so this is exactly the code that is tested.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from openai import AsyncOpenAI

from alphora.sandbox import Sandbox, SandboxTools
from alphora.sandbox.tools import openai_chat_messages

SYSTEM = (
    "You are a careful engineer with an isolated Python sandbox. Use the tools to write files, run them "
    "and check their output before you answer. Paths are relative to the sandbox workspace."
)


async def agent_loop(client: AsyncOpenAI, tools: SandboxTools, prompt: str, *, model: str, max_steps: int = 20) -> str:
    """Ask, run the tool calls the model makes, feed the results back, until it answers in text."""
    messages: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    tool_definitions: Any = tools.get_openai_tools()
    for _ in range(max_steps):
        response = await client.chat.completions.create(model=model, messages=messages, tools=tool_definitions)
        message = response.choices[0].message
        messages.append(message)  # the assistant turn, tool calls included
        if not message.tool_calls:
            return message.content or ""
        answers = []
        for call in message.tool_calls:
            if call.type == "function":
                # execute_tool_json never raises: bad JSON, unknown tools, wrong arguments, policy
                # refusals and failures inside the tool all come back as {"success": False, "error": ...}
                result = await tools.execute_tool_json(call.function.name, call.function.arguments)
            else:  # only function tools are offered; answer anyway so the conversation stays valid
                result = {"success": False, "error": "only function tools are available"}
            answers.append((call.id, result))
        # a "tool" message per call; images (charts) follow in one "user" message: tool messages hold text only
        messages.extend(openai_chat_messages(answers))
    return "(stopped: too many steps)"


async def main() -> None:
    prompt = " ".join(sys.argv[1:]) or "Write fib.py that prints the first 10 Fibonacci numbers, run it, and tell me the output."
    client = AsyncOpenAI()  # reads OPENAI_API_KEY (and OPENAI_BASE_URL if set)
    async with Sandbox.create_local() as sandbox:
        tools = SandboxTools(sandbox)
        print(await agent_loop(client, tools, prompt, model=os.environ.get("OPENAI_MODEL", "gpt-4o")))


if __name__ == "__main__":
    asyncio.run(main())
