"""The plugin system: built-ins are ordinary plugins; a real third-party distribution plugs in."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alphora.sandbox import ConfigurationError, hookspecs
from alphora.sandbox.backend import Backend
from alphora.sandbox.plugins import DEFAULT_PLUGINS, PluginRegistry, hookimpl, make_plugin_manager

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_builtins_are_registered_as_plugins() -> None:
    reg = PluginRegistry(make_plugin_manager(autoload=False))
    assert set(DEFAULT_PLUGINS) <= set(reg.plugin_names())
    assert "local" in reg.backends
    assert issubclass(reg.backends["local"], Backend)
    assert {c.name for c in reg.security_checks} >= {"shell", "imports", "file_write", "blocked_paths"}


def test_blocking_a_plugin_by_name() -> None:
    reg = PluginRegistry(make_plugin_manager(autoload=False, blocked=["alphora.sandbox.builtin.local_backend"]))
    assert "local" not in reg.backends
    with pytest.raises(ConfigurationError, match="unknown backend 'local'"):
        reg.backend("local")


def test_unknown_docker_names_the_extra() -> None:
    reg = PluginRegistry(make_plugin_manager(autoload=False))
    with pytest.raises(ConfigurationError, match=r"alphora-sandbox\[docker\]"):
        reg.backend("docker")


def test_duplicate_registration_is_an_error() -> None:
    class Dup:
        @hookimpl
        def sandbox_register_backends(self, register: hookspecs.RegisterBackend) -> None:
            register("local", Backend)

    with pytest.raises(ValueError, match="already registered"):
        PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[Dup()]))


def test_every_hook_is_documented_and_tested() -> None:
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("sandbox_")]
    assert len(hooks) == 4
    doc = (DOCS / "plugins.md").read_text()
    here = Path(__file__).read_text()
    for name in hooks:
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert name in doc, f"{name} is missing from docs/plugins.md"
    assert "sandbox_register_backends" in here


PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-alphora-backend"
version = "0.0.1"

[project.entry-points.alphora_sandbox]
tiny = "tiny_backend"

[tool.setuptools]
py-modules = ["tiny_backend"]
"""

PLUGIN_MODULE = '''
from alphora.sandbox import hookimpl
from alphora.sandbox.builtin.local_backend import LocalBackend


class TinyBackend(LocalBackend):
    """A third-party backend: the local one, marking its results."""

    name = "tiny"

    async def run(self, request, on_output=None):
        env = {**request.env, "TINY_BACKEND": "yes"}
        import attrs
        return await super().run(attrs.evolve(request, env=env), on_output)


@hookimpl
def sandbox_register_backends(register):
    register("tiny", TinyBackend)
'''

USE_IT = """
import asyncio
from alphora.sandbox import Sandbox
from alphora.sandbox.plugins import get_registry

async def main():
    print(sorted(get_registry().backends))
    async with Sandbox.create("tiny") as sandbox:
        r = await sandbox.run("import os; print('via', os.environ['TINY_BACKEND'])")
        print(r.stdout.strip())

asyncio.run(main())
"""


@pytest.mark.slow
def test_third_party_backend_distribution(tmp_path: Path) -> None:
    """Build a real distribution with an entry point, install it, and create a sandbox with it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (src / "tiny_backend.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(src)],
                   check=True, timeout=300)
    assert list(target.glob("tiny_alphora_backend-*.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": str(target), "ALPHORA_SANDBOX_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", USE_IT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'tiny'" in out.stdout.splitlines()[0]
    assert out.stdout.splitlines()[-1] == "via yes"
