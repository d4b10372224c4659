"""The documented install lines, run as typed in fresh virtual environments against freshly built wheels.

Slow (marked ``slow``; about a minute, announced in pytest's output with ``[tests/install]``): builds
the three sdists and wheels once per test session with the script ``nox -s build`` runs
(tests/install/build_dist.py), then creates two venvs and installs into them from ``dist/`` plus the
package index configured on the machine (pip's config and ``PIP_*`` variables pass through as they are):

* ``pip install --find-links dist 'alphora-sandbox[docker,s3]'``: the extras pull in both plugins;
  the spec's imports resolve, a local sandbox runs, and a Docker sandbox runs on the real engine;
* ``pip install --find-links dist alphora-sandbox``: core only; ``from alphora.sandbox import *``
  works and the plugin names fail with an error that gives both install forms.

Nothing here installs the working tree itself: each venv holds only what pip resolved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.version import Version

import alphora.sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BUILD_SCRIPT = Path(__file__).with_name("build_dist.py")
EXTRAS_INSTALL = "pip install --find-links dist 'alphora-sandbox[docker,s3]'"
CORE_INSTALL = "pip install --find-links dist alphora-sandbox"
DISTS = ("alphora-sandbox", "alphora-sandbox-docker", "alphora-sandbox-s3")


def say(config: pytest.Config, line: str) -> None:
    """A line in pytest's output, shown even with -q: these tests are slow, the output says why."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[tests/install] {line}")


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A directory holding ``dist/`` with the sdists and wheels built from this checkout, once per session.

    Always a fresh build: a ``dist/`` left in the checkout may be older than the code under test.
    """
    try:
        import build  # noqa: F401  (the PyPA frontend that build_dist.py runs)
    except ImportError:
        msg = "the 'build' package is missing (pip install build); the nox test sessions install it"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must run the install tests")
        pytest.skip(msg)
    root = tmp_path_factory.mktemp("wheelhouse").resolve()
    started = time.monotonic()
    say(pytestconfig, "building the sdists and wheels once for this session (tests/install/build_dist.py)")
    proc = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), str(root / "dist")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"build_dist.py failed:\n{proc.stdout}\n{proc.stderr}"
    names = sorted(p.name for p in (root / "dist").iterdir())
    say(pytestconfig, f"built {', '.join(names)} in {time.monotonic() - started:.1f}s")
    return root


@dataclass
class Venv:
    """A fresh virtual environment, used as a user would after ``source bin/activate`` in the wheelhouse."""

    path: Path
    cwd: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def sh(self, command: str, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run a command line exactly as typed (through /bin/sh) in the venv, from the wheelhouse directory."""
        return subprocess.run(
            command,
            shell=True,
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.path / "bin" / "python"), "-c", code],
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def make_venv(wheelhouse: Path, name: str, install: str, config: pytest.Config) -> Venv:
    """A new venv in the wheelhouse directory, with ``install`` run in it (it must succeed)."""
    venv = Venv(wheelhouse / name, wheelhouse)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv.path)], check=True, capture_output=True)
    proc = venv.sh(install)
    say(config, f"fresh venv {name}: {install}  -> exit {proc.returncode} in {time.monotonic() - started:.1f}s")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{install!r} failed in a fresh venv (exit {proc.returncode}):\n{output[-4000:]}"
    return venv


@pytest.fixture(scope="module")
def extras_venv(wheelhouse: Path, pytestconfig: pytest.Config) -> Venv:
    return make_venv(wheelhouse, "venv-extras", EXTRAS_INSTALL, pytestconfig)


@pytest.fixture(scope="module")
def core_venv(wheelhouse: Path, pytestconfig: pytest.Config) -> Venv:
    return make_venv(wheelhouse, "venv-core", CORE_INSTALL, pytestconfig)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout of a finished command; fails with its whole output unless it exited 0."""
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def installed_versions(venv: Venv) -> dict[str, str | None]:
    code = f"""
import importlib.metadata as md, json
found = {{}}
for name in {DISTS!r}:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = None
print(json.dumps(found))
"""
    return dict(json.loads(ok(venv.python(code))))


# --- core plus both plugins through the extras ---------------------------------------------------


def test_extras_install_brings_the_core_and_both_plugins_at_one_version(extras_venv: Venv) -> None:
    version = alphora.sandbox.__version__
    assert installed_versions(extras_venv) == dict.fromkeys(DISTS, version)


def test_spec_imports_resolve_from_the_installed_wheels(extras_venv: Venv) -> None:
    out = ok(
        extras_venv.python("""
