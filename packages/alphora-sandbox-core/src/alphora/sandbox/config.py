"""SandboxConfig: everything needed to build a sandbox, from code, a file or the environment.

One cattrs converter (:data:`converter`) turns dicts into config objects and back. It forbids
unknown keys and is strict about types (``"yes"`` is not an int, ``1.5`` is not a memory size);
every failure becomes one :class:`~alphora.sandbox.errors.ConfigurationError` whose ``.field`` is
the path of the first bad field (``$.resource_limits.memory_mb``, or the environment variable's
name for :func:`config_from_env`) and ``.value`` the bad value; ``.context["errors"]`` lists all.

Backend options belong to their backend. ``SandboxConfig.backends`` maps a backend name to that
backend's options section; a backend declares the attrs class of its options as
:attr:`Backend.options_class <alphora.sandbox.backend.Backend.options_class>`, and the section
is validated by that class through this module's converter (``$.backends.docker.image: expected
a string, got 5``). Core knows no backend's options: the only backend names below are the spec's
thin constructors (:meth:`SandboxConfig.docker`).

Network: :func:`alphora.sandbox.rules.network_mode` decides, in the backend that makes the
network: a sandbox has a network only when ``resource_limits.network_enabled`` *and*
``security_policy.allow_network`` are true; a backend option (Docker's ``network_mode``) only
chooses which network and can never turn it on.

The converter itself and the machinery that locates an error's field live in :mod:`._converter`
(which knows no config class); this module registers :class:`SandboxConfig` on it and re-exports
:data:`converter`.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

import attrs
from cattrs.errors import BaseValidationError, ClassValidationError

from ._converter import (
    EXTRA_KEYS_NOTE,
    _BadValue,
    _configuration_error,
    _ensure_registered,
    _note,
    _register_class,
    _structure_bool,
    converter,
)
from .errors import ConfigurationError
from .rules import name_key, network_access, network_allowed, sandbox_id_problem
from .storage.base import StorageConfig
from .types import BackendType, ResourceLimits, SecurityPolicy

__all__ = [
    "ENV_VARS",
    "SandboxConfig",
    "backend_env_vars",
    "config_from_env",
    "config_from_file",
    "converter",
    "structure",
    "structure_options",
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


def _env_names(_inst: Any, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    for key, val in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise ValueError(f"{attribute.name}: invalid variable name {key!r}")
        if not isinstance(val, str) or "\x00" in val:
            raise ValueError(f"{attribute.name}[{key!r}] must be a string without NUL bytes")


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """What a sandbox is made of; :meth:`alphora.sandbox.Sandbox.from_config` builds it.

    ``backend_type`` is a registered backend name (``BackendType`` values or a plugin's).
    ``backends`` maps backend names to their options: each section is an instance of the backend's
    ``options_class`` (a plain mapping given here is validated into one) or, for a backend without
    one, a plain dict. A name must be ``backend_type`` or a registered backend. The sandbox gets
    the section of its backend (:meth:`backend_options`); :class:`~alphora.sandbox.SandboxManager`
    uses the section of whichever backend it creates.
    ``storage`` configures where the workspace is persisted (``StorageFactory.create(config.storage)``).
    """

    base_path: str | None = attrs.field(default=None)
    backend_type: str = attrs.field(default=BackendType.LOCAL.value, converter=name_key, validator=_valid_backend)
    sandbox_id: str | None = attrs.field(default=None, validator=_valid_id)
    name: str | None = None
    resource_limits: ResourceLimits = attrs.field(factory=ResourceLimits)
    security_policy: SecurityPolicy = attrs.field(factory=SecurityPolicy)
    backends: dict[str, Any] = attrs.field(factory=dict)
    storage: StorageConfig | None = None
    env_vars: dict[str, str] = attrs.field(factory=dict, validator=_env_names)

    def __attrs_post_init__(self) -> None:
        # an egress allowlist with both network switches on is a contradiction: said here, not at start
        network_access(self.resource_limits, self.security_policy)
        if self.backends:  # plain mappings become the backends' options objects (errors name the field)
            try:
                sections = _structure_backends(self.backends, self.backend_type)
            except (BaseValidationError, ValueError, TypeError) as exc:
                _note(exc, "backends")
                raise _configuration_error(
                    ClassValidationError("While structuring SandboxConfig", [exc], type(self)),
                    {"backends": self.backends},
                    type(self).__name__,
                ) from exc
            object.__setattr__(self, "backends", sections)

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
        return cls(
            base_path=_opt_path(path),
            backend_type=BackendType.LOCAL.value,
            resource_limits=resource_limits or ResourceLimits(),
            security_policy=security_policy or SecurityPolicy(),
            **kw,
        )

    @classmethod
    def docker(
        cls,
        path: str | None = None,
        image: str | None = None,
        network_enabled: bool = False,
        resource_limits: ResourceLimits | None = None,
        security_policy: SecurityPolicy | None = None,
        **kw: Any,
    ) -> SandboxConfig:
        """A Docker sandbox running ``image`` (the spec's constructor; default: the Docker plugin's
        default image, :data:`~alphora.sandbox.rules.DEFAULT_IMAGE`).

        A thin alias: ``image`` and the network mode go into ``backends["docker"]``, validated by
        the Docker plugin's options class like any other section. ``network_enabled=True`` turns
        the network on consistently: ``resource_limits.network_enabled``,
        ``security_policy.allow_network`` and ``network_mode="bridge"``; False turns it off in all
        three (the default).
        """
        docker = BackendType.DOCKER.value
        limits = (resource_limits or ResourceLimits()).evolve(network_enabled=bool(network_enabled))
        policy = attrs.evolve(security_policy or SecurityPolicy(), allow_network=bool(network_enabled))
        spec: dict[str, Any] = {"network_mode": "bridge" if network_enabled else "none"}
        if image is not None:
            spec["image"] = image
        backends = dict(kw.pop("backends", None) or {})
        given = backends.get(docker)
        if given is None or isinstance(given, Mapping):
            backends[docker] = {**(given or {}), **spec}
        else:
            backends[docker] = attrs.evolve(given, **spec)
        return cls(
            base_path=_opt_path(path),
            backend_type=docker,
            resource_limits=limits,
            security_policy=policy,
            backends=backends,
            **kw,
        )

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

    def options_for(self, backend: str | None = None) -> Any:
        """The options object of ``backend`` (default: ``backend_type``): its section, else the
        defaults of its ``options_class``, else an empty dict (``config.options_for("docker").image``)."""
        key = self.backend_type if backend is None else name_key(backend)
        if key in self.backends:
            return self.backends[key]
        cls = _options_class(key)
        return cls() if cls is not None else {}

    def backend_options(self, backend: str | None = None) -> dict[str, Any]:
        """The section of ``backend`` (default: ``backend_type``) as the plain dict the backend's
        constructor receives (``Backend(options=...)``); empty when there is none."""
        section = self.backends.get(self.backend_type if backend is None else name_key(backend))
        if section is None:
            return {}
        plain: dict[str, Any] = converter.unstructure(section)
        return plain

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


# -- backend options sections -------------------------------------------------------------------

#: the keys of SandboxConfig's dict form; any other top-level key may be a backend's section
_CONFIG_KEYS = frozenset(f.name for f in attrs.fields(SandboxConfig))


def _registered_backends() -> Mapping[str, Any]:
    from .plugins import get_registry

    return get_registry().backends


def _options_class(backend: str) -> type[Any] | None:
    """The ``options_class`` the registered backend declares (None: none, or not registered)."""
    cls = _registered_backends().get(backend)
    options_class: type[Any] | None = getattr(cls, "options_class", None)
    return options_class


def _section_name(name: Any, chosen: str | None) -> str:
    if not isinstance(name, str) or not _NAME.match(name_key(name)):
        raise _BadValue(f"expected a backend name like 'local' or 'docker', got {name!r}")
    key = name_key(name)
    registered = _registered_backends()
    if key != chosen and key not in registered:
        raise _BadValue(
            f"no backend {key!r} is registered (registered: {', '.join(sorted(registered))}); "
            "a section must name backend_type or a registered backend"
        )
    return key


def _structure_section(name: str, section: Any) -> Any:
    cls = _options_class(name)
    if cls is None:
        if not isinstance(section, Mapping) or not all(isinstance(k, str) for k in section):
            raise _BadValue(f"expected a mapping of option names to values, got {section!r}")
        return dict(section)
    if isinstance(section, cls):
        return section
    _ensure_registered(cls)
    return converter.structure(section, cls)


def _structure_backends(data: Any, chosen: str | None) -> dict[str, Any]:
    """``backends`` of the dict form: each section validated by its backend's options class.
    Raises cattrs-style errors whose notes name the section (and, below it, the field)."""
    if not isinstance(data, Mapping):
        raise _BadValue(f"expected a mapping of backend names to their options, got {data!r}")
    out: dict[str, Any] = {}
    errors: list[Exception] = []
    for name, section in data.items():
        try:
            key = _section_name(name, chosen)
            out[key] = _structure_section(key, section)
        except (BaseValidationError, ValueError, TypeError) as exc:
            _note(exc, str(name))
            errors.append(exc)
    if errors:
        raise ClassValidationError("While structuring backends", errors, dict)
    return out


def _chosen_backend(data: Mapping[str, Any]) -> str | None:
    value = data.get("backend_type", BackendType.LOCAL.value)
    return name_key(value) if isinstance(value, (str, BackendType)) else None


def _top_level_sections(data: Mapping[str, Any]) -> list[str]:
    """Top-level keys of the dict form that are a backend's section: the spec's ``"docker": {...}``
    next to ``backend_type``. A key that is no field counts when it names ``backend_type`` or a
    registered backend; any other unknown key stays an error."""
    extra = [k for k in data if isinstance(k, str) and k not in _CONFIG_KEYS]
    if not extra:
        return []
    chosen = _chosen_backend(data)
    registered = _registered_backends()
    return [k for k in extra if _NAME.match(name_key(k)) and name_key(k) in {chosen, *registered}]


def structure_options(cls: type[T], options: Mapping[str, Any] | None, *, section: str) -> T:
    """A backend's options object from a plain mapping, through the config converter: unknown keys,
    wrong types and validator failures raise :class:`ConfigurationError` whose ``.field`` is
    ``section.field`` (``docker.image``). What a backend's constructor uses for ``options=``."""
    _ensure_registered(cls)
    prefix = section

    def rename(path: str) -> str:
        return prefix + path[1:] if path != "$" else prefix

    return structure(dict(options or {}), cls, rename=rename)


def _sandbox_config_hook(base: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """SandboxConfig's hook: the spec's top-level sections (``"docker": {...}``) go into
    ``backends``, and each section is validated by its backend's options class (knowing
    ``backend_type``) before the fields; every error found is reported together."""

    def hook(data: Any, t: Any) -> Any:
        if not isinstance(data, Mapping):
            raise _BadValue(f"expected a mapping for SandboxConfig, got {data!r}")
        data = dict(data)
        errors: list[Exception] = []
        moved = _top_level_sections(data)
        backends = data.get("backends", {})
        if moved and isinstance(backends, Mapping):
            backends = dict(backends)
            for key in moved:
                section = data.pop(key)
                if name_key(key) in {name_key(k) for k in backends if isinstance(k, str)}:
                    twice = _BadValue(f"the {key!r} options are given twice, here and under 'backends'")
                    _note(twice, key)
                    errors.append(twice)
                else:
                    backends[key] = section
            data["backends"] = backends
        if "backends" in data:
            try:
                data["backends"] = _structure_backends(data["backends"], _chosen_backend(data))
            except (BaseValidationError, ValueError, TypeError) as exc:
                _note(exc, "backends")
                errors.append(exc)
                del data["backends"]
        try:
            result = base(data, t)
        except BaseValidationError as exc:
            raise ClassValidationError(
                "While structuring SandboxConfig", [*errors, *exc.exceptions], SandboxConfig
            ) from None
        except (ValueError, TypeError) as exc:
            if errors:
                raise ClassValidationError("While structuring SandboxConfig", [*errors, exc], SandboxConfig) from None
            raise
        if errors:
            raise ClassValidationError("While structuring SandboxConfig", errors, SandboxConfig)
        return result

    return hook


#: SandboxConfig's dict form also takes a backend's section under the backend's name
EXTRA_KEYS_NOTE[SandboxConfig] = "or a registered backend's name for its options"
converter.register_structure_hook(SandboxConfig, _sandbox_config_hook(_register_class(converter, SandboxConfig)))


def structure(data: Any, cls: type[T], *, rename: Callable[[str], str] | None = None) -> T:
    """Structure ``data`` into ``cls`` with :data:`converter`; any failure is a ConfigurationError.

    ``rename`` maps a ``$.field`` path to the name shown to the user (e.g. an env variable).
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"configuration must be a mapping, got {type(data).__name__}", field="$", value=data)
    try:
        return converter.structure(data, cls)
    except (BaseValidationError, ValueError, TypeError) as exc:
        sections = _top_level_sections(data) if cls is SandboxConfig else []
        raise _configuration_error(exc, data, cls.__name__, rename, sections) from exc


# -- loaders ------------------------------------------------------------------------------------

#: SANDBOX_* variable (without prefix) → (path in the config dict, description)
ENV_VARS: dict[str, tuple[tuple[str, ...], str]] = {
    "BASE_PATH": (("base_path",), "parent directory of sandbox workspaces"),
    "BACKEND": (("backend_type",), "backend name: local, docker, or a plugin's"),
    "SANDBOX_ID": (("sandbox_id",), "fixed sandbox id"),
    "NAME": (("name",), "sandbox name"),
    "TIMEOUT": (("resource_limits", "timeout_seconds"), "default per-call timeout, seconds"),
    "MEMORY_MB": (("resource_limits", "memory_mb"), "memory limit, MB"),
    "CPU_CORES": (("resource_limits", "cpu_cores"), "CPU cores"),
    "DISK_MB": (("resource_limits", "disk_mb"), "disk limit, MB"),
    "MAX_PROCESSES": (("resource_limits", "max_processes"), "process limit"),
    "MAX_OUTPUT_SIZE": (("resource_limits", "max_output_size"), "output cap per stream, bytes"),
    "NETWORK_ENABLED": (("resource_limits", "network_enabled"), "true turns network on (limits and policy together)"),
    "ALLOW_SHELL": (("security_policy", "allow_shell"), "allow shell commands"),
    "ALLOW_FILE_WRITE": (("security_policy", "allow_file_write"), "allow file writes"),
    "ALLOW_SUBPROCESS": (("security_policy", "allow_subprocess"), "allow subprocesses"),
    "EGRESS": (
        ("security_policy", "egress"),
        "egress allowlist through the proxy: entries separated by commas, or JSON {allow, credentials}",
    ),
    "STORAGE_TYPE": (("storage", "storage_type"), "storage: local, s3, minio"),
    "STORAGE_PATH": (("storage", "base_path"), "local storage directory"),
    "STORAGE_ENDPOINT": (("storage", "endpoint"), "S3/MinIO endpoint"),
    "STORAGE_ACCESS_KEY": (("storage", "access_key"), "S3/MinIO access key"),
    "STORAGE_SECRET_KEY": (("storage", "secret_key"), "S3/MinIO secret key"),
    "STORAGE_BUCKET": (("storage", "bucket"), "S3/MinIO bucket"),
    "STORAGE_REGION": (("storage", "region"), "S3 region"),
    "STORAGE_SECURE": (("storage", "secure"), "use https for an endpoint without scheme"),
}


_SCALARS: tuple[type[Any], ...] = (str, int, float, bool)


def _scalar(tp: Any) -> bool:
    """A type an environment variable can hold: str, int, float, bool, or one of them or None."""
    if tp in _SCALARS:
        return True
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and args[0] in _SCALARS
    return False


def backend_env_vars() -> dict[str, tuple[tuple[str, ...], str]]:
    """The backends' variables, named like :data:`ENV_VARS`: ``<BACKEND>_<OPTION>`` (the spec's
    ``SANDBOX_DOCKER_IMAGE``) for every scalar field of every registered backend's options class,
    mapped to ``backends.<backend>.<option>``. A name that collides with :data:`ENV_VARS` is left out."""
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    for name, backend in sorted(_registered_backends().items()):
        options = getattr(backend, "options_class", None)
        if options is None or not attrs.has(options):
            continue
        attrs.resolve_types(options)
        for field in attrs.fields(options):
            var = re.sub(r"[^A-Z0-9]", "_", f"{name}_{field.name}".upper())
            if _scalar(field.type) and var not in ENV_VARS:
                out[var] = (("backends", name, field.name), f"option {field.name!r} of the {name} backend")
    return out


def config_from_env(prefix: str = "SANDBOX_", environ: Mapping[str, str] | None = None) -> SandboxConfig:
    """A config from ``SANDBOX_*`` environment variables (see :data:`ENV_VARS` and
    :func:`backend_env_vars`); unset ones keep defaults.

    Errors name the variable: ``ConfigurationError.field == "SANDBOX_MEMORY_MB"``.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path_to_var: dict[str, str] = {}
    wanted = ENV_VARS
    if any(k.startswith(prefix) and k[len(prefix) :] not in ENV_VARS for k in env):
        wanted = {**ENV_VARS, **backend_env_vars()}
    for suffix, (path, _doc) in wanted.items():
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
        raise ConfigurationError(
            f"cannot read config file {str(p)!r}: {exc.strerror or exc}", field="path", value=str(p)
        ) from exc
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigurationError(
                f"config file {str(p)!r} must end in .json, .yaml or .yml", field="path", value=str(p)
            )
    except ConfigurationError:
        raise
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigurationError(
            f"config file {str(p)!r} is not valid {suffix[1:].upper()}: {exc}", field="path", value=str(p)
        ) from exc
    if data is None:
        data = {}
    try:
        return structure(data, SandboxConfig)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{p}: {exc.message}", field=exc.field, value=exc.value, errors=exc.context.get("errors", [])
        ) from exc
