"""Package management plumbing of the facade: requirement validation, pip's environment and the
helper programs that ask the sandbox's Python about its distributions.

The public methods stay on :class:`~alphora.sandbox.Sandbox` (``install_package`` …); they call these.
A requirement is never an option and never a shell word: pip is run with ``--`` and an argv.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .backend import HOST_PACKAGE_ENV
from .errors import PackageError
from .types import ResourceLimits

__all__ = [
    "LIST_DISTRIBUTIONS", "PIP_TIMEOUT", "host_pip_env", "installed_code", "locate_distribution_code",
    "pip_env", "pip_timeout", "requirement_name", "requirements_file", "validate_requirement", "validate_requirements",
    "version_code",
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
