"""The plugin system: built-ins are ordinary plugins; a real third-party distribution plugs in."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
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

    reg = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[Dup()]))
    with pytest.raises(ValueError, match="already registered"):
        reg.backends  # noqa: B018 - the table is built (and the conflict found) when first read


def test_a_class_registered_by_reference_is_imported_on_first_lookup() -> None:
    """``register(name, "module:Class")``: listing names imports nothing; the lookup imports it."""
    module = "alphora_test_lazy_backend_module"

    class ByReference:
        @hookimpl
        def sandbox_register_backends(self, register: hookspecs.RegisterBackend) -> None:
            register("lazy", f"{module}:LazyBackend")

    source = "from alphora.sandbox.builtin.local_backend import LocalBackend as LazyBackend\n"
    finder = _OneModule(module, source)
    sys.meta_path.insert(0, finder)
    try:
        reg = PluginRegistry(make_plugin_manager(autoload=False, extra_plugins=[ByReference()]))
        assert "lazy" in reg.backends
        assert "lazy" in sorted(reg.backends)
        assert module not in sys.modules
        from alphora.sandbox.builtin.local_backend import LocalBackend

        assert reg.backend("lazy") is LocalBackend
        assert module in sys.modules
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop(module, None)


class _OneModule:
    """A meta-path finder serving one in-memory module (to watch when it is imported)."""

    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        import importlib.util

        return importlib.util.spec_from_loader(name, self) if name == self.name else None

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: object) -> None:
        exec(self.source, vars(module))


@pytest.mark.parametrize("group", ["alphora_sandbox", "console_scripts", "pytest11"])
def test_entry_point_scan_finds_what_importlib_metadata_finds(group: str) -> None:
    """The fast scan of the metadata directories (discovery without importing importlib.metadata)
    agrees with importlib.metadata on this environment, for our group and for busier ones."""
    import importlib.metadata

    from alphora.sandbox.plugins import entry_points

    scanned = entry_points(group)
    assert scanned is not None
    expected = {(ep.name, ep.value.split("[", 1)[0].strip()) for ep in importlib.metadata.entry_points(group=group)}
    assert set(scanned) == expected
    assert expected, f"nothing in {group}: the comparison proves nothing"


def test_entry_point_lines_parsing() -> None:
    from alphora.sandbox.plugins import _entry_point_lines

    text = "[console_scripts]\nx = a:b\n\n[alphora_sandbox]\n# a comment\ndocker = pkg.plugin\nlazy=pkg.mod:obj.attr [extra]\n"
    assert _entry_point_lines(text, "alphora_sandbox") == [("docker", "pkg.plugin"), ("lazy", "pkg.mod:obj.attr")]
    assert _entry_point_lines(text, "other") == []


FIRST_SANDBOX = """
import sys
from alphora.sandbox import Sandbox
heavy = ["docker", "boto3", "aioboto3", "botocore", "cattrs", "yaml", "alphora.sandbox_docker.backend",
         "alphora.sandbox_s3.storage", "alphora.sandbox.tools", "alphora.sandbox.storage.local",
         "importlib.metadata"]
before = set(sys.modules)
Sandbox.create_local()
print(sorted(m for m in heavy if m in sys.modules and m not in before))
print(sorted(m for m in heavy[:-4] if m in sys.modules))
"""


def test_the_first_sandbox_imports_no_plugin_it_does_not_use() -> None:
    """Discovery is lazy: a process making a local sandbox never imports the Docker SDK, boto, the
    Docker backend, storages or the tool exporters (that import cost ~250 ms on the first sandbox),
    nor importlib.metadata (the entry points are read from the metadata directories)."""
    out = subprocess.run([sys.executable, "-c", FIRST_SANDBOX], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "[]"]  # not by Sandbox(), and (the heaviest) not at all


def test_every_hook_is_documented_and_tested() -> None:
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("sandbox_")]
    assert len(hooks) == 5
    doc = (DOCS / "plugins.md").read_text()
    here = Path(__file__).read_text()
    for name in hooks:
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert name in doc, f"{name} is missing from docs/plugins.md"
    assert "sandbox_register_backends" in here


#: the documented example plugin (docs/plugins.md): its own distribution, a backend from scratch
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin-backend"

USE_IT = """
import asyncio
from alphora.sandbox import Sandbox
from alphora.sandbox.plugins import get_registry

async def main():
    print(sorted(get_registry().backends))
    async with Sandbox.create("example") as sandbox:
        r = await sandbox.run("import os; print('via', os.environ['TMPDIR'].rsplit('/', 1)[-1])")
        print(type(sandbox.backend).__module__, r.stdout.strip())

asyncio.run(main())
"""


@pytest.mark.slow
def test_third_party_backend_distribution(tmp_path: Path) -> None:
    """Build the example plugin as a real distribution, install it, create a sandbox with it."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(EXAMPLE_PLUGIN)],
        check=True,
        timeout=300,
    )
    (entry_points,) = target.glob("alphora_sandbox_example_backend-*.dist-info/entry_points.txt")
    assert "[alphora_sandbox]\nexample = alphora_example_backend" in entry_points.read_text()
    env = {**os.environ, "PYTHONPATH": str(target), "ALPHORA_SANDBOX_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", USE_IT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'example'" in out.stdout.splitlines()[0]
    assert out.stdout.splitlines()[-1] == "alphora_example_backend via .tmp"


def test_the_example_plugin_uses_public_names_only() -> None:
    """The documented example imports nothing internal: no builtin backend, no runner client."""
    source = (EXAMPLE_PLUGIN / "src" / "alphora_example_backend" / "__init__.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from alphora", "import alphora"))]
    assert imports, source
    assert not [line for line in imports if "builtin" in line or "runner.client" in line or "._" in line], imports


async def test_the_runner_backend_example_in_the_docs_runs(tmp_path: Path) -> None:
    """docs/plugins.md's RunnerBackend example, executed as written."""
    doc = (DOCS / "plugins.md").read_text()
    match = re.search(
        r"```python\n(import asyncio\n\nfrom alphora\.sandbox\.runner import bootstrap_argv.*?)```", doc, re.S
    )
    assert match, "the RunnerBackend example is missing from docs/plugins.md"
    namespace: dict[str, object] = {}
    exec(match.group(1), namespace)
    backend = namespace["SubprocessRunnerBackend"]("docs", tmp_path / "ws")  # type: ignore[operator]
    await backend.initialize()
    await backend.start()
    try:
        result = await backend.execute_code("print(6 * 7)")
        assert result.stdout == "42\n", result
    finally:
        await backend.destroy()