from alphora.sandbox import DockerBackend
from alphora.sandbox.storage import S3Storage
import alphora.sandbox, alphora.sandbox_docker, alphora.sandbox_s3
print(DockerBackend.__name__, S3Storage.__name__)
for module in (alphora.sandbox, alphora.sandbox_docker, alphora.sandbox_s3):
    print(module.__file__)
""")
    )
    first, *files = out.splitlines()
    assert first == "DockerBackend S3Storage"
    # installed copies in the venv, not the checkout's sources
    assert len(files) == 3
    assert all(Path(f).resolve().is_relative_to(extras_venv.path) for f in files), files


def test_entry_points_of_the_wheels_register_both_plugins(extras_venv: Venv) -> None:
    out = ok(
        extras_venv.python("""
from alphora.sandbox.plugins import get_registry
registry = get_registry()
print(sorted(registry.backends)); print(sorted(registry.storages))
""")
    )
    backends, storages = out.splitlines()
    assert "'docker'" in backends
    assert "'s3'" in storages
    assert "'minio'" in storages


def test_star_import_exports_the_plugin_names_when_the_plugins_are_installed(extras_venv: Venv) -> None:
    out = ok(
        extras_venv.python("""
from alphora.sandbox import *
from alphora.sandbox.storage import *
print(DockerBackend.__name__, S3Storage.__name__, Sandbox.__name__)
""")
    )
    assert out.split() == ["DockerBackend", "S3Storage", "Sandbox"]


def test_cli_of_the_installed_wheel_runs_a_local_sandbox(extras_venv: Venv) -> None:
    out = ok(extras_venv.sh('alphora-sandbox run "print(1+1)"', timeout=120))
    assert out.strip() == "2"


def test_python_api_of_the_installed_wheel_runs_a_local_sandbox(extras_venv: Venv) -> None:
    out = ok(
        extras_venv.python("""
import asyncio
from alphora.sandbox import Sandbox

async def main():
    async with Sandbox.create_local() as sandbox:
        await sandbox.write_file("data.txt", "from the wheel")
        result = await sandbox.run("print(open('data.txt').read(), 1 + 1)")
        print(result.stdout, end="")

asyncio.run(main())
""")
    )
    assert out.strip() == "from the wheel 2"


def test_docker_backend_of_the_installed_wheels_runs_a_container(extras_venv: Venv) -> None:
    """The spec's Docker lines, run with the installed plugin against the real engine (our base image)."""
    from alphora.sandbox_docker import is_docker_available

    problem = None if is_docker_available() else "no Docker engine answers (start dockerd, or run .ci/docker-setup.sh)"
    if (
        problem is None
        and subprocess.run(
            ["docker", "image", "inspect", "alphora/sandbox:base"], capture_output=True, check=False
        ).returncode
        != 0
    ):
        problem = "the image alphora/sandbox:base is missing: alphora-sandbox docker build base --host-ca"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the Docker check cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    out = ok(
        extras_venv.python(
            """
import asyncio
from alphora.sandbox import Sandbox, DockerBackend, is_docker_available

async def main():
    assert is_docker_available()
    async with Sandbox.create_docker(docker_image="alphora/sandbox:base") as sandbox:
        assert isinstance(sandbox.backend, DockerBackend), type(sandbox.backend)
        print((await sandbox.run("print(1 + 1)")).stdout, end="")

asyncio.run(main())
""",
            timeout=300,
        )
    )
    assert out.strip() == "2"


# --- versions: a newer release of one part never combines with this release of another ---------


