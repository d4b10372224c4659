"""The ``alphora-sandbox`` command (also ``python -m alphora.sandbox``).

::

    alphora-sandbox run "print('hi')"            # Python code in a fresh local sandbox
    alphora-sandbox run -f script.py -- a b      # a host file, copied into the sandbox, with args
    alphora-sandbox run --shell "ls -la"         # a shell command
    alphora-sandbox run --backend docker ...     # in a hardened container
    alphora-sandbox plugins                      # what is registered
    alphora-sandbox mcp                          # the MCP server over stdio (--transport http: many clients)
    alphora-sandbox docker build|images|prune    # Docker plugin: build images, list them, reap orphans
    alphora-sandbox doctor [--tier T] [--json]   # hostile probes on this machine: a scorecard per tier

Exit codes (docs/cli.md has the table): the code's own exit status; 124 on timeout (like
``timeout(1)``); 125 when the sandbox itself fails (no engine, no image); 126 when the security
policy refuses the code; 2 for usage mistakes; 128+N after signal N (130 Ctrl-C, 143 SIGTERM,
141 when the reader of stdout went away). Mistakes are answered in a line or two; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from .errors import ConfigurationError, SandboxError, SecurityViolationError
from .plugins import install_hint
from .rules import DEFAULT_IMAGE, resolve_timeout
from .types import ExecutionStatus, ResourceLimits, SecurityPolicy

if TYPE_CHECKING:
    from .sandbox import Sandbox
    from .types import ExecutionResult

__all__ = ["EXIT_REFUSED", "EXIT_SANDBOX", "EXIT_TIMEOUT", "EXIT_USAGE", "main", "seconds_argument"]

PROG = "alphora-sandbox"
EXIT_USAGE = 2  #: a mistake on the command line (argparse's code)
EXIT_TIMEOUT = 124  #: the code ran out of time (as ``timeout(1)``)
EXIT_SANDBOX = 125  #: the sandbox could not run the code (no engine, no image, backend failure)
EXIT_REFUSED = 126  #: the security policy refused the code; nothing ran
EXIT_SIGNAL_BASE = 128  #: 128+N: this command (or the code) ended by signal N

log = logging.getLogger("alphora.sandbox.cli")


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in two lines (what is wrong, where the help is), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += " (arguments for a -f script go after '--')"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nTry '{self.prog} --help' for more.\n")


def _say(message: str) -> None:
    """One line on stderr; never fails (stderr may be closed too)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# -- arguments ------------------------------------------------------------------------------------


def seconds_argument(text: str) -> float:
    """argparse type of ``--timeout``: a finite positive number of seconds (``float`` alone takes
    ``nan`` and ``inf``, which would disable the timeout)."""
    try:
        return resolve_timeout(float(text), ResourceLimits())
    except (ValueError, ConfigurationError) as exc:
        raise argparse.ArgumentTypeError(f"must be a finite positive number of seconds, got {text!r}") from exc


def _megabytes(text: str) -> int:
    try:
        value = int(text)
        ResourceLimits(memory_mb=value)  # the limits' own validator is the rule
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a whole number of megabytes > 0, got {text!r}") from exc
    return value


def _debug_flag(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=default, help="on errors, print the traceback too; log at DEBUG level"
    )


