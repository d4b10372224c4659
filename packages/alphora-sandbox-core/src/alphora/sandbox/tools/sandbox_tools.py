"""SandboxTools: the sandbox as a set of tools an LLM agent can call.

Every tool is a method with the spec's name and arguments, described once in
:mod:`alphora.sandbox.tools.specs`. Every call, direct or through :meth:`SandboxTools.execute_tool`,
returns a plain JSON-able dict with ``success`` and ``error``; nothing a model sends can raise
into the agent loop (only cancellation propagates).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..plugins import PluginRegistry, get_registry
from ..rules import resolve_timeout
from ._implementations import MAX_LISTED_FILES, ToolImplementations
from .results import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGES, error_result, exception_result
from .specs import TOOL_SPECS, ToolSpec, select_specs, with_session_note, with_timeout_cap
from .validation import ArgumentError, allowed_range, validate_arguments

if TYPE_CHECKING:
    from ..sandbox import Sandbox
    from ..session import PythonSession

__all__ = ["DEFAULT_MAX_OUTPUT_CHARS", "MAX_LISTED_FILES", "SandboxTools"]

log = logging.getLogger("alphora.sandbox.tools")

#: default cut for text handed back to the model (output, file content), head and tail kept
DEFAULT_MAX_OUTPUT_CHARS = 20_000


_Impl = Callable[..., Awaitable[dict[str, Any]]]


class _NonFiniteNumber(ValueError):
    """``NaN``/``Infinity``/``-Infinity`` in a model's JSON text (not JSON, though ``json`` takes it)."""

    def __init__(self, constant: str) -> None:
        super().__init__(f"{constant} is not a JSON number")
        self.constant = constant


def _refuse_constant(constant: str) -> Any:
    raise _NonFiniteNumber(constant)


