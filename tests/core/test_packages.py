"""Package isolation: a sandbox sees the standard library, its own environment and — only when
configured — its base environment; never the agent's virtualenv. Package operations tell the truth.

The agent here is the test runner: its virtualenv has pytest, hypothesis and attrs installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox
from alphora.sandbox.builtin._python_env import base_interpreter
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from tests._support.packages import install_then_uninstall, offline_index

#: installed in the test runner's venv (the agent's environment): never importable in a sandbox
AGENT_PACKAGES = ("pytest", "hypothesis", "attrs")


def _gate(backend: str) -> None:
    problem = None
    if backend == "isolated" and not bwrap_available():
        problem = "bubblewrap (bwrap) is not installed: apt install bubblewrap"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but this test cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


LOCAL_TIERS = ["local", "isolated"]


def _sandbox(backend: str, base: Path, **options: object) -> Sandbox:
    _gate(backend)
    limits = ResourceLimits(timeout_seconds=120)
    return Sandbox.create(backend, base_path=base, resource_limits=limits, backend_options=options)


@pytest.fixture(params=LOCAL_TIERS)
async def tier(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with _sandbox(request.param, tmp_path) as sandbox:
        yield sandbox


async def test_the_agents_packages_are_not_importable(tier: Sandbox) -> None:
    for name in AGENT_PACKAGES:
        assert __import__(name)  # the agent (this test) has it
        r = await tier.run(f"import {name}")
        assert not r.success, f"{name} leaked from the agent's environment into the sandbox"
        assert f"ModuleNotFoundError: No module named '{name}'" in r.stderr
        # nor through a new interpreter: python3 in a shell, sys.executable in a subprocess
        r = await tier.execute_shell(f"python3 -c 'import {name}'")
        assert f"No module named '{name}'" in r.stderr, r
        r = await tier.run(
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', 'import {name}'], check=True)"
        )
        assert f"No module named '{name}'" in r.stderr, r
        assert not await tier.package_installed(name)
        assert await tier.get_package_version(name) is None
    assert await tier.list_packages() == []


async def test_the_agents_virtualenv_is_not_even_visible_in_the_isolated_tier(tmp_path: Path) -> None:
    async with _sandbox("isolated", tmp_path) as sandbox:
        r = await sandbox.run(f"import os; print(os.path.exists({sys.prefix!r}))")
        assert r.stdout == "False\n", "the agent's virtualenv is mounted into the isolated sandbox"
        await sandbox.destroy()


async def test_uninstalling_a_package_that_is_not_the_sandboxs_is_a_failure(tier: Sandbox) -> None:
    r = await tier.uninstall_package("pytest")  # the agent has it; the sandbox does not
    assert not r.success
    assert r.return_code != 0
    assert "pytest is not installed in the sandbox" in r.error
    assert r.stderr.startswith(r.error)
    r = await tier.uninstall_package("alphora-no-such-package")
    assert not r.success
    assert "alphora-no-such-package is not installed in the sandbox" in r.error


@pytest.mark.slow
@pytest.mark.parametrize("backend", LOCAL_TIERS)
async def test_install_then_uninstall_behaves_the_same_on_every_backend(backend: str, tmp_path: Path) -> None:
    # the same scenario on Docker: tests/docker/test_docker_packages.py
    async with _sandbox(backend, tmp_path) as sandbox:
        # where it goes: the sandbox's own environment (the workspace's venv)
        await install_then_uninstall(sandbox, own_env=f"{sandbox.workspace_path}/.venv/")
        await sandbox.destroy()


async def test_installing_keeps_the_sessions_state(tier: Sandbox) -> None:
    async with tier.session() as py:
        await py.run("x = 41")
        assert "No module named 'alphora_late_probe'" in (await py.run("import alphora_late_probe")).stderr
        await offline_index(tier, "alphora_late_probe", "2.0")
        installed = await tier.install_package("alphora_late_probe")
        assert installed.success, installed.stderr[-2000:]
        r = await py.run("import alphora_late_probe\nprint(alphora_late_probe.VERSION, x + 1)")
        assert (r.stdout, r.state_lost) == ("2.0 42\n", False), r.stderr


def _base_site_package() -> tuple[str, str]:
    """(distribution name, location) of a package in the base interpreter's site-packages."""
    code = (
        "import importlib.metadata as m, json, os, site\n"
        "sites = {os.path.realpath(p) for p in site.getsitepackages()}\n"
        "for name in ('pip', 'setuptools', 'wheel', 'six'):\n"
        "    try:\n        d = m.distribution(name)\n    except m.PackageNotFoundError:\n        continue\n"
        "    where = os.path.realpath(str(d.locate_file('')))\n"
        "    if where in sites:\n        print(json.dumps([name, where]))\n        break\n"
    )
    out = subprocess.run([base_interpreter(), "-I", "-c", code], capture_output=True, text=True, timeout=60).stdout
    if not out.strip():
        pytest.skip(f"the base interpreter {base_interpreter()} has none of pip/setuptools/wheel/six installed")
    name, where = json.loads(out)
    return name, where


