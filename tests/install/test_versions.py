"""The three distributions are released together: one version, and pins that say so.

The version is written in each ``packages/*/pyproject.toml`` (and as ``alphora.sandbox.__version__``);
these tests keep the copies equal, the core's extras pinned to exactly that version of each plugin,
and each plugin's dependency on the core within that minor series, so the pins can't drift from the
versions when one of them is bumped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import alphora.sandbox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the install tests run on 3.11 (nox tests-3.11)
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
CORE = "alphora-sandbox"
PLUGINS = {"docker": "alphora-sandbox-docker", "s3": "alphora-sandbox-s3", "ray": "alphora-sandbox-ray"}


def project(directory: str) -> dict[str, Any]:
    with open(PACKAGES / directory / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"])


def core_version() -> Version:
    return Version(project("alphora-sandbox-core")["version"])


def test_every_distribution_has_the_core_version() -> None:
    assert project("alphora-sandbox-core")["name"] == CORE
    for dist in PLUGINS.values():
        assert project(dist)["name"] == dist
        assert Version(project(dist)["version"]) == core_version(), dist
    assert Version(alphora.sandbox.__version__) == core_version()


def test_each_plugin_extra_pins_exactly_the_plugin_of_this_release() -> None:
    extras = project("alphora-sandbox-core")["optional-dependencies"]
    for extra, dist in PLUGINS.items():
        (line,) = extras[extra]
        req = Requirement(line)
        assert req.name == dist
        assert str(req.specifier) == f"=={core_version()}", f"extra {extra!r}: {line!r}"


def test_each_plugin_requires_a_core_of_its_own_minor_series() -> None:
    version = core_version()
    next_minor = Version(f"{version.major}.{version.minor + 1}")
    for dist in PLUGINS.values():
        (line,) = [d for d in project(dist)["dependencies"] if Requirement(d).name == CORE]
        spec = Requirement(line).specifier
        assert version in spec, f"{dist}: {line!r} excludes the core it is released with ({version})"
        assert next_minor not in spec, f"{dist}: {line!r} admits the next minor series ({next_minor})"