@pytest.fixture(scope="module")
def newer_release(wheelhouse: Path, pytestconfig: pytest.Config) -> tuple[Path, str]:
    """``newer/`` with wheels of the core and the docker plugin at the next minor version, as if released later."""
    current = Version(alphora.sandbox.__version__)
    newer = f"{current.major}.{current.minor + 1}.0"
    out = wheelhouse / "newer"
    started = time.monotonic()
    for name in ("alphora-sandbox-core", "alphora-sandbox-docker"):
        src = wheelhouse / "newer-src" / name
        shutil.copytree(
            BUILD_SCRIPT.parents[2] / "packages" / name, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        pyproject = src / "pyproject.toml"
        text, count = re.subn(r'(?m)^version = "[^"]+"$', f'version = "{newer}"', pyproject.read_text())
        assert count == 1, f"no version line in {pyproject}"
        pyproject.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"building the {newer} wheel of {name} failed:\n{proc.stdout}\n{proc.stderr}"
    say(pytestconfig, f"built {newer} wheels of the core and the docker plugin in {time.monotonic() - started:.1f}s")
    return out, newer


def resolve(venv: Venv, requirement: str, newer: Path) -> dict[str, str]:
    """What pip would install for ``requirement`` from dist/ and the newer wheels (nothing is installed)."""
    proc = venv.sh(
        f"pip install --dry-run --ignore-installed --quiet --report - --find-links dist "
        f"--find-links {newer} '{requirement}'"
    )
    report = json.loads(ok(proc))
    return {item["metadata"]["name"]: item["metadata"]["version"] for item in report["install"]}


def test_the_extra_installs_the_plugin_released_with_the_core(core_venv: Venv, newer_release: tuple[Path, str]) -> None:
    newer_dir, _ = newer_release
    version = alphora.sandbox.__version__
    picked = resolve(core_venv, f"alphora-sandbox[docker]=={version}", newer_dir)
    assert picked["alphora-sandbox"] == version
    assert picked["alphora-sandbox-docker"] == version  # not the newer plugin


def test_the_plugin_installs_a_core_of_its_own_minor_series(core_venv: Venv, newer_release: tuple[Path, str]) -> None:
    newer_dir, _ = newer_release
    version = alphora.sandbox.__version__
    picked = resolve(core_venv, f"alphora-sandbox-docker=={version}", newer_dir)
    assert picked["alphora-sandbox-docker"] == version
    assert picked["alphora-sandbox"] == version  # not the newer core


# --- the core alone ----------------------------------------------------------------------------


def test_core_only_install_has_no_plugin(core_venv: Venv) -> None:
    assert installed_versions(core_venv) == {
        "alphora-sandbox": alphora.sandbox.__version__,
        "alphora-sandbox-docker": None,
        "alphora-sandbox-s3": None,
    }


def test_star_import_works_on_a_core_only_install(core_venv: Venv) -> None:
    out = ok(
        core_venv.python("""
from alphora.sandbox import *
from alphora.sandbox.storage import *
print(is_docker_available(), "DockerBackend" in dir(), "S3Storage" in dir(), Sandbox.__name__, LocalStorage.__name__)
""")
    )
    assert out.split() == ["False", "False", "False", "Sandbox", "LocalStorage"]


@pytest.mark.parametrize(
    ("statement", "extra"),
    [
        ("from alphora.sandbox import DockerBackend", "docker"),
        ("from alphora.sandbox.storage import S3Storage", "s3"),
    ],
)
def test_plugin_names_on_a_core_only_install_name_both_install_forms(
    core_venv: Venv, statement: str, extra: str
) -> None:
    proc = core_venv.python(f"""
try:
    {statement}
except ImportError as exc:
    print(exc)
else:
    print("imported")
""")
    message = ok(proc).strip()
    assert f"pip install 'alphora-sandbox[{extra}]'" in message
    assert f"pip install ./packages/alphora-sandbox-{extra}" in message


def test_docker_subcommand_on_a_core_only_install_names_both_install_forms(core_venv: Venv) -> None:
    proc = core_venv.sh("alphora-sandbox docker images", timeout=60)
    assert proc.returncode != 0
    assert "pip install 'alphora-sandbox[docker]'" in proc.stderr
    assert "pip install ./packages/alphora-sandbox-docker" in proc.stderr


def test_core_only_install_runs_a_local_sandbox(core_venv: Venv) -> None:
    out = ok(core_venv.sh('alphora-sandbox run "print(1+1)"', timeout=120))
    assert out.strip() == "2"


@pytest.mark.parametrize(
    ("dist", "package"),
    [
        ("alphora_sandbox", "alphora/sandbox"),
        ("alphora_sandbox_docker", "alphora/sandbox_docker"),
        ("alphora_sandbox_s3", "alphora/sandbox_s3"),
    ],
)
def test_every_wheel_marks_its_package_typed(wheelhouse: Path, dist: str, package: str) -> None:
    """PEP 561: a ``py.typed`` beside the code, so a user's type checker reads our annotations."""
    import zipfile

    [whl] = (wheelhouse / "dist").glob(f"{dist}-*.whl")
    with zipfile.ZipFile(whl) as archive:
        assert f"{package}/py.typed" in archive.namelist()
