"""SandboxConfig: everything needed to build a sandbox, from code, a file or the environment.

One cattrs converter (:data:`converter`) turns dicts into config objects and back. It forbids
unknown keys and is strict about types (``"yes"`` is not an int, ``1.5`` is not a memory size);
every failure becomes one :class:`~alphora.sandbox.errors.ConfigurationError` whose ``.field`` is
the path of the first bad field (``$.resource_limits.memory_mb``, or the environment variable's
name for :func:`config_from_env`) and ``.value`` the bad value; ``.context["errors"]`` lists all.

Network (Docker): :func:`alphora.sandbox.rules.network_mode` decides: a sandbox has network
only when ``resource_limits.network_enabled`` *and* ``security_policy.allow_network`` are true;
then the container uses ``docker.network_mode`` (``"none"`` there means ``"bridge"``). Otherwise
the container's network mode is ``"none"``, whatever ``docker.network_mode`` says. :meth:`SandboxConfig.docker` with
``network_enabled=True`` turns on all three.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

import attrs
import cattrs
import cattrs.gen
from attrs import validators as v
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from .errors import ConfigurationError
from .rules import DEFAULT_IMAGE, name_key, network_allowed, network_mode, sandbox_id_problem
from .storage.base import StorageConfig
from .types import BackendType, ResourceLimits, SecurityPolicy

__all__ = [
    "DockerConfig",
    "SandboxConfig",
    "config_from_env",
    "config_from_file",
    "converter",
    "structure",
]

T = TypeVar("T")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")




def _valid_backend(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"{attribute.name} must be a backend name like 'local' or 'docker', got {value!r}")


def _valid_id(_inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    problem = None if value is None else sandbox_id_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name} {problem}")


def _non_empty(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _env_names(_inst: Any, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    for key, val in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise ValueError(f"{attribute.name}: invalid variable name {key!r}")
        if not isinstance(val, str) or "\x00" in val:
            raise ValueError(f"{attribute.name}[{key!r}] must be a string without NUL bytes")


@attrs.frozen(kw_only=True)
class DockerConfig:
    """Options of the Docker backend (read through :meth:`SandboxConfig.backend_options`).

    ``user`` None means the image's unprivileged sandbox user; ``runtime`` e.g. ``"runsc"``
    (gVisor) when installed; ``labels`` are added to the container (the backend adds its own).
    """

    image: str = attrs.field(default=DEFAULT_IMAGE, validator=[v.instance_of(str), _non_empty])
    network_mode: str = attrs.field(default="none", validator=[v.instance_of(str), _non_empty])
    user: str | None = None
    runtime: str | None = None
    labels: dict[str, str] = attrs.field(factory=dict)


class _ClassOrInstance:
    """On the class: the named classmethod; on an instance: the named attribute.

    ``SandboxConfig.docker(image=...)`` (the spec's factory) and ``config.docker.image`` (the
    config file's ``docker`` section) share one name; a slotted attrs class cannot have both.
    """

    def __init__(self, factory: str, attribute: str) -> None:
        self.factory = factory
        self.attribute = attribute

    @overload
    def __get__(self, obj: None, objtype: type[Any]) -> Callable[..., SandboxConfig]: ...
    @overload
    def __get__(self, obj: SandboxConfig, objtype: type[Any] | None = None) -> DockerConfig: ...

    def __get__(self, obj: Any, objtype: type[Any] | None = None) -> Any:
        if obj is None:
            return getattr(objtype, self.factory)
        return getattr(obj, self.attribute)


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """What a sandbox is made of; :meth:`alphora.sandbox.Sandbox.from_config` builds it.

    ``backend_type`` is a registered backend name (``BackendType`` values or a plugin's).
    ``options`` are extra backend options (for third-party backends), merged over the Docker ones.
    ``storage`` configures where the workspace is persisted (``StorageFactory.create(config.storage)``).
    """

    base_path: str | None = attrs.field(default=None)
    backend_type: str = attrs.field(default=BackendType.LOCAL.value, converter=name_key,
                                    validator=_valid_backend)
    sandbox_id: str | None = attrs.field(default=None, validator=_valid_id)
    name: str | None = None
    resource_limits: ResourceLimits = attrs.field(factory=ResourceLimits)
    security_policy: SecurityPolicy = attrs.field(factory=SecurityPolicy)
    #: the ``docker`` section (``config.docker`` on an instance; ``docker=`` in ``__init__``)
    docker_config: DockerConfig = attrs.field(factory=DockerConfig, alias="docker")
    storage: StorageConfig | None = None
    env_vars: dict[str, str] = attrs.field(factory=dict, validator=_env_names)
    options: dict[str, Any] = attrs.field(factory=dict)

    # -- named constructors (the spec's examples) -------------------------------------------------

    @classmethod
    def local(
        cls,
        path: str | None = None,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        **kw: Any,
    ) -> SandboxConfig:
        """A local-backend sandbox with workspaces under ``path``."""
        return cls(base_path=_opt_path(path), backend_type=BackendType.LOCAL.value,
                   resource_limits=resource_limits or ResourceLimits(),
                   security_policy=security_policy or SecurityPolicy(), **kw)

    @classmethod
    def _docker(
        cls,
        path: str | None = None,
        image: str = DEFAULT_IMAGE,
        network_enabled: bool = False,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        **kw: Any,
    ) -> SandboxConfig:
        """A Docker sandbox running ``image``.

        ``network_enabled=True`` turns network on consistently: ``resource_limits.network_enabled``,
        ``security_policy.allow_network`` and ``docker.network_mode="bridge"``. False turns it off
        in all three (the default).
        """
        limits = (resource_limits or ResourceLimits()).evolve(network_enabled=bool(network_enabled))
        policy = attrs.evolve(security_policy or SecurityPolicy(), allow_network=bool(network_enabled))
        docker = kw.pop("docker", None) or DockerConfig()
        if isinstance(docker, Mapping):
            docker = DockerConfig(**docker)
        docker = attrs.evolve(docker, image=image, network_mode="bridge" if network_enabled else "none")
        return cls(base_path=_opt_path(path), backend_type=BackendType.DOCKER.value, resource_limits=limits,
                   security_policy=policy, docker=docker, **kw)

    #: ``SandboxConfig.docker(...)`` builds a Docker config; ``config.docker`` is its DockerConfig
    docker = _ClassOrInstance("_docker", "docker_config")

    @classmethod
    def minio(cls, endpoint: str, access_key: str, secret_key: str, bucket: str, **kw: Any) -> SandboxConfig:
        """A local-backend sandbox whose workspaces persist to a MinIO bucket.

        Keyword arguments that are SandboxConfig fields go to the config; the rest (``secure``,
        ``region``, ``prefix``, …) to :meth:`StorageConfig.minio`.
        """
        fields = {f.name for f in attrs.fields(cls)}
        own = {k: kw.pop(k) for k in list(kw) if k in fields}
        own.setdefault("backend_type", BackendType.LOCAL.value)
        storage = StorageConfig.minio(endpoint, access_key, secret_key, bucket, **kw)
        return cls(storage=storage, **own)

    # -- conversion -------------------------------------------------------------------------------

    @property
    def network_enabled(self) -> bool:
        """Effective network switch: both the limits and the policy must allow it."""
        return network_allowed(self.resource_limits, self.security_policy)

    def backend_options(self) -> dict[str, Any]:
        """Options for the chosen backend: the Docker options for ``docker``, plus ``options``."""
        opts: dict[str, Any] = {}
        if self.backend_type == BackendType.DOCKER.value:
            docker = self.docker_config
            opts = {"image": docker.image,
                    "network_mode": network_mode(self.resource_limits, self.security_policy, docker.network_mode)}
            if docker.user is not None:
                opts["user"] = docker.user
            if docker.runtime is not None:
                opts["runtime"] = docker.runtime
            if docker.labels:
                opts["labels"] = dict(docker.labels)
        opts.update(self.options)
        return opts

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-able dict that :meth:`from_dict` turns back into an equal config."""
        result: dict[str, Any] = converter.unstructure(self)
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        """Build a config from a dict (as in sandbox.json); ConfigurationError names a bad field."""
        return structure(data, cls)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kw})

    def evolve(self, **changes: Any) -> SandboxConfig:
        return attrs.evolve(self, **changes)


