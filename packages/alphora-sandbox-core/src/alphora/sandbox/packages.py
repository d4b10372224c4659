"""Package management plumbing of the facade: requirement validation, pip's environment and the
helper programs that ask the sandbox's Python about its distributions.

The public methods (``install_package`` …) are :class:`PackageMethods`, a part of
:class:`~alphora.sandbox.Sandbox`; they call these.
A requirement is never an option and never a shell word: pip is run with ``--`` and an argv.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .backend import HOST_PACKAGE_ENV, ProcessRequest
from .errors import ConfigurationError, PackageError
from .rules import network_access
from .types import ExecutionResult, ExecutionStatus, PackageInfo, ResourceLimits

if TYPE_CHECKING:
    from .backend import Backend, OutputCallback

__all__ = [
    "LIST_DISTRIBUTIONS",
    "PIP_TIMEOUT",
    "WHEELHOUSE_DIR",
    "PackageMethods",
    "host_pip_env",
    "installed_code",
    "locate_distribution_code",
    "pip_env",
    "pip_timeout",
    "requirement_name",
    "requirements_file",
    "validate_requirement",
    "validate_requirements",
    "version_code",
    "wheelhouse_dir",
    "wheelhouse_env",
]

#: seconds a pip call may take unless the sandbox's own timeout is longer
PIP_TIMEOUT = 600.0
#: run in the sandbox: where distribution NAME is found and whether that is the sandbox's own
#: environment (its venv or its user site) or the base one (base interpreter, image)
_LOCATE_DISTRIBUTION = """\
import importlib.metadata as m, json, os, site, sys, sysconfig
own = set()
if sys.prefix != sys.base_prefix:
    own.update(os.path.realpath(sysconfig.get_path(k)) for k in ("purelib", "platlib"))
if site.ENABLE_USER_SITE:
    own.add(os.path.realpath(site.getusersitepackages()))
try:
    d = m.distribution(NAME)
except m.PackageNotFoundError:
    print("null")
else:
    where = os.path.realpath(str(d.locate_file("")))
    print(json.dumps({"name": d.metadata["Name"], "version": d.version, "location": where, "own": where in own}))
"""

#: run in the sandbox: every distribution its Python sees, as JSON [name, version, location]
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json, os\n"
    "print(json.dumps(sorted({(d.metadata['Name'] or '', d.version, os.path.realpath(str(d.locate_file(''))))"
    " for d in m.distributions() if d.metadata['Name']})))"
)


def validate_requirement(package: str, version: str | None = None) -> str:
    """Return a pip requirement string, or raise PackageError: never an option, never a shell word."""
    if not isinstance(package, str) or not package.strip():
        raise PackageError(f"invalid package name: {package!r}", package=str(package))
    package = package.strip()
    if package.startswith("-") or any(c in package for c in "\n\r\0"):
        raise PackageError(f"invalid package name: {package!r} (options are not accepted)", package=package)
    try:
        req = Requirement(package)
    except InvalidRequirement as exc:
        raise PackageError(f"invalid package requirement {package!r}: {exc}", package=package) from None
    if req.url:
        raise PackageError(f"URL requirements are not accepted: {package!r}", package=package)
    if version is not None:
        version = str(version).strip()
        if req.specifier:
            raise PackageError(f"give the version either in {package!r} or as version=, not both", package=package)
        try:
            if version[:1].isdigit():
                Version(version)
                return f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}=={version}"
            SpecifierSet(version)
        except (InvalidVersion, InvalidSpecifier):
            raise PackageError(f"invalid version {version!r} for {package!r}", package=package) from None
        return f"{package}{version}"
    return str(req)


def validate_requirements(requirements: Sequence[str]) -> list[str]:
    """``validate_requirement`` for each of a non-empty list (a bare string is refused, not split)."""
    if isinstance(requirements, str) or not requirements:
        raise PackageError("packages must be a non-empty list of requirement strings", package=str(requirements))
    return [validate_requirement(p) for p in requirements]


def requirements_file(text: str, path: str) -> list[str]:
    """The validated requirements of a requirements file's text (comments and blank lines skipped)."""
    reqs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            reqs.append(validate_requirement(line))
    if not reqs:
        raise PackageError(f"{path} lists no requirements", package=path)
    return reqs


def requirement_name(package: str) -> str:
    """The distribution name of a (validated) requirement."""
    return Requirement(validate_requirement(package)).name


def host_pip_env() -> dict[str, str]:
    """The host's pip settings (index, proxy, certificates: the variables named by
    :data:`~alphora.sandbox.backend.HOST_PACKAGE_ENV`) that are set, for a backend whose
    ``pip_host_env`` says its pip runs on this host's network."""
    return {k: v for k in HOST_PACKAGE_ENV if (v := os.environ.get(k)) is not None}


