"""The ``alphora-sandbox`` command.

::

    alphora-sandbox run "print('hi')"            # Python code in a fresh local sandbox
    alphora-sandbox run -f script.py -- a b      # a host file, copied into the sandbox, with args
    alphora-sandbox run --shell "ls -la"         # a shell command
    alphora-sandbox run --backend docker ...     # in a hardened container
    alphora-sandbox plugins                      # what is registered
    alphora-sandbox mcp                          # the MCP server over stdio
    alphora-sandbox docker build|images|prune    # Docker plugin: build images, list them, reap orphans
    alphora-sandbox doctor [--tier T] [--json]   # hostile probes on this machine: a scorecard per tier
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plugins import install_hint
from .types import ResourceLimits


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run code in a fresh sandbox and print its output")
    p.add_argument("code", nargs="?", help="Python code (or '-' to read it from stdin)")
    p.add_argument("-f", "--file", type=Path, help="a Python file on the host to copy in and run")
    p.add_argument("--shell", help="run this shell command instead of Python")
    p.add_argument("args", nargs="*", help="arguments for --file (after --)")
    p.add_argument("--backend", default="local", help="backend name (local, docker, or a plugin's)")
    p.add_argument("--image", default="python:3.11-slim", help="Docker image (docker backend)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before the call is killed")
    p.add_argument("--memory-mb", type=int, default=512)
    p.add_argument("--network", action="store_true", help="allow network access (docker backend)")
    p.add_argument("--keep", action="store_true", help="keep the workspace (print its path)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")


async def _run(ns: argparse.Namespace) -> int:
    from .sandbox import Sandbox

    limits = ResourceLimits(timeout_seconds=ns.timeout, memory_mb=ns.memory_mb, network_enabled=ns.network)
    if ns.backend == "docker":
        sandbox = Sandbox.create_docker(docker_image=ns.image, resource_limits=limits)
    else:
        sandbox = Sandbox.create(ns.backend, resource_limits=limits)
    try:
        async with sandbox:
            def echo(chunk: Any) -> None:
                stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
                stream.write(chunk.text)
                stream.flush()

            if ns.shell:
                result = await sandbox.execute_shell(ns.shell, on_output=None if ns.json else echo)
            elif ns.file:
                name = ns.file.name
                await sandbox.write_file_bytes(name, ns.file.read_bytes())
                result = await sandbox.execute_file(name, ns.args, on_output=None if ns.json else echo)
            else:
                code = sys.stdin.read() if ns.code in (None, "-") else ns.code
                result = await sandbox.execute_code(code, on_output=None if ns.json else echo)
            if ns.json:
                import json

                print(json.dumps(result.to_dict(), indent=2))
            elif not result.success and result.error:
                print(f"[{result.status.value}] {result.error}", file=sys.stderr)
            if ns.keep:
                print(f"workspace: {sandbox.workspace_path}", file=sys.stderr)
    finally:
        if not ns.keep:
            await sandbox.destroy()
    return 0 if result.success else (result.return_code or 1)


def _plugins() -> int:
    from .plugins import get_registry

    reg = get_registry()
    print("plugins:   ", ", ".join(reg.plugin_names()))
    print("backends:  ", ", ".join(sorted(reg.backends)))
    print("storages:  ", ", ".join(sorted(reg.storages)))
    print("exporters: ", ", ".join(sorted(reg.tool_exporters)))
    print("checks:    ", ", ".join(c.name for c in reg.security_checks))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # sub-commands owned by other modules take the rest of the command line as is
    delegated = {"mcp": ("alphora.sandbox.tools.mcp_server", None),
                 "doctor": ("alphora.sandbox.doctor", None),
                 "docker": ("alphora.sandbox_docker.cli", "docker")}
    if argv and argv[0] in delegated:
        modname, extra = delegated[argv[0]]
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            hint = f": {install_hint(extra)}" if extra else ""
            print(f"alphora-sandbox {argv[0]} is not available ({exc}){hint}", file=sys.stderr)
            return 2
        return int(mod.main(argv[1:]) or 0)

    parser = argparse.ArgumentParser(prog="alphora-sandbox", description="Secure code-execution sandbox for AI agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    sub.add_parser("plugins", help="list registered plugins, backends, storages and tool formats")
    sub.add_parser("mcp", help="serve the sandbox tools over MCP (stdio); see 'alphora-sandbox mcp --help'")
    sub.add_parser("docker", help="Docker plugin commands: build (alias build-images), images, prune")
    sub.add_parser("doctor", help="attack the sandbox on this machine, every tier, and print a scorecard")
    ns = parser.parse_args(argv)
    if ns.command == "plugins":
        return _plugins()
    return asyncio.run(_run(ns))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
