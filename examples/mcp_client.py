"""Drive the sandbox's MCP server with the official ``mcp`` client, as any MCP host would.

    pip install 'alphora-sandbox[mcp]'
    python examples/mcp_client.py

It launches ``python -m alphora.sandbox.tools.mcp_server`` (what ``alphora-sandbox mcp`` runs) over
stdio, lists the tools, writes and runs a script, shows a bad call's answer, and disconnects: the
server then destroys the session's sandbox.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters


async def main() -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "alphora.sandbox.tools.mcp_server", "--exclude", "admin"],
    )
    async with Client(server) as client:
        listed = await client.list_tools()
        print("tools:", ", ".join(t.name for t in listed.tools))

        await client.call_tool("save_file", {"path": "hello.py", "content": "import sys\nprint('hello', *sys.argv[1:])\n"})
        ran = await client.call_tool("run_python_file", {"file_path": "hello.py", "args": ["from", "MCP"]})
        print("run_python_file ->", ran.structured_content)

        bad = await client.call_tool("run_python_code", {"code": "print(1)", "timeout": "10s"})
        print("bad call -> isError:", bad.is_error, json.dumps(bad.structured_content))


if __name__ == "__main__":
    asyncio.run(main())
