"""The agent tools, defined once: name, description, JSON-schema parameters, defaults, required.

Every exporter (OpenAI, Anthropic, Gemini, MCP …) renders these :class:`ToolSpec` objects; the
validator checks arguments against the same schema; a meta-test checks that each
``SandboxTools`` method has exactly the arguments and defaults written here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "CATEGORIES",
    "SESSION_NOTE",
    "TOOL_SPECS",
    "ToolSpec",
    "get_spec",
    "select_specs",
    "with_session_note",
    "with_timeout_cap",
]

#: categories a tool belongs to (used to pick subsets)
CATEGORIES = ("code", "shell", "files", "packages", "environment", "status", "admin")


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@attrs.frozen(kw_only=True)
class ToolSpec:
    """One tool an agent can call.

    ``parameters`` is a JSON Schema object (``type: object``, ``properties``, ``required``,
    ``additionalProperties: false``); an optional parameter's default is its ``default`` key.
    ``read_only`` tools never change the sandbox (safe to offer to a reviewing agent);
    ``category`` is one of :data:`CATEGORIES`.
    """

    name: str
    description: str
    parameters: Mapping[str, Any] = attrs.field(converter=_freeze)
    category: str = attrs.field(validator=attrs.validators.in_(CATEGORIES))
    read_only: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.parameters.get("required", ()))

    @property
    def properties(self) -> Mapping[str, Mapping[str, Any]]:
        props: Mapping[str, Mapping[str, Any]] = self.parameters.get("properties", {})
        return props

    def defaults(self) -> dict[str, Any]:
        """Defaults of the optional parameters that have one."""
        return {k: _thaw(p["default"]) for k, p in self.properties.items() if "default" in p}

    def json_schema(self) -> dict[str, Any]:
        """A fresh, mutable copy of the parameters schema."""
        schema: dict[str, Any] = copy.deepcopy(_thaw(self.parameters))
        return schema

    def to_dict(self) -> dict[str, Any]:
        """The format-neutral definition: name, description, parameters (JSON Schema)."""
        return {"name": self.name, "description": self.description, "parameters": self.json_schema()}


def _obj(properties: dict[str, Any] | None = None, required: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties or {},
        "required": list(required),
        "additionalProperties": False,
    }


_PATH = "Path relative to the sandbox workspace root (e.g. 'data/input.csv'). Absolute paths and '..' are refused."
#: every numeric argument has a lower bound here; ``timeout``'s upper bound is the sandbox's own
#: limit, written into the schema per sandbox by :func:`with_timeout_cap` (SandboxTools does)
_TIMEOUT = {
    "type": "number",
    "exclusiveMinimum": 0,
    "description": "Seconds before the run is killed (with every process it started). "
    "Omit to use the sandbox's limit; longer than the limit is refused.",
}
_CODE_RESULT = (
    "Returns {success, output, error, execution_time, exit_code, status}: output is stdout followed by "
    "stderr; error explains a failure (traceback summary, timeout). Long output is cut in the middle."
)

_FRESH = "Each call runs in a fresh interpreter: variables do not persist between calls, so keep state in files."
#: replaces _FRESH when SandboxTools runs code in a stateful session
SESSION_NOTE = (
    "Variables, imports and definitions persist between calls (one Python session, like a notebook); "
    "the repr of a trailing expression comes back as 'value'. Figures (plt.show()), display(obj) and a "
    "trailing DataFrame come back under 'attachments': you see the images, and tables as Markdown."
)

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="run_python_code",
        category="code",
        description=(
            "Run Python 3 code in the isolated sandbox and return what it printed. The working directory "
            "is the workspace, so files written by save_file are readable by relative path. Print what you "
            "want to see: only stdout/stderr come back. " + _FRESH + " " + _CODE_RESULT
        ),
        parameters=_obj(
            {
                "code": {"type": "string", "minLength": 1, "description": "Python source code to execute."},
                "timeout": _TIMEOUT,
            },
            ["code"],
        ),
    ),
    ToolSpec(
        name="run_python_file",
        category="code",
        description=(
            "Run a Python script that already exists in the workspace (write it first with save_file), "
            "with optional command-line arguments (sys.argv[1:]). " + _CODE_RESULT
        ),
        parameters=_obj(
            {
                "file_path": {"type": "string", "minLength": 1, "description": "The .py file to run. " + _PATH},
                "args": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": [],
                    "description": "Command-line arguments passed to the script.",
                },
                "timeout": _TIMEOUT,
            },
            ["file_path"],
        ),
    ),
    ToolSpec(
        name="run_shell_command",
        category="shell",
        description=(
            "Run a shell command line (/bin/sh -c) in the workspace, e.g. 'ls -la' or 'grep -r TODO .'. "
            "Pipes and redirects work. May be refused by the sandbox's security policy. " + _CODE_RESULT
        ),
        parameters=_obj(
            {
                "command": {"type": "string", "minLength": 1, "description": "The shell command line."},
                "timeout": _TIMEOUT,
            },
            ["command"],
        ),
    ),
    ToolSpec(
        name="save_file",
        category="files",
        description=(
            "Create or overwrite a text file in the workspace (parent folders are created). "
            "Returns {success, path, size, file_type}."
        ),
        parameters=_obj(
            {
                "path": {"type": "string", "minLength": 1, "description": _PATH},
                "content": {"type": "string", "description": "The complete text content (UTF-8)."},
            },
            ["path", "content"],
        ),
    ),
    ToolSpec(
        name="read_file",
        category="files",
        read_only=True,
        description=(
            "Read a UTF-8 text file from the workspace. Returns {success, path, content, size}. Very long "
            "files are cut in the middle (truncated: true); binary files are refused."
        ),
        parameters=_obj({"path": {"type": "string", "minLength": 1, "description": _PATH}}, ["path"]),
    ),
    ToolSpec(
        name="delete_file",
        category="files",
        description="Delete a file or a folder (with its contents) in the workspace. Returns {success, path, deleted}.",
        parameters=_obj({"path": {"type": "string", "minLength": 1, "description": _PATH}}, ["path"]),
    ),
    ToolSpec(
        name="list_files",
        category="files",
        read_only=True,
        description=(
            "List files and folders in a workspace folder. Returns {success, path, files: [{name, path, size, "
            "is_directory, file_type}], count}; at most 500 entries are returned (truncated: true beyond). "
            "The sandbox's own .venv and .tmp folders are left out unless you list them by name."
        ),
        parameters=_obj(
            {
                "path": {
                    "type": "string",
                    "default": "",
                    "description": "Folder to list, relative to the workspace; '' (default) is the workspace root.",
                },
                "recursive": {"type": "boolean", "default": False, "description": "Also list sub-folders."},
            }
        ),
    ),
    ToolSpec(
        name="file_exists",
        category="files",
        read_only=True,
        description="Check whether a file or folder exists in the workspace. Returns {success, path, exists}.",
        parameters=_obj({"path": {"type": "string", "minLength": 1, "description": _PATH}}, ["path"]),
    ),
    ToolSpec(
        name="copy_file",
        category="files",
        description="Copy a file or folder inside the workspace. Returns {success, source, dest}.",
        parameters=_obj(
            {
                "source": {"type": "string", "minLength": 1, "description": "What to copy. " + _PATH},
                "dest": {"type": "string", "minLength": 1, "description": "Where to copy it to. " + _PATH},
            },
            ["source", "dest"],
        ),
    ),
    ToolSpec(
        name="move_file",
        category="files",
        description="Move or rename a file or folder inside the workspace. Returns {success, source, dest}.",
        parameters=_obj(
            {
                "source": {"type": "string", "minLength": 1, "description": "What to move. " + _PATH},
                "dest": {"type": "string", "minLength": 1, "description": "The new path. " + _PATH},
            },
            ["source", "dest"],
        ),
    ),
    ToolSpec(
        name="install_pip_package",
        category="packages",
        description=(
            "Install one Python package into the sandbox's own environment with pip (needs network access "
            "to the package index). Returns {success, package, output, error}."
        ),
        parameters=_obj(
            {
                "package": {"type": "string", "minLength": 1, "description": "Distribution name, e.g. 'requests'."},
                "version": {
                    "type": "string",
                    "description": "Exact version to install, e.g. '2.31.0'. Omit for the latest.",
                },
            },
            ["package"],
        ),
    ),
    ToolSpec(
        name="install_pip_packages",
        category="packages",
        description=(
            "Install several Python packages at once with pip. Each item may carry a version specifier "
            "('pandas>=2.0'). Returns {success, packages, output, error}."
        ),
        parameters=_obj(
            {
                "packages": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "description": "Package names or requirement specifiers.",
                }
            },
            ["packages"],
        ),
    ),
    ToolSpec(
        name="uninstall_pip_package",
        category="packages",
        description="Uninstall a Python package from the sandbox's environment. Returns {success, package, output, error}.",
        parameters=_obj(
            {"package": {"type": "string", "minLength": 1, "description": "Distribution name."}}, ["package"]
        ),
    ),
    ToolSpec(
        name="list_installed_packages",
        category="packages",
        read_only=True,
        description="List the Python packages installed in the sandbox. Returns {success, packages: [{name, version}], count}.",
        parameters=_obj(),
    ),
    ToolSpec(
        name="check_package_installed",
        category="packages",
        read_only=True,
        description="Check whether a Python package is installed in the sandbox. Returns {success, package, installed}.",
        parameters=_obj(
            {"package": {"type": "string", "minLength": 1, "description": "Distribution name."}}, ["package"]
        ),
    ),
    ToolSpec(
        name="set_environment_variable",
        category="environment",
        description=(
            "Set an environment variable for every later command and code run in this sandbox. Returns {success, key}."
        ),
        parameters=_obj(
            {
                "key": {"type": "string", "minLength": 1, "description": "Variable name, e.g. 'DATA_DIR'."},
                "value": {"type": "string", "description": "Its value."},
            },
            ["key", "value"],
        ),
    ),
    ToolSpec(
        name="get_environment_variable",
        category="environment",
        read_only=True,
        description=(
            "Read an environment variable set for this sandbox. Returns {success, key, value, is_set}; "
            "value is null when it is not set."
        ),
        parameters=_obj({"key": {"type": "string", "minLength": 1, "description": "Variable name."}}, ["key"]),
    ),
    ToolSpec(
        name="get_sandbox_status",
        category="status",
        read_only=True,
        description=(
            "Report the sandbox's state: status, backend, id, uptime, its limits (timeout_seconds is the longest "
            "timeout you may ask for; network_enabled) and policy (allow_shell, allow_file_write, allow_network). "
            "Returns {success, status, limits, policy, ...}."
        ),
        parameters=_obj(),
    ),
    ToolSpec(
        name="get_resource_usage",
        category="status",
        read_only=True,
        description=(
            "Report what the sandbox uses now: cpu_percent, memory_mb, disk_mb (workspace size), process_count. "
            "Returns {success, ...}."
        ),
        parameters=_obj(),
    ),
    ToolSpec(
        name="reset_sandbox",
        category="admin",
        description=(
            "Start over: restart the sandbox (ends every running process and Python session) and delete "
            "every file in the workspace. Installed packages and environment variables are kept. "
            "Use only when the user wants a clean slate. Returns {success, status, files_deleted}."
        ),
        parameters=_obj(),
    ),
)

_BY_NAME: Mapping[str, ToolSpec] = MappingProxyType({s.name: s for s in TOOL_SPECS})


def with_session_note(spec: ToolSpec) -> ToolSpec:
    """run_python_code as described to a model when code runs in a stateful session."""
    return attrs.evolve(spec, description=spec.description.replace(_FRESH, SESSION_NOTE))


def with_timeout_cap(spec: ToolSpec, seconds: float) -> ToolSpec:
    """``spec`` with its ``timeout`` argument (if any) capped at ``seconds``: the schema gets
    ``maximum`` (so the model sees the allowed range and the validator enforces it) and the
    description names the number."""
    if "timeout" not in spec.properties:
        return spec
    params = _thaw(spec.parameters)
    shown = f"{seconds:g}"
    params["properties"]["timeout"] = {
        **params["properties"]["timeout"],
        "maximum": seconds,
        "description": params["properties"]["timeout"]["description"] + f" This sandbox's limit: {shown} seconds.",
    }
    return attrs.evolve(spec, parameters=params)


def get_spec(name: str) -> ToolSpec | None:
    """The spec of a built-in tool by name, or None."""
    return _BY_NAME.get(name)


def select_specs(
    specs: Sequence[ToolSpec] = TOOL_SPECS,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    read_only: bool = False,
) -> tuple[ToolSpec, ...]:
    """Pick a subset, keeping the original order.

    ``include`` and ``exclude`` take tool names or category names (``"shell"``, ``"files"`` …);
    ``read_only=True`` keeps only tools that change nothing. Unknown names raise ``ValueError``.
    """
    names = {s.name for s in specs}

    def expand(items: Iterable[str], what: str) -> set[str]:
        out: set[str] = set()
        for item in items:
            if item in names:
                out.add(item)
            elif item in CATEGORIES:
                out.update(s.name for s in specs if s.category == item)
            else:
                raise ValueError(
                    f"unknown tool or category in {what}: {item!r}; tools: {sorted(names)}, categories: {list(CATEGORIES)}"
                )
        return out

    wanted = expand(include, "include") if include is not None else names
    unwanted = expand(exclude, "exclude")
    return tuple(s for s in specs if s.name in wanted and s.name not in unwanted and (s.read_only or not read_only))