def _add_run(sub: Any) -> None:
    limits = ResourceLimits()
    p = sub.add_parser(
        "run",
        help="run code in a fresh sandbox and print its output",
        description="Run Python code, a host Python file or a shell command in a fresh sandbox, stream its "
        "output, remove the sandbox, and exit with the code's exit status (see docs/cli.md).",
        epilog="Arguments after '--' go to the --file script as sys.argv[1:]. Exit codes: the code's own; "
        "124 timeout; 125 sandbox failure; 126 refused by policy; 2 usage; 130/143 interrupted.",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="CODE | ARG",
        help="the Python code (one argument; '-' or nothing reads it from stdin); with -f, the script's arguments",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("-f", "--file", type=Path, help="a Python file on the host to copy in and run")
    what.add_argument("--shell", metavar="COMMAND", help="run this shell command instead of Python")
    p.add_argument(
        "--backend", default="local", help="backend name: local, isolated, docker, or a plugin's (default: local)"
    )
    p.add_argument("--image", help=f"Docker image (with --backend docker; default: {DEFAULT_IMAGE})")
    p.add_argument(
        "--timeout",
        type=seconds_argument,
        default=limits.timeout_seconds,
        help=f"seconds before the call is killed (default: {limits.timeout_seconds:g}); exit 124",
    )
    p.add_argument(
        "--memory-mb",
        type=_megabytes,
        default=limits.memory_mb,
        help=f"memory limit in MB (default: {limits.memory_mb})",
    )
    p.add_argument(
        "--policy",
        choices=sorted(_POLICIES),
        default="default",
        help="security policy: default, strict (no shell, subprocess or network modules), "
        "permissive (default: default); a refusal exits 126",
    )
    p.add_argument(
        "--network",
        action="store_true",
        help="give the code a network (docker, isolated; the local backend never isolates it)",
    )
    p.add_argument("--keep", action="store_true", help="keep the workspace in a host directory and print its path")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON instead of streaming")
    _debug_flag(p, argparse.SUPPRESS)


_POLICIES = {"default": SecurityPolicy, "strict": SecurityPolicy.strict, "permissive": SecurityPolicy.permissive}


def _version_text() -> str:
    """``alphora-sandbox X`` and, on a second line, the installed plugin distributions."""
    from importlib import metadata

    from . import __version__

    plugins: dict[str, str] = {}
    with contextlib.suppress(Exception):
        for ep in metadata.entry_points(group="alphora_sandbox"):
            dist = getattr(ep, "dist", None)
            if dist is not None and dist.metadata["Name"] != PROG:
                plugins[dist.metadata["Name"]] = dist.version
    text = f"{PROG} {__version__}"
    if plugins:
        text += "\nplugins: " + ", ".join(f"{name} {ver}" for name, ver in sorted(plugins.items()))
    return text


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Secure code-execution sandbox for AI agents.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version_text())
    _debug_flag(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,plugins,mcp,docker}")
    _add_run(sub)
    sub.add_parser("plugins", help="list registered plugins, backends, storages and tool formats")
    sub.add_parser("mcp", help="serve the sandbox tools over MCP (stdio or HTTP); see 'alphora-sandbox mcp --help'")
    sub.add_parser("docker", help="Docker plugin commands: build (alias build-images), images, prune")
    sub.add_parser("doctor", help="attack the sandbox on this machine, every tier, and print a scorecard")
    return parser


# -- run --------------------------------------------------------------------------------------------


class _Job:
    """What ``run`` will do, checked before any sandbox exists."""

    def __init__(self, ns: argparse.Namespace, script_args: list[str]) -> None:
        self.kind = "shell" if ns.shell is not None else "file" if ns.file is not None else "python"
        self.args: list[str] = []
        self.file_name = ""
        self.file_bytes = b""
        self.code = ""
        words = [*ns.words, *script_args]
        if self.kind == "file":
            path: Path = ns.file
            try:
                self.file_bytes = path.read_bytes()
            except FileNotFoundError:
                raise UsageError(f"no such file: {path}") from None
            except IsADirectoryError:
                raise UsageError(f"{path} is a directory; -f takes a Python file") from None
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
            self.file_name = path.name
            self.args = words
        elif self.kind == "shell":
            if words:
                raise UsageError(
                    f"--shell takes the whole command as one argument; quote it: "
                    f"--shell {' '.join([ns.shell, *words])!r}"
                )
            self.code = ns.shell
        else:
            if len(words) > 1:
                raise UsageError(
                    "give the Python code as one argument (quote it), or use -f FILE to run a script with arguments"
                )
            if not words and sys.stdin.isatty():
                raise UsageError(
                    "no code to run: give it as an argument (quoted), '-' to read it from stdin, "
                    "-f FILE, or --shell COMMAND"
                )
            self.code = sys.stdin.read() if not words or words[0] == "-" else words[0]


def _make_sandbox(ns: argparse.Namespace) -> Sandbox:
    from .sandbox import Sandbox

    if ns.image is not None and ns.backend != "docker":
        raise UsageError(f"--image is for --backend docker (the {ns.backend!r} backend runs no image)")
    # --network sets both switches the network rule (rules.network_allowed) asks for
    limits = ResourceLimits(timeout_seconds=ns.timeout, memory_mb=ns.memory_mb, network_enabled=ns.network)
    policy = attrs.evolve(_POLICIES[ns.policy](), allow_network=ns.network)
    if ns.backend == "docker":
        return Sandbox.create_docker(
            docker_image=ns.image or DEFAULT_IMAGE,
            resource_limits=limits,
            security_policy=policy,
            keep_workspace=ns.keep,
        )
    return Sandbox.create(ns.backend, resource_limits=limits, security_policy=policy, keep_workspace=ns.keep)