#: where a backend's ``wheelhouse`` option (a host directory of wheels) appears inside the sandbox
WHEELHOUSE_DIR = "/run/alphora-sandbox/wheels"


def wheelhouse_dir(value: Any, *, field: str = "wheelhouse") -> str | None:
    """A backend's ``wheelhouse`` option checked: None, or an existing host directory (absolute,
    symlinks resolved); else a :class:`~alphora.sandbox.errors.ConfigurationError` naming it."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigurationError(f"{field} must be a directory path, got {value!r}", field=field, value=value)
    path = os.path.realpath(os.path.expanduser(os.fspath(value)))
    if not os.path.isdir(path):
        raise ConfigurationError(
            f"{field} {str(value)!r} is not a directory on this host (it is mounted read-only into the sandbox "
            f"as pip's only package source)",
            field=field,
            value=value,
        )
    return path


#: added to a failed install's ``error`` when the sandbox has no network (:meth:`PackageMethods._pip_is_offline`)
NO_NETWORK_HINT = (
    "this sandbox has no network, so pip cannot reach a package index: turn on both "
    "resource_limits.network_enabled and security_policy.allow_network, set an egress policy that allows the "
    "index, or give the backend a wheelhouse (backend option 'wheelhouse'; docs/egress.md, 'Packages without "
    "the internet')"
)


def wheelhouse_env(mounted: str | None) -> dict[str, str]:
    """pip's variables for a sandbox with a wheelhouse mounted at ``mounted``: that directory is its
    only package source (``--no-index --find-links``), whatever index the sandbox's env names."""
    return {} if mounted is None else {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": mounted}


def pip_env(host: Mapping[str, str], sandbox_env: Mapping[str, str], backend_env: Mapping[str, str]) -> dict[str, str]:
    """pip's environment. Precedence: host pip settings < the sandbox's own env vars < what the
    backend requires (e.g. ``VIRTUAL_ENV``)."""
    return {**host, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **sandbox_env, **backend_env}


def pip_timeout(timeout: float | None, limits: ResourceLimits) -> float:
    """A pip call's timeout: the one given, else the larger of :data:`PIP_TIMEOUT` and the sandbox's."""
    return float(timeout or max(PIP_TIMEOUT, limits.timeout_seconds))


def locate_distribution_code(name: str) -> str:
    """The program that prints where distribution ``name`` is found (JSON, or ``null``)."""
    return _LOCATE_DISTRIBUTION.replace("NAME", repr(name))


def installed_code(name: str) -> str:
    """The program that exits 0 when distribution ``name`` is importable, else 1."""
    return f"import importlib.metadata as m, sys\ntry:\n    m.version({name!r})\nexcept m.PackageNotFoundError:\n    sys.exit(1)"


def version_code(name: str) -> str:
    """The program that prints distribution ``name``'s version (nothing when it is absent)."""
    return f"import importlib.metadata as m\ntry:\n    print(m.version({name!r}))\nexcept m.PackageNotFoundError:\n    pass"


class PackageMethods:
    """Packages of the sandbox's own environment; mixed into :class:`~alphora.sandbox.Sandbox`,
    which provides the attributes and helpers declared below. pip always runs inside the sandbox."""

    backend: Backend
    resource_limits: ResourceLimits
    _env: dict[str, str]

    if TYPE_CHECKING:  # provided by Sandbox

        def _require_running(self) -> None: ...
        def _audit(self, action: str, **details: Any) -> None: ...
        async def _check(self, kind: Any, content: str = "", path: str = "", size: int = 0) -> None: ...
        def _env_for(self, env: Mapping[str, str] | None) -> dict[str, str]: ...
        async def _run(self, request: ProcessRequest, on_output: OutputCallback | None) -> ExecutionResult: ...
        async def read_file(self, path: str, encoding: str = "utf-8") -> str: ...

    # -- packages --------------------------------------------------------------------------------

    async def _pip(self, args: Sequence[str], timeout: float | None = None) -> ExecutionResult:
        self._require_running()
        await self._check("package", content=" ".join(args))
        prefix, backend_env = await self.backend.pip_command()
        env = pip_env(host_pip_env() if self.backend.pip_host_env else {}, self._env, backend_env)
        offline = self._pip_is_offline(env)
        if offline:
            # nothing to retry against: without this pip spends ~8 s on five retries of a name it cannot resolve
            env = {"PIP_RETRIES": "0", **env}
        self._audit("pip", args=list(args))
        request = ProcessRequest(
            kind="argv",
            argv=(*prefix, *args),
            env=env,
            timeout=pip_timeout(timeout, self.resource_limits),
            max_output=self.resource_limits.max_output_size,
        )
        result = await self._run(request, None)
        if offline and args[:1] == ["install"] and result.status is ExecutionStatus.FAILED:
            result = attrs.evolve(
                result, error=f"{result.error}: {NO_NETWORK_HINT}" if result.error else NO_NETWORK_HINT
            )
        return result

    def _pip_is_offline(self, env: Mapping[str, str]) -> bool:
        """True when pip in this sandbox cannot reach any package index: the backend's network is its
        own (not the host's), the network rule gives it none, and no wheelhouse is its package source."""
        backend = self.backend
        return (
            not backend.pip_host_env
            and network_access(backend.resource_limits, backend.security_policy) == "none"
            and "PIP_NO_INDEX" not in env
        )

    async def install_package(self, package: str, version: str | None = None, upgrade: bool = False) -> ExecutionResult:
        """pip-install a package into the sandbox's own environment (never the host's)."""
        req = validate_requirement(package, version)
        return await self._pip(["install", *(["--upgrade"] if upgrade else []), "--", req])

    async def install_packages(self, packages: Sequence[str]) -> ExecutionResult:
        reqs = validate_requirements(packages)
        return await self._pip(["install", "--", *reqs])

    async def install_requirements(self, path: str = "requirements.txt") -> ExecutionResult:
        """Install a requirements file of the workspace; each line is validated like install_package."""
        text = await self.read_file(path)
        reqs = requirements_file(text, path)
        return await self._pip(["install", "--", *reqs])

    async def uninstall_package(self, package: str) -> ExecutionResult:
        """pip-uninstall a package the sandbox installed. A package that is not installed, or that
        comes from the sandbox's base environment (the base interpreter's site-packages with
        ``system_site_packages``, an image's own packages on Docker), gives a FAILED result saying so."""
        name = requirement_name(package)
        self._require_running()
        await self._check("package", content=f"uninstall {name}")
        started = time.monotonic()
        found = await self._locate_distribution(name)
        if found is None:
            return self._refused(f"{name} is not installed in the sandbox, nothing to uninstall", started)
        if not found["own"]:
            return self._refused(
                f"{found['name']} {found['version']} is not in the sandbox's own environment: it comes from "
                f"{found['location']}, the sandbox's base environment, which the sandbox cannot change; "
                "only packages installed into the sandbox can be uninstalled",
                started,
            )
        return await self._pip(["uninstall", "-y", "--", name])

    def _refused(self, message: str, started: float) -> ExecutionResult:
        self._audit("pip_refused", message=message)
        return ExecutionResult(
            status=ExecutionStatus.FAILED,
            stderr=message + "\n",
            return_code=1,
            error=message,
            execution_time=time.monotonic() - started,
        )

    async def _locate_distribution(self, name: str) -> dict[str, Any] | None:
        """Where the sandbox's Python finds distribution ``name``, and whether that is the sandbox's
        own environment (its venv, or its user site) rather than the base environment."""
        result = await self._python_internal(locate_distribution_code(name))
        if not result.success:
            raise PackageError(f"could not look up {name}: {result.stderr.strip()[-500:]}", package=name)
        found: dict[str, Any] | None = json.loads(result.stdout)
        return found

    async def list_packages(self) -> list[PackageInfo]:
        """The distributions sandbox code can import (its own and, if visible, its base environment's)."""
        result = await self._python_internal(LIST_DISTRIBUTIONS)
        if not result.success:
            raise PackageError(f"could not list packages: {result.stderr.strip()[-500:]}")
        return [PackageInfo(name=n, version=v, location=loc) for n, v, loc in json.loads(result.stdout)]

    async def package_installed(self, package: str) -> bool:
        """True when sandbox code can import distribution ``package``."""
        name = requirement_name(package)
        return (await self._python_internal(installed_code(name))).success

    async def get_package_version(self, package: str) -> str | None:
        name = requirement_name(package)
        out = (await self._python_internal(version_code(name))).stdout.strip()
        return out or None

    async def _python_internal(self, code: str) -> ExecutionResult:
        """Library-written helper code: skips the policy's code checks, still in the sandbox."""
        request = ProcessRequest(
            kind="python",
            code=code,
            env=self._env_for(None),
            timeout=max(60.0, self.resource_limits.timeout_seconds),
            max_output=self.resource_limits.max_output_size,
        )
        return await self._run(request, None)
