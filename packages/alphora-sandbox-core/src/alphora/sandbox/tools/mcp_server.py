"""The sandbox tools over MCP (Model Context Protocol), on the official ``mcp`` SDK (2.x).

Run it as ``alphora-sandbox mcp`` or ``python -m alphora.sandbox.tools.mcp_server``; an MCP client
(Claude Desktop, an IDE, ``mcp.Client``) launches it and talks over stdin/stdout. Each server
process is one client session and owns one sandbox: created when the session opens, destroyed
(processes and workspace) when the client disconnects, unless ``--keep-workspace``.

Tools are the same :class:`~alphora.sandbox.tools.ToolSpec` objects as every other exporter: the
input schema a client sees is exactly ``spec.json_schema()``. A tool's result dict comes back as
``structuredContent`` and as JSON text, followed by an ``ImageContent`` per image a session cell
produced (docs/rich-outputs.md); ``isError`` is set when ``success`` is false.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs

from ..cli import seconds_argument
from ..plugins import install_hint
from ..rules import DEFAULT_IMAGE
from ..types import ResourceLimits, SecurityPolicy
from .content import result_images
from .sandbox_tools import DEFAULT_MAX_OUTPUT_CHARS, SandboxTools
from .specs import CATEGORIES, TOOL_SPECS, ToolSpec

if TYPE_CHECKING:
    from ..sandbox import Sandbox

__all__ = ["build_server", "main", "make_parser", "mcp_tool"]

log = logging.getLogger("alphora.sandbox.mcp")

#: tools that destroy data (MCP's destructiveHint)
_DESTRUCTIVE = frozenset({"delete_file", "move_file", "save_file", "reset_sandbox", "uninstall_pip_package"})


def mcp_tool(spec: ToolSpec) -> Any:
    """The MCP ``Tool`` for a spec: same name, description and input schema, plus hints."""
    import mcp.types as types

    return types.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=spec.json_schema(),
        annotations=types.ToolAnnotations(
            read_only_hint=spec.read_only,
            destructive_hint=spec.name in _DESTRUCTIVE,
            open_world_hint=spec.category == "packages",
        ),
    )


def _call_result(result: dict[str, Any]) -> Any:
    """A tool result as MCP's ``CallToolResult``: the JSON text, then an ``ImageContent`` per image
    the result shows (figures and other raster outputs of a session cell, within the tools' budget)."""
    import mcp.types as types

    content: list[Any] = [types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False, default=str))]
    content.extend(
        types.ImageContent(type="image", data=base64.b64encode(a.data).decode("ascii"), mime_type=a.mime_type)
        for a in result_images(result)
    )
    return types.CallToolResult(
        content=content,
        structured_content=result,
        is_error=not result.get("success", False),
    )