class _Control:
    """Signals and a closed stdout end the run early; the sandbox is cleaned up either way."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.signum: int | None = None
        self.output_closed = False
        self.starting = False
        self.cleaning = False
        self.work: asyncio.Future[Any] | None = None

    @property
    def stopped(self) -> bool:
        return self.signum is not None or self.output_closed

    def install(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            try:
                loop.add_signal_handler(sig, self.on_signal, int(sig))
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no such support
                continue
            installed.append(int(sig))
        return installed

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None or self.cleaning:
            _say(
                f"{name} again: exiting without cleaning up sandbox {self.sandbox.sandbox_id} "
                f"(`alphora-sandbox docker prune` removes a Docker one)"
            )
            os._exit(EXIT_SIGNAL_BASE + signum)
        self.signum = signum
        _say(f"{name}: stopping the code and removing the sandbox (send it again to exit at once)")
        self._cancel()

    def close_output(self) -> None:
        if not self.output_closed:
            self.output_closed = True
            self._cancel()

    def _cancel(self) -> None:
        # a start in progress finishes first (so nothing it creates escapes the cleanup)
        if self.work is not None and not self.starting:
            self.work.cancel()

    def echo(self, chunk: Any) -> None:
        if self.output_closed:
            return
        stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
        try:
            stream.write(chunk.text)
            stream.flush()
        except BrokenPipeError:
            self.close_output()


async def _execute(sandbox: Sandbox, job: _Job, ctl: _Control, quiet: bool) -> ExecutionResult:
    ctl.starting = True
    try:
        await sandbox.start()
    finally:
        ctl.starting = False
    if ctl.stopped:
        raise asyncio.CancelledError
    on_output = None if quiet else ctl.echo
    if job.kind == "shell":
        return await sandbox.execute_shell(job.code, on_output=on_output)
    if job.kind == "file":
        await sandbox.write_file_bytes(job.file_name, job.file_bytes)
        return await sandbox.execute_file(job.file_name, job.args, on_output=on_output)
    return await sandbox.execute_code(job.code, on_output=on_output)


async def _keep(sandbox: Sandbox) -> Path:
    """Keep the workspace where the user can see it: a host directory. A backend whose workspace
    is not one (Docker: a volume) has it copied out to ``workspace_path`` and is then removed."""
    path = Path(sandbox.workspace_path)
    if await asyncio.to_thread(path.is_dir):
        await sandbox.stop()
        return path
    from .storage import LocalStorage, StorageConfig

    await sandbox.save_workspace(LocalStorage(StorageConfig.local(str(path))), prefix="")
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)  # even when the workspace was empty
    await sandbox.destroy()
    return path


async def _finish(sandbox: Sandbox, keep: bool, *, quietly: bool) -> None:
    """Remove the sandbox (or keep its workspace). With ``quietly`` (something already went wrong,
    or the run was interrupted) a failure here is logged at DEBUG, not raised over the first."""
    try:
        if keep and sandbox.is_running:
            _say(f"workspace kept: {await _keep(sandbox)}")
        else:
            await sandbox.destroy()
    except Exception:
        if not quietly:
            raise
        log.debug("cleaning up sandbox %s failed", sandbox.sandbox_id, exc_info=True)


def _exit_code(result: ExecutionResult) -> int:
    if result.status is ExecutionStatus.SUCCESS:
        return 0
    if result.status is ExecutionStatus.TIMEOUT:
        return EXIT_TIMEOUT
    rc = result.return_code
    if rc is None:  # no exit status: the runner itself was lost
        return EXIT_SANDBOX
    if rc < 0:  # killed by a signal
        return EXIT_SIGNAL_BASE - rc
    return min(rc, 255) or 1


async def _run(ns: argparse.Namespace, job: _Job) -> int:
    sandbox = _make_sandbox(ns)
    ctl = _Control(sandbox)
    ctl.install(asyncio.get_running_loop())
    ctl.work = asyncio.ensure_future(_execute(sandbox, job, ctl, quiet=ns.json))
    result: ExecutionResult | None = None
    try:
        result = await ctl.work
    except BaseException as exc:
        if not (isinstance(exc, asyncio.CancelledError) and ctl.stopped):
            ctl.cleaning = True
            await _finish(sandbox, ns.keep, quietly=True)
            raise
    ctl.cleaning = True
    await _finish(sandbox, ns.keep, quietly=ctl.stopped)
    if ctl.signum is not None:
        return EXIT_SIGNAL_BASE + ctl.signum
    if ctl.output_closed or result is None:
        raise BrokenPipeError
    if ns.json:
        import json

        print(json.dumps(result.to_dict(), indent=2))
    elif not result.success and result.error:
        print(f"[{result.status.value}] {result.error}", file=sys.stderr)
    return _exit_code(result)


def _plugins() -> int:
    from .plugins import get_registry

    reg = get_registry()
    print("plugins:   ", ", ".join(reg.plugin_names()))
    print("backends:  ", ", ".join(sorted(reg.backends)))
    print("storages:  ", ", ".join(sorted(reg.storages)))
    print("exporters: ", ", ".join(c for c in sorted(reg.tool_exporters)))
    print("checks:    ", ", ".join(c.name for c in reg.security_checks))
    return 0


# -- main -------------------------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """Warnings as one line each: no traceback unless --debug."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(debug: bool) -> None:
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(_OneLine())
        root.setLevel(logging.WARNING)
    root.addHandler(handler)