class SandboxTools(ToolImplementations):
    """The spec's 20 agent tools over one :class:`~alphora.sandbox.Sandbox`.

    ::

        async with Sandbox.create_local() as sandbox:
            tools = SandboxTools(sandbox)
            await tools.run_python_code("print(1 + 1)")
            # {'success': True, 'output': '2\\n', 'error': '', 'execution_time': 0.05, ...}

    Arguments:
        sandbox: a started sandbox (tools report ``sandbox_not_running`` otherwise).
        use_session: run ``run_python_code`` in one stateful Python session (variables and imports
            persist between calls, like a notebook); call :meth:`aclose` (or use ``async with``) to
            end it.
        session_name: the session's name when ``use_session`` is set.
        include / exclude / read_only: offer only a subset (tool or category names, see
            :func:`~alphora.sandbox.tools.specs.select_specs`); other tools are neither exported
            nor callable.
        max_output_chars: cut longer output and file content in the middle (None: never cut).
        max_timeout: the longest ``timeout`` a model may ask for, in seconds; default: the
            sandbox's ``resource_limits.timeout_seconds`` (a model can shorten a run, not extend
            it past what the application configured). It is written into the exported schemas
            (``maximum``); longer requests are ``invalid_arguments``. A value that is not a finite
            positive number raises ConfigurationError.
        max_images / max_image_bytes: the size budget of the images (figures, ``_repr_png_``) one
            code-tool result shows the model; the rest are listed with the reason (see
            :func:`~alphora.sandbox.tools.results.attachment_entries` and docs/rich-outputs.md).
        registry: plugin registry for the exporters (default: the process-wide one).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        use_session: bool = False,
        session_name: str = "agent",
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        read_only: bool = False,
        max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
        max_timeout: float | None = None,
        max_images: int = DEFAULT_MAX_IMAGES,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        registry: PluginRegistry | None = None,
    ) -> None:
        if max_output_chars is not None and max_output_chars < 100:
            raise ValueError(f"max_output_chars must be at least 100 (or None), got {max_output_chars!r}")
        if max_images < 0 or max_image_bytes < 0:
            raise ValueError(f"max_images and max_image_bytes must be >= 0, got {max_images!r}, {max_image_bytes!r}")
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.sandbox = sandbox
        self.use_session = use_session
        self.session_name = session_name
        self.max_output_chars = max_output_chars
        self._max_timeout = resolve_timeout(max_timeout, sandbox.resource_limits, field="max_timeout")
        specs = select_specs(TOOL_SPECS, include=include, exclude=exclude, read_only=read_only)
        if use_session:  # tell the model that state persists (every export and MCP use self.specs)
            specs = tuple(with_session_note(s) if s.name == "run_python_code" else s for s in specs)
        # the model sees (and the validator enforces) the allowed timeout range: 0 < timeout <= cap
        specs = tuple(with_timeout_cap(s, self._max_timeout) for s in specs)
        self.specs: tuple[ToolSpec, ...] = specs
        self._by_name: dict[str, ToolSpec] = {s.name: s for s in self.specs}
        self._registry = registry
        self._session: PythonSession | None = None
        self._session_stack: contextlib.AsyncExitStack | None = None
        self._session_lock: asyncio.Lock | None = None

    # -- lifecycle (only matters with use_session) -----------------------------------------------

    async def aclose(self) -> None:
        """End the stateful session, if one was opened. Idempotent; the sandbox stays running."""
        stack, self._session_stack, self._session = self._session_stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> SandboxTools:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _python_session(self) -> PythonSession:
        if self._session_lock is None:
            self._session_lock = asyncio.Lock()
        async with self._session_lock:  # parallel tool calls must not open two sessions
            if self._session is None:
                stack = contextlib.AsyncExitStack()
                self._session = await stack.enter_async_context(self.sandbox.session(self.session_name))
                self._session_stack = stack
            return self._session

    @property
    def max_timeout(self) -> float:
        """The longest timeout a model may request (see the constructor)."""
        return self._max_timeout

    # -- definitions and export ------------------------------------------------------------------

    @property
    def registry(self) -> PluginRegistry:
        if self._registry is None:
            self._registry = get_registry()
        return self._registry

    def _select(self, include: Iterable[str] | None, exclude: Iterable[str], read_only: bool) -> tuple[ToolSpec, ...]:
        return select_specs(self.specs, include=include, exclude=exclude, read_only=read_only)

    def get_available_tools(self) -> list[str]:
        """Names of the tools this instance offers."""
        return [s.name for s in self.specs]

    def get_tool_definitions(
        self, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (), read_only: bool = False
    ) -> list[dict[str, Any]]:
        """Format-neutral definitions: ``[{name, description, parameters}]`` (JSON Schema)."""
        return self.export_tools("spec", include=include, exclude=exclude, read_only=read_only)

    def export_tools(
        self,
        format: str,
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        read_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Definitions in any registered format (``openai``, ``openai-responses``, ``anthropic``,
        ``gemini``, ``spec`` or a plugin's), optionally for a subset."""
        exporter = self.registry.exporter(format)
        return exporter(self._select(include, exclude, read_only))

    def get_openai_tools(
        self, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (), read_only: bool = False
    ) -> list[dict[str, Any]]:
        """Chat Completions ``tools=`` list."""
        return self.export_tools("openai", include=include, exclude=exclude, read_only=read_only)

    def get_openai_responses_tools(
        self, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (), read_only: bool = False
    ) -> list[dict[str, Any]]:
        """Responses API ``tools=`` list (flat function tools)."""
        return self.export_tools("openai-responses", include=include, exclude=exclude, read_only=read_only)

    def get_anthropic_tools(
        self, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (), read_only: bool = False
    ) -> list[dict[str, Any]]:
        """Anthropic Messages ``tools=`` list."""
        return self.export_tools("anthropic", include=include, exclude=exclude, read_only=read_only)

    # -- dispatch --------------------------------------------------------------------------------

    async def execute_tool(self, tool_name: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a tool by name with a model's arguments (a dict: decode JSON text first).

        Never raises for anything the model sent: unknown tools, bad arguments, policy refusals and
        failures inside the tool come back as ``{'success': False, 'error': ..., 'error_type': ...}``.
        """
        return await self._call(tool_name, parameters)

    async def execute_tool_json(self, tool_name: str, arguments_json: str | None) -> dict[str, Any]:
        """Like :meth:`execute_tool`, for APIs that hand over the arguments as JSON text (OpenAI's
        ``tool_call.function.arguments``). Text that is not valid JSON, or that decodes to anything
        but an object, comes back as an ``invalid_arguments`` result; so do ``NaN``, ``Infinity``
        and ``-Infinity``, which Python's ``json`` would otherwise accept but JSON does not have."""
        if arguments_json is None or not str(arguments_json).strip():
            return await self._call(tool_name, {})
        try:
            parameters = json.loads(arguments_json, parse_constant=_refuse_constant)
        except (TypeError, ValueError, RecursionError) as exc:
            spec = self._by_name.get(tool_name) if isinstance(tool_name, str) else None
            if spec is None:
                return self._unknown_tool(tool_name)
            if isinstance(exc, _NonFiniteNumber):
                msg = (
                    f"invalid arguments for {spec.name}: the arguments contain {exc.constant}, which is not a "
                    f"JSON number; numbers must be finite{self._numeric_ranges(spec)}. Send the call again with "
                    "a finite number, or leave the argument out to use its default."
                )
            elif isinstance(exc, RecursionError):
                msg = (
                    f"invalid arguments for {spec.name}: the arguments are nested too deeply; "
                    "send one JSON object with the named arguments."
                )
            else:
                msg = (
                    f"invalid arguments for {spec.name}: the arguments are not valid JSON ({exc}); "
                    "send one JSON object with the named arguments."
                )
            return self._shape(spec, error_result("invalid_arguments", msg))
        return await self._call(tool_name, parameters)

    async def _call(self, tool_name: Any, parameters: Any) -> dict[str, Any]:
        spec = self._by_name.get(tool_name) if isinstance(tool_name, str) else None
        if spec is None:
            return self._unknown_tool(tool_name)
        try:
            args = validate_arguments(parameters, spec.parameters)
        except ArgumentError as exc:
            if any(p.startswith("argument 'timeout' ") for p in exc.problems):
                exc.problems.append(
                    f"'timeout' is in seconds, at most {self.max_timeout:g} (this sandbox's limit); "
                    "omit it to use the limit"
                )
            return self._shape(spec, error_result("invalid_arguments", self._argument_message(spec, exc)))
        except Exception as exc:  # hostile input the validator did not foresee (e.g. RecursionError)
            log.debug("validating arguments of %s failed", spec.name, exc_info=True)
            return self._shape(
                spec,
                error_result(
                    "invalid_arguments",
                    f"invalid arguments for {spec.name}: they could not be checked ({type(exc).__name__}); "
                    "send one flat JSON object with the named arguments.",
                ),
            )
        impl: _Impl = getattr(self, f"_tool_{spec.name}")
        try:
            result = await impl(**args)
        except Exception as exc:  # the agent loop must survive anything a tool raises
            log.debug("tool %s failed", spec.name, exc_info=True)
            result = exception_result(exc)
        return self._shape(spec, result)

    def _unknown_tool(self, tool_name: Any) -> dict[str, Any]:
        available = self.get_available_tools()
        name = str(tool_name)
        if len(name) > 80:
            name = name[:77] + "..."
        if name in {s.name for s in TOOL_SPECS}:
            msg = f"tool '{name}' is not enabled for this agent"
        else:
            msg = f"unknown tool '{name}'"
            close = difflib.get_close_matches(name, available, n=1)
            if close:
                msg += f"; did you mean '{close[0]}'?"
        return error_result("unknown_tool", f"{msg} Available tools: {', '.join(available)}.")

    @staticmethod
    def _numeric_ranges(spec: ToolSpec) -> str:
        """`` (here: 'timeout' greater than 0 and at most 30)`` for a spec's numeric arguments."""
        ranges = [
            f"'{key}' {allowed_range(prop)}"
            for key, prop in spec.properties.items()
            if prop.get("type") in ("number", "integer") and allowed_range(prop)
        ]
        return f" (here: {', '.join(ranges)})" if ranges else ""

    @staticmethod
    def _argument_message(spec: ToolSpec, exc: ArgumentError) -> str:
        params = []
        for key, prop in spec.properties.items():
            optional = "" if key in spec.required else "?"
            params.append(f"{key}{optional}: {prop.get('type', 'any')}")
        return (
            f"invalid arguments for {spec.name}: {'; '.join(exc.problems)}. Expected: {spec.name}({', '.join(params)})."
        )

    @staticmethod
    def _shape(spec: ToolSpec, result: dict[str, Any]) -> dict[str, Any]:
        result.setdefault("error", "")
        if spec.category in ("code", "shell"):
            result.setdefault("output", "")
            result.setdefault("execution_time", 0.0)
        return result

    @staticmethod
    def _args(**kwargs: Any) -> dict[str, Any]:
        """Drop None (an omitted optional argument)."""
        return {k: v for k, v in kwargs.items() if v is not None}

    # -- the spec's tools (public: validated, never raise) ---------------------------------------

    async def run_python_code(self, code: str, timeout: float | None = None) -> dict[str, Any]:
        """Run Python code; ``{'success', 'output', 'error', 'execution_time', ...}``."""
        return await self._call("run_python_code", self._args(code=code, timeout=timeout))

    async def run_python_file(
        self, file_path: str, args: Sequence[str] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run a workspace .py file with arguments."""
        return await self._call(
            "run_python_file",
            self._args(file_path=file_path, args=list(args) if isinstance(args, tuple) else args, timeout=timeout),
        )

    async def run_shell_command(self, command: str, timeout: float | None = None) -> dict[str, Any]:
        """Run a ``/bin/sh -c`` command line in the workspace."""
        return await self._call("run_shell_command", self._args(command=command, timeout=timeout))

    async def save_file(self, path: str, content: str) -> dict[str, Any]:
        """Create or overwrite a text file."""
        return await self._call("save_file", self._args(path=path, content=content))

    async def read_file(self, path: str) -> dict[str, Any]:
        """Read a UTF-8 text file."""
        return await self._call("read_file", self._args(path=path))

    async def delete_file(self, path: str) -> dict[str, Any]:
        """Delete a file or folder."""
        return await self._call("delete_file", self._args(path=path))

    async def list_files(self, path: str = "", recursive: bool = False) -> dict[str, Any]:
        """List a workspace folder."""
        return await self._call("list_files", self._args(path=path, recursive=recursive))

    async def file_exists(self, path: str) -> dict[str, Any]:
        """Whether a path exists."""
        return await self._call("file_exists", self._args(path=path))

    async def copy_file(self, source: str, dest: str) -> dict[str, Any]:
        """Copy a file or folder."""
        return await self._call("copy_file", self._args(source=source, dest=dest))

    async def move_file(self, source: str, dest: str) -> dict[str, Any]:
        """Move or rename a file or folder."""
        return await self._call("move_file", self._args(source=source, dest=dest))

    async def install_pip_package(self, package: str, version: str | None = None) -> dict[str, Any]:
        """pip-install one package into the sandbox."""
        return await self._call("install_pip_package", self._args(package=package, version=version))

    async def install_pip_packages(self, packages: Sequence[str]) -> dict[str, Any]:
        """pip-install several packages."""
        return await self._call(
            "install_pip_packages", self._args(packages=list(packages) if isinstance(packages, tuple) else packages)
        )

    async def uninstall_pip_package(self, package: str) -> dict[str, Any]:
        """pip-uninstall a package."""
        return await self._call("uninstall_pip_package", self._args(package=package))

    async def list_installed_packages(self) -> dict[str, Any]:
        """Packages installed in the sandbox."""
        return await self._call("list_installed_packages", {})

    async def check_package_installed(self, package: str) -> dict[str, Any]:
        """Whether a package is installed."""
        return await self._call("check_package_installed", self._args(package=package))

    async def set_environment_variable(self, key: str, value: str) -> dict[str, Any]:
        """Set a variable for later runs."""
        return await self._call("set_environment_variable", self._args(key=key, value=value))

    async def get_environment_variable(self, key: str) -> dict[str, Any]:
        """Read a variable set for this sandbox."""
        return await self._call("get_environment_variable", self._args(key=key))

    async def get_sandbox_status(self) -> dict[str, Any]:
        """The sandbox's state."""
        return await self._call("get_sandbox_status", {})

    async def get_resource_usage(self) -> dict[str, Any]:
        """CPU, memory, disk and process counts now."""
        return await self._call("get_resource_usage", {})

    async def reset_sandbox(self) -> dict[str, Any]:
        """Restart the sandbox and empty the workspace (packages and env vars are kept)."""
        return await self._call("reset_sandbox", {})
