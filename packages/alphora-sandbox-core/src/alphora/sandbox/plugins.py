"""The plugin manager and the registry built from it.

:func:`make_plugin_manager` builds a pluggy manager with the built-in plugins (listed in
:data:`DEFAULT_PLUGINS`, registered exactly like third-party ones) and, unless disabled, every
plugin of the ``alphora_sandbox`` entry-point group. :class:`PluginRegistry` is the only place
that calls ``pm.hook.*``.

Environment switches:

* ``ALPHORA_SANDBOX_DISABLE_PLUGIN_AUTOLOAD=1``: don't load entry-point plugins.
* ``ALPHORA_SANDBOX_BLOCK_PLUGINS=a,b``: never register plugins with these names.

Discovery is lazy and cached: a :class:`PluginRegistry` builds its plugin manager (importing the
built-in plugin modules and the entry points) on first use, and each table (backends, storages,
security checks, exporters) when it is first read. A plugin may register a class as a
``"module:attribute"`` string; it is imported when that name is first looked up, so a plugin whose
module or dependencies are heavy (the Docker SDK, boto) costs nothing to a process that does not use
it.

It also holds the one rule for telling a user how to install an optional part
(:func:`install_hint`) and for names that a plugin provides to the core's namespaces
(:func:`plugin_attr`, :func:`plugin_installed`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy

from . import hookspecs
from .errors import ConfigurationError
from .rules import name_key

if TYPE_CHECKING:
    from .backend import Backend
    from .security import SecurityCheck
    from .storage.base import Storage
    from .tools.exporters import ToolExporter

__all__ = [
    "DEFAULT_PLUGINS",
    "NAME",
    "LazyTable",
    "PluginRegistry",
    "entry_points",
    "get_registry",
    "hookimpl",
    "install_hint",
    "make_plugin_manager",
    "plugin_attr",
    "plugin_installed",
    "set_registry",
]

log = logging.getLogger(__name__)

NAME = hookspecs.NAME
hookimpl = pluggy.HookimplMarker(NAME)

#: Built-in plugins, registered by module name like any other plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "alphora.sandbox.builtin.local_backend",
    "alphora.sandbox.builtin.isolated_backend",
    "alphora.sandbox.builtin.local_storage",
    "alphora.sandbox.builtin.security_checks",
    "alphora.sandbox.builtin.exporters",
)


#: extra of the ``alphora-sandbox`` distribution -> the plugin distribution in this repository that it adds
PLUGIN_EXTRAS: dict[str, str] = {
    "docker": "alphora-sandbox-docker",
    "s3": "alphora-sandbox-s3",
    "ray": "alphora-sandbox-ray",
}


def install_hint(extra: str) -> str:
    """The install line for an optional part, in both forms a user may need.

    The published form is ``pip install 'alphora-sandbox[EXTRA]'``. An extra that adds one of this
    repository's plugins (:data:`PLUGIN_EXTRAS`) needs that plugin's path when the core came from a
    source checkout, since pip cannot find the plugin on an index then. Other extras (``mcp``) only
    add published packages, and the published form works for a checkout install too (pip keeps the
    installed core and adds the extra's packages), so they get that one form.
    """
    published = f"pip install 'alphora-sandbox[{extra}]'"
    plugin = PLUGIN_EXTRAS.get(extra)
    if plugin is None:
        return published
    return f"{published}; from a source checkout: pip install ./packages/{plugin}"


def plugin_installed(module: str) -> bool:
    """True when the plugin's module can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def plugin_attr(module: str, name: str, extra: str) -> Any:
    """``module.name`` from a plugin; an ImportError naming the cause and both install forms if it is missing."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{name} needs the {extra} plugin ({exc}): {install_hint(extra)}", name=name) from exc
    return getattr(mod, name)


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


def entry_points(group: str) -> list[tuple[str, str]] | None:
    """``(name, "module:attribute")`` of every entry point of ``group``, read straight from the
    ``*.dist-info``/``*.egg-info`` directories on ``sys.path`` in import order (what
    ``importlib.metadata`` finds there); None when ``sys.path`` holds a zip or egg file, whose
    metadata only ``importlib.metadata`` reads. Importing ``importlib.metadata`` (email, zipfile, csv
    …) cost several times the scan, and every process that makes a sandbox pays for discovery."""
    found: list[tuple[str, str]] = []
    for entry in sys.path:
        path = entry or "."
        if os.path.isfile(path):
            return None
        try:
            listing = os.scandir(path)
        except OSError:
            continue
        with listing:
            infos = [d.path for d in listing if d.name.endswith((".dist-info", ".egg-info"))]
        for info in infos:
            try:
                with open(os.path.join(info, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            if f"[{group}]" in text:
                found += _entry_point_lines(text, group)
    return found


def _entry_point_lines(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = module:attr [extras]`` lines of one section of an ``entry_points.txt``."""
    out: list[tuple[str, str]] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            out.append((name.strip(), value.split("[", 1)[0].strip()))
    return out


def make_plugin_manager(
    *,
    autoload: bool | None = None,
    blocked: Iterable[str] = (),
    extra_plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """Build a plugin manager: built-ins, then entry-point plugins (unless disabled), then extras."""
    pm = pluggy.PluginManager(NAME)
    pm.add_hookspecs(hookspecs)
    for name in (*blocked, *_env_list("ALPHORA_SANDBOX_BLOCK_PLUGINS")):
        pm.set_blocked(name)
    for modname in DEFAULT_PLUGINS:
        if pm.is_blocked(modname):
            continue
        pm.register(importlib.import_module(modname), name=modname)
    if autoload is None:
        autoload = os.environ.get("ALPHORA_SANDBOX_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
    if autoload:
        refs = entry_points(NAME)
        if refs is None:
            pm.load_setuptools_entrypoints(NAME)
        for name, ref in refs or ():
            if not (pm.has_plugin(name) or pm.is_blocked(name)):  # the first of a name wins, as in pluggy
                pm.register(_import_ref(ref), name=name)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


T = TypeVar("T")


def _import_ref(ref: str) -> Any:
    """The object named by ``"module:attribute"`` (attribute may be dotted)."""
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class LazyTable(Mapping[str, T], Generic[T]):
    """A registry table: name -> object, where a plugin may have registered a ``"module:attribute"``
    string instead of the object; it is imported (once) when the name is first looked up. Listing
    the names (``sorted(table)``) imports nothing."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def __getitem__(self, key: str) -> T:
        value = self._items[key]
        if isinstance(value, str):
            value = _import_ref(value)
            self._items[key] = value
        result: T = value
        return result

    def __contains__(self, key: object) -> bool:
        return key in self._items  # (Mapping's would look the value up, importing it)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def raw(self, key: str) -> Any:
        """What was registered under ``key`` (a string reference is not imported)."""
        return self._items[key]

    def set(self, key: str, value: Any) -> None:
        self._items[key] = value


class PluginRegistry:
    """What the plugins registered: backends, storages, security checks, tool exporters. Built
    lazily: the plugin manager on first use, each table on first read (see the module docstring)."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self._pm = pm
        self._lock = threading.RLock()
        self._backends: LazyTable[type[Backend]] | None = None
        self._storages: LazyTable[type[Storage]] | None = None
        self._security_checks: list[SecurityCheck] | None = None
        self._tool_exporters: LazyTable[ToolExporter] | None = None

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            with self._lock:
                if self._pm is None:
                    self._pm = make_plugin_manager()
        return self._pm

    def _table(self, hook_name: str, kind: str) -> LazyTable[Any]:
        table: LazyTable[Any] = LazyTable()
        getattr(self.pm.hook, hook_name)(register=self._registrar(table, kind))
        return table

    @property
    def backends(self) -> LazyTable[type[Backend]]:
        if self._backends is None:
            with self._lock:
                if self._backends is None:
                    self._backends = self._table("sandbox_register_backends", "backend")
        return self._backends

    @property
    def storages(self) -> LazyTable[type[Storage]]:
        if self._storages is None:
            with self._lock:
                if self._storages is None:
                    self._storages = self._table("sandbox_register_storages", "storage")
        return self._storages

    @property
    def tool_exporters(self) -> LazyTable[ToolExporter]:
        if self._tool_exporters is None:
            with self._lock:
                if self._tool_exporters is None:
                    self._tool_exporters = self._table("sandbox_register_tool_exporters", "tool exporter")
        return self._tool_exporters

    @property
    def security_checks(self) -> list[SecurityCheck]:
        if self._security_checks is None:
            with self._lock:
                if self._security_checks is None:
                    checks: list[SecurityCheck] = []
                    self.pm.hook.sandbox_register_security_checks(register=checks.append)
                    self._security_checks = checks
        return self._security_checks

    @staticmethod
    def _registrar(table: LazyTable[Any], kind: str) -> Callable[..., None]:
        def register(name: str, obj: Any, *, replace: bool = False) -> None:
            key = str(name).lower()
            if key in table and not replace and table.raw(key) is not obj and table.raw(key) != obj:
                raise ValueError(f"{kind} {key!r} is already registered by {table.raw(key)!r}")
            table.set(key, obj)

        return register

    def backend(self, name: str) -> type[Backend]:
        key = name_key(name)
        try:
            return self.backends[key]
        except KeyError:
            hint = f" (install it with: {install_hint(key)})" if key in ("docker", "ray") else ""
            raise ConfigurationError(
                f"unknown backend {key!r}{hint}; registered: {sorted(self.backends)}",
                field="backend_type",
                value=name,
            ) from None

    def storage(self, name: str) -> type[Storage]:
        key = name_key(name)
        try:
            return self.storages[key]
        except KeyError:
            hint = f" (install it with: {install_hint('s3')})" if key in ("s3", "minio") else ""
            raise ConfigurationError(
                f"unknown storage {key!r}{hint}; registered: {sorted(self.storages)}",
                field="storage_type",
                value=name,
            ) from None

    def exporter(self, name: str) -> ToolExporter:
        try:
            return self.tool_exporters[name.lower()]
        except KeyError:
            raise ConfigurationError(
                f"unknown tool format {name!r}; registered: {sorted(self.tool_exporters)}",
                field="format",
                value=name,
            ) from None

    def egress_decide(self, request: Any) -> Any:
        """The ``sandbox_egress_decide`` hook (firstresult): what an :class:`~alphora.sandbox.egress.EgressProxy`
        takes as ``decide=``. None when no plugin answers."""
        return self.pm.hook.sandbox_egress_decide(request=request)

    def plugin_names(self) -> list[str]:
        return sorted(n for n, _ in self.pm.list_name_plugin() if n)


_lock = threading.Lock()
_default: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The process-wide default registry, built on first use."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = PluginRegistry()
    return _default


def set_registry(registry: PluginRegistry | None) -> PluginRegistry | None:
    """Replace the default registry (None: rebuild lazily). Returns the previous one."""
    global _default
    with _lock:
        previous, _default = _default, registry
    return previous