def build_server(ns: argparse.Namespace, on_cleanup: Callable[[], None] | None = None) -> Any:
    """An ``mcp`` low-level ``Server`` whose lifespan owns one sandbox and its SandboxTools.

    ``on_cleanup`` is called once the sandbox has been cleaned up at the end of the session."""
    import anyio
    from mcp.server import Server

    @asynccontextmanager
    async def lifespan(_server: Any) -> AsyncIterator[SandboxTools]:
        sandbox = _make_sandbox(ns)
        await sandbox.start()
        log.info("sandbox %s started at %s", sandbox.sandbox_id, sandbox.workspace_path)
        tools = SandboxTools(
            sandbox,
            use_session=ns.use_session,
            include=ns.tools,
            exclude=ns.exclude,
            read_only=ns.read_only,
            max_output_chars=ns.max_output_chars,
        )
        try:
            yield tools
        finally:
            with anyio.CancelScope(shield=True):  # a signal cancels the session, never the cleanup
                try:
                    await tools.aclose()
                finally:
                    if ns.keep_workspace:
                        await sandbox.stop()
                    else:
                        await sandbox.destroy()
                    log.info("sandbox %s cleaned up", sandbox.sandbox_id)
                    if on_cleanup is not None:
                        on_cleanup()

    async def list_tools(ctx: Any, _params: Any) -> Any:
        import mcp.types as types

        tools: SandboxTools = ctx.lifespan_context
        return types.ListToolsResult(tools=[mcp_tool(s) for s in tools.specs])

    async def call_tool(ctx: Any, params: Any) -> Any:
        tools: SandboxTools = ctx.lifespan_context
        return _call_result(await tools.execute_tool(params.name, params.arguments))

    return Server(
        "alphora-sandbox",
        version=_version(),
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


INSTRUCTIONS = (
    "An isolated Python sandbox with its own workspace. Write files with save_file, run them with "
    "run_python_file or run_python_code, read results with read_file. Paths are relative to the workspace."
)


def _version() -> str:
    from .. import __version__

    return __version__


def sandbox_settings(ns: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The backend and the Sandbox keyword arguments the command line asks for (one place for the
    stdio server, the HTTP server's sandboxes and its warm pool)."""
    limits = ResourceLimits()
    changes: dict[str, Any] = {}
    if ns.timeout is not None:
        changes["timeout_seconds"] = ns.timeout
    if ns.memory_mb is not None:
        changes["memory_mb"] = ns.memory_mb
    if ns.network:
        changes["network_enabled"] = True
    if changes:
        limits = attrs.evolve(limits, **changes)
    policy = {"default": SecurityPolicy, "strict": SecurityPolicy.strict, "permissive": SecurityPolicy.permissive}[
        ns.policy
    ]()
    if ns.network:
        policy = attrs.evolve(policy, allow_network=True)
    kwargs: dict[str, Any] = {"base_path": ns.base_path, "resource_limits": limits, "security_policy": policy}
    if ns.backend == "docker":
        kwargs["backend_options"] = {"image": ns.image}  # what create_docker(docker_image=...) does
    return ns.backend, kwargs


def _make_sandbox(ns: argparse.Namespace) -> Sandbox:
    from ..sandbox import Sandbox

    backend, kwargs = sandbox_settings(ns)
    return Sandbox.create(backend, **kwargs)


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = {s.name for s in TOOL_SPECS} | set(CATEGORIES)
    bad = [n for n in names if n not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown tool or category: {', '.join(bad)}")
    return names


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alphora-sandbox mcp",
        description=(
            "Serve the sandbox tools over MCP: stdio (one client, the default) or streamable HTTP (many "
            "clients, bearer tokens). One sandbox per session, removed when the session ends."
        ),
    )
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or http")
    p.add_argument("--backend", default="local", help="backend name: local (default), docker, or a plugin's")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="Docker image (docker backend)")
    p.add_argument("--base-path", default=None, help="parent folder of sandbox workspaces")
    p.add_argument("--timeout", type=seconds_argument, default=None, help="default per-call timeout in seconds")
    p.add_argument("--memory-mb", type=int, default=None, help="memory limit (backends that enforce it)")
    p.add_argument("--network", action="store_true", help="allow network access from sandbox code")
    p.add_argument(
        "--policy", choices=("default", "strict", "permissive"), default="default", help="security policy preset"
    )
    p.add_argument(
        "--tools",
        type=_names,
        default=None,
        metavar="NAMES",
        help="offer only these tools or categories (comma-separated; categories: " + ", ".join(CATEGORIES) + ")",
    )
    p.add_argument("--exclude", type=_names, default=[], metavar="NAMES", help="never offer these tools or categories")
    p.add_argument("--read-only", action="store_true", help="offer only tools that change nothing")
    p.add_argument(
        "--use-session", action="store_true", help="run_python_code keeps state between calls (one Python session)"
    )
    p.add_argument(
        "--max-output-chars",
        type=int,
        default=DEFAULT_MAX_OUTPUT_CHARS,
        help="cut longer tool output in the middle (default %(default)s)",
    )
    p.add_argument("--keep-workspace", action="store_true", help="on disconnect, stop the sandbox but keep its files")
    p.add_argument("--log-level", default="WARNING", help="log level on stderr (stdout carries the protocol)")
    http = p.add_argument_group("http transport")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    http.add_argument(
        "--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default %(default)s)"
    )
    http.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="bearer tokens, one a line: TOKEN or NAME TOKEN (also read: the ALPHORA_SANDBOX_MCP_TOKENS variable)",
    )
    http.add_argument(
        "--no-auth", action="store_true", help="serve without tokens; refused unless --host is a loopback address"
    )
    http.add_argument(
        "--idle-timeout",
        type=seconds_argument,
        default=900.0,
        metavar="SECONDS",
        help="end a session and clean up its sandbox after this many seconds without a request (default %(default)s)",
    )
    http.add_argument(
        "--max-sessions-per-token",
        type=_positive,
        default=4,
        metavar="N",
        help="open sessions per token (default %(default)s)",
    )
    http.add_argument(
        "--max-sessions", type=_positive, default=64, metavar="N", help="open sessions in all (default %(default)s)"
    )
    http.add_argument(
        "--warm",
        type=_count,
        default=0,
        metavar="N",
        help="keep N sandboxes started in a pool; a session gets one at once, reset clean after it (default 0)",
    )
    return p


def _count(text: str) -> int:
    return 0 if text.strip() == "0" else _positive(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


#: after SIGTERM/SIGINT, how long the sandbox's cleanup may take before the process exits anyway
SIGNAL_GRACE_SECONDS = 60.0


def _exit_after_cleanup(cleaned: threading.Event) -> None:
    # The SDK's stdin reader sits in a worker thread that a signal cannot interrupt, so once the
    # sandbox is cleaned up the process ends itself rather than wait for stdin to close.
    ok = cleaned.wait(SIGNAL_GRACE_SECONDS)
    if not ok:
        log.error("sandbox cleanup did not finish within %s s after the signal", SIGNAL_GRACE_SECONDS)
    logging.shutdown()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0 if ok else 1)


async def serve_stdio(ns: argparse.Namespace) -> None:
    """Serve one session on stdin/stdout. SIGTERM and SIGINT end it like a disconnect: the
    sandbox is cleaned up before the process exits."""
    from mcp.server.stdio import stdio_server

    cleaned = threading.Event()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        log.info("signal received: ending the session")
        if task is not None:
            task.cancel()
        threading.Thread(target=_exit_after_cleanup, args=(cleaned,), name="mcp-exit", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            loop.add_signal_handler(sig, on_signal)
    server = build_server(ns, on_cleanup=cleaned.set)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _mcp_problem() -> str | None:
    """Why the installed mcp SDK can't serve (missing, or the 1.x API), or None."""
    from importlib import metadata

    try:
        version = metadata.version("mcp")
    except metadata.PackageNotFoundError:
        return f"the MCP server needs the mcp SDK: {install_hint('mcp')}"
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 2:
        return f"the MCP server needs the mcp SDK 2.x, found {version}: pip install -U 'mcp>=2,<3'"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``alphora-sandbox mcp``; returns the exit code."""
    parser = make_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if ns.transport == "stdio" and (ns.token_file or ns.no_auth or ns.warm):
        parser.error("--token-file, --no-auth and --warm apply to --transport http only")
    if ns.warm and ns.keep_workspace:
        parser.error("--warm reuses sandboxes (reset clean between sessions): it can't keep workspaces")
    if ns.warm > ns.max_sessions:
        parser.error(f"--warm ({ns.warm}) can't exceed --max-sessions ({ns.max_sessions})")
    logging.basicConfig(
        level=ns.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    problem = _mcp_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if ns.transport == "http":
        return _main_http(ns)
    asyncio.run(serve_stdio(ns))
    return 0


def _main_http(ns: argparse.Namespace) -> int:
    from ..errors import ConfigurationError
    from .mcp_http import bind_problem, load_tokens, serve_http

    try:
        tokens = load_tokens(ns.token_file)
    except ConfigurationError as exc:
        print(f"alphora-sandbox mcp: {exc}", file=sys.stderr)
        return 2
    problem = bind_problem(ns.host, tokens, ns.no_auth)
    if problem:
        print(f"alphora-sandbox mcp: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_http(ns, tokens))
    except ConfigurationError as exc:
        print(f"alphora-sandbox mcp: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