@pytest.mark.parametrize("backend", LOCAL_TIERS)
async def test_system_site_packages_shows_the_base_interpreters_packages(backend: str, tmp_path: Path) -> None:
    name, where = _base_site_package()
    probe = f"import {name}, os; print(os.path.realpath({name}.__file__))"
    async with _sandbox(backend, tmp_path, system_site_packages=True) as sandbox:
        r = await sandbox.run(probe)
        assert r.stdout.startswith(where + "/"), (r.stdout, r.stderr)
        assert await sandbox.package_installed(name)
        assert [p.location for p in await sandbox.list_packages() if p.name == name] == [where]
        # visible, but not the sandbox's to remove
        removed = await sandbox.uninstall_package(name)
        assert not removed.success
        assert f"comes from {where}, the sandbox's base environment" in removed.error
        assert await sandbox.package_installed(name)
        # and still never the agent's packages that the base does not have
        assert "No module named 'openai'" in (await sandbox.run("import openai")).stderr
        sandbox.keep_workspace = True
    # the same workspace started again without the option: the base's packages are gone
    async with Sandbox.create(backend, base_path=tmp_path, sandbox_id=sandbox.sandbox_id) as again:
        assert f"No module named '{name}'" in (await again.run(probe)).stderr
        await again.destroy()


@pytest.mark.parametrize("backend", LOCAL_TIERS)
async def test_links_planted_in_the_venv_never_lead_the_host_outside_the_workspace(
    backend: str, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host data\n")
    (host / "_alphora_host_site.pth").write_text("host data\n")
    async with _sandbox(backend, tmp_path / "sb") as sandbox:
        sandbox.keep_workspace = True
        ver = (
            await sandbox.run("import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')")
        ).stdout.strip()
        # sandbox code swaps parts of its venv for links to files of the host
        r = await sandbox.execute_shell(
            f"ln -s {host / 'secret.txt'} .venv/.pyvenv.cfg.planted && ln -s {host / 'secret.txt'} .venv/pyvenv.cfg.tmp"
            f" && rm -rf .venv/lib/{ver}/site-packages && ln -s {host} .venv/lib/{ver}/site-packages"
        )
        assert r.success, r.stderr
    # the next start rewrites pyvenv.cfg (the option changed) and looks for an old .pth to remove
    async with Sandbox.create(
        backend,
        base_path=tmp_path / "sb",
        sandbox_id=sandbox.sandbox_id,
        backend_options={"system_site_packages": True},
    ) as again:
        assert (await again.run("print('ok')")).stdout == "ok\n"
        await again.destroy()
    assert sorted(p.name for p in host.iterdir()) == ["_alphora_host_site.pth", "secret.txt"]
    assert (host / "secret.txt").read_text() == (host / "_alphora_host_site.pth").read_text() == "host data\n"


async def test_the_option_must_be_a_boolean(tmp_path: Path) -> None:
    from alphora.sandbox import ConfigurationError

    with pytest.raises(ConfigurationError, match="system_site_packages must be true or false, got 'yes'"):
        Sandbox.create_local(base_path=tmp_path, backend_options={"system_site_packages": "yes"})


def _base_in(python: str, *, cwd: Path) -> str:
    """base_interpreter() as computed by a process running on ``python``."""
    src = str(Path(__file__).resolve().parents[2] / "packages" / "alphora-sandbox-core" / "src")
    code = (
        "import sys\n"
        f"sys.path[:0] = [{src!r}, *{[p for p in sys.path if p.endswith('site-packages')]!r}]\n"
        "from alphora.sandbox.builtin._python_env import base_interpreter\nprint(base_interpreter())"
    )
    proc = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_base_interpreter_is_found_inside_and_outside_a_venv(tmp_path: Path) -> None:
    base = base_interpreter()
    assert sys.prefix != sys.base_prefix, "the suite runs in a venv (nox's virtualenv, or .venv)"
    assert not base.startswith(sys.prefix + "/")
    probe = "import sys; print(sys.version, sys.prefix == sys.base_prefix)"
    out = subprocess.run([base, "-I", "-c", probe], capture_output=True, text=True, timeout=60).stdout
    assert out == f"{sys.version} True\n"  # the same Python, outside any venv
    # outside any venv: the interpreter itself
    assert _base_in(base, cwd=tmp_path) == base
    # a venv made from inside a venv (python -m venv run by the venv's python)
    nested = tmp_path / "nested"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(nested)], check=True, timeout=300)
    assert os.path.realpath(_base_in(str(nested / "bin" / "python"), cwd=tmp_path)) == os.path.realpath(base)


async def test_an_install_without_network_says_so(tmp_path: Path) -> None:
    """The isolated tier has no network by default: pip's own failure (a resolver error, after its
    retries) does not name the cause; the result's error does, with the three ways to give pip an index."""
    async with _sandbox("isolated", tmp_path) as sandbox:
        r = await sandbox.install_package("alphora-no-such-package")
        assert not r.success
        assert "this sandbox has no network, so pip cannot reach a package index" in r.error
        assert "wheelhouse" in r.error
        assert "Retrying" not in r.stderr  # no retries against a network that is not there
        await sandbox.destroy()