def _silence_stdout() -> None:
    """The reader of stdout is gone: point it at /dev/null so the final flush does not complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _dispatch(argv: list[str], debug: bool) -> int:
    # sub-commands owned by other modules take the rest of the command line as is
    delegated = {
        "mcp": ("alphora.sandbox.tools.mcp_server", None),
        "doctor": ("alphora.sandbox.doctor", None),
        "docker": ("alphora.sandbox_docker.cli", "docker"),
    }
    if argv and argv[0] in delegated:
        _setup_logging(debug)
        modname, extra = delegated[argv[0]]
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            hint = f": {install_hint(extra)}" if extra else ""
            print(f"alphora-sandbox {argv[0]} is not available ({exc}){hint}", file=sys.stderr)
            return 2
        return int(mod.main(argv[1:]) or 0)

    # everything after the first "--" is an argument for the script, whatever it looks like
    script_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, script_args = argv[:cut], argv[cut + 1 :]
    parser = make_parser()
    ns = parser.parse_args(argv)
    debug = debug or ns.debug
    _setup_logging(debug)
    if ns.command != "run" and script_args:
        parser.error(f"'--' and arguments after it are for 'run -f FILE', not for {ns.command!r}")
    if ns.command == "plugins":
        return _plugins()
    if ns.command == "run":
        job = _Job(ns, script_args)
        return asyncio.run(_run(ns, job))
    parser.error(f"unknown command {ns.command!r}")  # 'mcp'/'docker' were delegated above
    return EXIT_USAGE  # pragma: no cover - parser.error exits


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code (argparse exits itself for --help/--version/usage)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while args and args[0] == "--debug":  # a global option before a delegated sub-command
        debug = True
        args.pop(0)
    debug = debug or "--debug" in args[: args.index("--") if "--" in args else len(args)]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]

    def fail(code: int, message: str, *, trace: bool = True) -> int:
        if debug and trace:
            with contextlib.suppress(OSError, ValueError):
                traceback.print_exc()
        _say(message)
        return code

    try:
        return _dispatch(args, debug)
    except KeyboardInterrupt:  # Ctrl-C outside the event loop (e.g. while reading code from stdin)
        return fail(EXIT_SIGNAL_BASE + signal.SIGINT, "interrupted", trace=False)
    except BrokenPipeError:  # the reader of stdout went away (e.g. `| head -c1`): stop quietly, like SIGPIPE
        _silence_stdout()
        return EXIT_SIGNAL_BASE + getattr(signal, "SIGPIPE", 13)
    except UsageError as exc:
        return fail(EXIT_USAGE, f"error: {exc}")
    except ConfigurationError as exc:
        return fail(EXIT_USAGE, f"error: {exc}")
    except SecurityViolationError as exc:
        return fail(EXIT_REFUSED, f"error: {exc}")
    except SandboxError as exc:
        return fail(EXIT_SANDBOX, f"error: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug or an environment problem: one line, traceback on --debug
        more = "" if debug else " (run with --debug for the traceback)"
        return fail(EXIT_SANDBOX, f"error: {type(exc).__name__}: {exc}{more}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