def _opt_path(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


# -- the converter ------------------------------------------------------------------------------


class _BadValue(ValueError):
    """A primitive could not be structured; carries a readable reason."""


def _structure_bool(value: Any, _t: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _BadValue(f"expected a boolean (true/false), got {value!r}")


def _structure_int(value: Any, _t: Any) -> int:
    if isinstance(value, bool):
        raise _BadValue(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _BadValue(f"expected an integer, got {value!r}")


def _structure_float(value: Any, _t: Any) -> float:
    if isinstance(value, bool):
        raise _BadValue(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _BadValue(f"expected a number, got {value!r}")


def _structure_str(value: Any, _t: Any) -> str:
    if isinstance(value, str):
        return value
    raise _BadValue(f"expected a string, got {value!r} (quote it in YAML)")


def _structure_str_tuple(value: Any, _t: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise _BadValue(f"expected a list of strings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _BadValue(f"item {i} must be a string, got {item!r}")
        out.append(item)
    return tuple(out)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
    conv.register_unstructure_hook(tuple, list)
    for cls in (ResourceLimits, SecurityPolicy, DockerConfig, StorageConfig, SandboxConfig):
        _register_class(conv, cls)
    return conv


def _register_class(conv: cattrs.Converter, cls: type[Any]) -> None:
    """Structure ``cls`` with cattrs, and turn an attrs *validator* failure into an error that
    names its attribute (cattrs only names attributes whose structuring failed)."""
    attrs.resolve_types(cls)
    overrides: dict[str, Any] = {"docker_config": cattrs.gen.override(rename="docker")} if cls is SandboxConfig else {}
    base = cattrs.gen.make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides)
    if overrides:
        conv.register_unstructure_hook(cls, cattrs.gen.make_dict_unstructure_fn(cls, conv, **overrides))

    def hook(data: Any, _t: Any) -> Any:
        if not isinstance(data, Mapping):
            raise _BadValue(f"expected a mapping for {cls.__name__}, got {data!r}")
        try:
            return base(data, cls)
        except BaseValidationError as exc:
            # cattrs attributed some errors to fields; attrs validators of the other fields never
            # ran (or failed in __init__ without a field name): run them alone and merge
            attributed = {n.name for e in exc.exceptions for n in getattr(e, "__notes__", ())
                          if isinstance(n, AttributeValidationNote)}
            kept = [e for e in exc.exceptions
                    if isinstance(e, ForbiddenExtraKeysError)
                    or any(isinstance(n, AttributeValidationNote) for n in getattr(e, "__notes__", ()))]
            located = _locate_validator_error(conv, cls, data, skip=attributed)
            if located is None:
                raise
            raise ClassValidationError(f"While structuring {cls.__name__}", [*located.exceptions, *kept],
                                       cls) from exc
        except (ValueError, TypeError) as exc:
            located = _locate_validator_error(conv, cls, data)
            if located is not None:
                raise located from exc
            raise

    conv.register_structure_hook(cls, hook)


def _locate_validator_error(conv: cattrs.Converter, cls: type[Any], data: Mapping[str, Any],
                            skip: set[str] | frozenset[str] = frozenset()) -> ClassValidationError | None:
    """Re-run each field's converter and validator alone to find the ones that reject their value."""
    errors: list[Exception] = []
    for field in attrs.fields(cls):
        key = "docker" if field.name == "docker_config" else field.name
        if key not in data or key in skip or field.name in skip:
            continue
        try:
            value = conv.structure(data[key], field.type)
            if field.converter is not None:
                value = field.converter(value)
            if field.validator is not None:
                field.validator(None, field, value)
        except BaseValidationError:
            continue  # cattrs already reported it
        except (ValueError, TypeError) as exc:
            note = AttributeValidationNote(f"Structuring class {cls.__name__} @ attribute {key}", key, field.type)
            setattr(exc, "__notes__", [note])  # noqa: B010 - add_note() is 3.11+
            errors.append(exc)
    if not errors:
        return None
    return ClassValidationError(f"While structuring {cls.__name__}", errors, cls)


converter: cattrs.Converter = _make_converter()


#: attribute name → key in the dict form, where they differ
_DICT_NAMES = {"docker_config": "docker"}


def _walk(exc: BaseException, path: str) -> Iterator[tuple[str, BaseException]]:
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _walk(sub, f"{path}.{_DICT_NAMES.get(note.name, note.name)}")
        for sub in without:
            yield from _walk(sub, path)
    elif isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if isinstance(n, IterableValidationNote)]
            yield from _walk(sub, f"{path}[{notes[0].index!r}]" if notes else path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield f"{path}.{key}", exc
    else:
        yield path, exc


def _lookup(data: Any, path: str) -> Any:
    """The value at a ``$.a.b[0]`` path of ``data`` (None when absent)."""
    cur = data
    for token in re.findall(r"\.([^.\[]+)|\[([^\]]+)\]", path):
        key = token[0] if token[0] else token[1]
        try:
            cur = cur[key] if isinstance(cur, Mapping) else cur[int(key)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return cur


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unknown key"
    if isinstance(exc, KeyError):
        return "required field is missing"
    msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return msg or type(exc).__name__


def structure(data: Any, cls: type[T], *, rename: Callable[[str], str] | None = None) -> T:
    """Structure ``data`` into ``cls`` with :data:`converter`; any failure is a ConfigurationError.

    ``rename`` maps a ``$.field`` path to the name shown to the user (e.g. an env variable).
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"configuration must be a mapping, got {type(data).__name__}", field="$",
                                 value=data)
    try:
        return converter.structure(data, cls)
    except (BaseValidationError, ValueError, TypeError) as exc:
        problems = [(p, e) for p, e in _walk(exc, "$")] or [("$", exc)]
        errors = []
        for path, err in problems:
            shown = rename(path) if rename else path
            value = _lookup(data, path)
            errors.append({"field": shown, "value": value, "message": _describe(err)})
        first = errors[0]
        # a validator's message that already shows the value ("…, got -5") is not repeated
        lines = [f"{e['field']}: {e['message']}" + ("" if re.search(r"\bgot\b", e["message"]) else f" (got {e['value']!r})")
                 for e in errors]
        raise ConfigurationError(
            f"invalid {cls.__name__}: " + "; ".join(lines), field=first["field"], value=first["value"], errors=errors
        ) from exc


# -- loaders ------------------------------------------------------------------------------------

#: SANDBOX_* variable (without prefix) → (path in the config dict, description)
ENV_VARS: dict[str, tuple[tuple[str, ...], str]] = {
    "BASE_PATH": (("base_path",), "parent directory of sandbox workspaces"),
    "BACKEND": (("backend_type",), "backend name: local, docker, or a plugin's"),
    "SANDBOX_ID": (("sandbox_id",), "fixed sandbox id"),
    "NAME": (("name",), "sandbox name"),
    "DOCKER_IMAGE": (("docker", "image"), "Docker image"),
    "DOCKER_NETWORK_MODE": (("docker", "network_mode"), "Docker network mode when network is enabled"),
    "DOCKER_USER": (("docker", "user"), "user inside the container"),
    "DOCKER_RUNTIME": (("docker", "runtime"), "container runtime, e.g. runsc"),
    "TIMEOUT": (("resource_limits", "timeout_seconds"), "default per-call timeout, seconds"),
    "MEMORY_MB": (("resource_limits", "memory_mb"), "memory limit, MB"),
    "CPU_CORES": (("resource_limits", "cpu_cores"), "CPU cores"),
    "DISK_MB": (("resource_limits", "disk_mb"), "disk limit, MB"),
    "MAX_PROCESSES": (("resource_limits", "max_processes"), "process limit"),
    "MAX_OUTPUT_SIZE": (("resource_limits", "max_output_size"), "output cap per stream, bytes"),
    "NETWORK_ENABLED": (("resource_limits", "network_enabled"),
                        "true turns network on (limits, policy and Docker network mode together)"),
    "ALLOW_SHELL": (("security_policy", "allow_shell"), "allow shell commands"),
    "ALLOW_FILE_WRITE": (("security_policy", "allow_file_write"), "allow file writes"),
    "ALLOW_SUBPROCESS": (("security_policy", "allow_subprocess"), "allow subprocesses"),
    "STORAGE_TYPE": (("storage", "storage_type"), "storage: local, s3, minio"),
    "STORAGE_PATH": (("storage", "base_path"), "local storage directory"),
    "STORAGE_ENDPOINT": (("storage", "endpoint"), "S3/MinIO endpoint"),
    "STORAGE_ACCESS_KEY": (("storage", "access_key"), "S3/MinIO access key"),
    "STORAGE_SECRET_KEY": (("storage", "secret_key"), "S3/MinIO secret key"),
    "STORAGE_BUCKET": (("storage", "bucket"), "S3/MinIO bucket"),
    "STORAGE_REGION": (("storage", "region"), "S3 region"),
    "STORAGE_SECURE": (("storage", "secure"), "use https for an endpoint without scheme"),
}


def config_from_env(prefix: str = "SANDBOX_", environ: Mapping[str, str] | None = None) -> SandboxConfig:
    """A config from ``SANDBOX_*`` environment variables (see :data:`ENV_VARS`); unset ones keep defaults.

    Errors name the variable: ``ConfigurationError.field == "SANDBOX_MEMORY_MB"``.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path_to_var: dict[str, str] = {}
    for suffix, (path, _doc) in ENV_VARS.items():
        name = prefix + suffix
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = raw
        path_to_var["$." + ".".join(path)] = name
    net = data.get("resource_limits", {}).get("network_enabled")
    if net is not None:
        try:
            enabled = _structure_bool(net, bool)
        except _BadValue:
            enabled = None
        if enabled is not None:
            data.setdefault("security_policy", {}).setdefault("allow_network", enabled)
            path_to_var["$.security_policy.allow_network"] = prefix + "NETWORK_ENABLED"
    if "storage" in data:
        data["storage"].setdefault("storage_type", "local")

    def rename(path: str) -> str:
        for p, var in path_to_var.items():
            if path == p or path.startswith(p + "."):
                return var
        return path

    return structure(data, SandboxConfig, rename=rename)


def config_from_file(path: str | os.PathLike[str]) -> SandboxConfig:
    """A config from a ``.json``, ``.yaml`` or ``.yml`` file (YAML through ``yaml.safe_load`` only)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}", field="path",
                                 value=str(p)) from exc
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigurationError(f"config file {str(p)!r} must end in .json, .yaml or .yml", field="path",
                                     value=str(p))
    except ConfigurationError:
        raise
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigurationError(f"config file {str(p)!r} is not valid {suffix[1:].upper()}: {exc}", field="path",
                                 value=str(p)) from exc
    if data is None:
        data = {}
    try:
        return structure(data, SandboxConfig)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{p}: {exc.message}", field=exc.field, value=exc.value,
                                 errors=exc.context.get("errors", [])) from exc
