"""The facade: status machine, env vars, validation, package management inside the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alphora.sandbox import (
    ConfigurationError,
    ExecutionStatus,
    PackageError,
    ResourceLimits,
    Sandbox,
    SandboxAlreadyRunningError,
    SandboxError,
    SandboxNotRunningError,
    SandboxStatus,
)


async def test_status_machine(tmp_path: Path) -> None:
    sandbox = Sandbox.create_local(base_path=tmp_path)
    assert sandbox.status is SandboxStatus.CREATED
    with pytest.raises(SandboxNotRunningError):
        await sandbox.run("print(1)")
    await sandbox.start()
    assert sandbox.status is SandboxStatus.RUNNING
    with pytest.raises(SandboxAlreadyRunningError):
        await sandbox.start()
    assert await sandbox.health_check()
    await sandbox.stop()
    assert sandbox.status is SandboxStatus.STOPPED
    await sandbox.stop()  # harmless twice
    with pytest.raises(SandboxNotRunningError, match="stopped"):
        await sandbox.run("print(1)")
    assert not await sandbox.health_check()
    await sandbox.restart()
    assert (await sandbox.run("print(2)")).stdout == "2\n"
    workspace = sandbox.workspace_path
    await sandbox.destroy()
    assert sandbox.status is SandboxStatus.DESTROYED
    assert not workspace.exists()
    with pytest.raises(SandboxError, match="destroyed"):
        await sandbox.start()


async def test_context_manager_cleans_up_even_on_error(tmp_path: Path) -> None:
    ephemeral = Sandbox.create_local(base_path=tmp_path)
    with pytest.raises(RuntimeError, match="body"):
        async with ephemeral:
            await ephemeral.write_file("x.txt", "x")
            raise RuntimeError("body")
    assert ephemeral.status is SandboxStatus.DESTROYED
    assert not ephemeral.workspace_path.exists()
    named = Sandbox.create_local(base_path=tmp_path, sandbox_id="keep-me")
    async with named:
        await named.write_file("x.txt", "kept")
    assert named.status is SandboxStatus.STOPPED
    async with named:  # a named sandbox can be started again with its workspace
        assert await named.read_file("x.txt") == "kept"
    await named.destroy()


async def test_create_factory_any_backend_name(tmp_path: Path) -> None:
    async with Sandbox.create("local", base_path=tmp_path) as sandbox:
        assert (await sandbox.run("print('x')")).stdout == "x\n"
        info = await sandbox.get_info()
        assert info.backend_type == "local"
        assert info.status is SandboxStatus.RUNNING
        status = await sandbox.get_status()
        assert status["is_running"] is True
        await sandbox.destroy()
    with pytest.raises(ConfigurationError, match="unknown backend 'nope'"):
        Sandbox.create("nope")


async def test_env_vars_reach_code_but_host_env_does_not(local_sandbox: Sandbox) -> None:
    os.environ["ALPHORA_HOST_SECRET"] = "s3cr3t"
    try:
        await local_sandbox.set_env("GREETING", "hi")
        await local_sandbox.set_env_vars({"A": "1", "B": "2"})
        r = await local_sandbox.run(
            "import os; print(os.environ['GREETING'], os.environ['A'], "
            "os.environ.get('ALPHORA_HOST_SECRET'), 'OPENAI_API_KEY' in os.environ)"
        )
    finally:
        del os.environ["ALPHORA_HOST_SECRET"]
    assert r.stdout == "hi 1 None False\n"
    assert await local_sandbox.get_env("GREETING") == "hi"
    assert await local_sandbox.get_env("MISSING") is None
    for bad in ("", "1X", "A=B", "A B"):
        with pytest.raises(ConfigurationError):
            await local_sandbox.set_env(bad, "x")


async def test_timeout_is_a_result_not_an_exception(tmp_path: Path) -> None:
    limits = ResourceLimits(timeout_seconds=1)
    async with Sandbox.create_local(base_path=tmp_path, resource_limits=limits) as sandbox:
        r = await sandbox.run("import time; print('started', flush=True); time.sleep(60)")
        assert r.status is ExecutionStatus.TIMEOUT
        assert "started" in r.stdout
        r2 = await sandbox.execute_code("print('ok')", timeout=10)
        assert r2.success
        with pytest.raises(ConfigurationError, match="timeout"):
            await sandbox.run("print(1)", timeout=-1)
        await sandbox.destroy()


async def test_streaming_iterator(local_sandbox: Sandbox) -> None:
    items = [item async for item in local_sandbox.stream("for i in range(3): print(i, flush=True)")]
    final = items[-1]
    assert final.success  # type: ignore[union-attr]
    assert "".join(i.text for i in items[:-1]) == "0\n1\n2\n"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("package", "version"),
    [
        ("requests; rm -rf /", None),
        ("--index-url=http://evil", None),
        ("-r/etc/passwd", None),
        ("pkg @ http://evil/x.whl", None),
        ("requests", "1.0; echo"),
        ("", None),
        ("a\nb", None),
        ("requests>=1", "2.0"),
    ],
)
async def test_package_names_are_validated(local_sandbox: Sandbox, package: str, version: str | None) -> None:
    with pytest.raises(PackageError):
        await local_sandbox.install_package(package, version=version)


def _build_wheel(tmp_path: Path, name: str, version: str) -> Path:
    src = tmp_path / f"{name}-{version}-src"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (src / "pyproject.toml").write_text(
        "[build-system]\nrequires=['setuptools>=61']\nbuild-backend='setuptools.build_meta'\n"
        f"[project]\nname='{name}'\nversion='{version}'\n"
    )
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        check=True,
        timeout=300,
    )
    return out


@pytest.mark.slow
async def test_packages_install_into_the_sandbox_not_the_host(tmp_path: Path) -> None:
    wheels = _build_wheel(tmp_path, "alphora_probe_pkg", "1.2.3")
    _build_wheel(tmp_path, "alphora_probe_pkg", "1.3.0")
    async with Sandbox.create_local(base_path=tmp_path / "sb") as sandbox:
        await sandbox.set_env("PIP_NO_INDEX", "1")
        await sandbox.set_env("PIP_FIND_LINKS", str(wheels))
        assert not await sandbox.package_installed("alphora_probe_pkg")
        r = await sandbox.install_package("alphora_probe_pkg", version="1.2.3")
        assert r.success, r.stderr
        assert await sandbox.package_installed("alphora_probe_pkg")
        assert await sandbox.get_package_version("alphora-probe-pkg") == "1.2.3"
        assert (await sandbox.run("import alphora_probe_pkg; print(alphora_probe_pkg.VERSION)")).stdout == "1.2.3\n"
        r = await sandbox.install_package("alphora_probe_pkg", upgrade=True)
        assert r.success, r.stderr
        assert await sandbox.get_package_version("alphora_probe_pkg") == "1.3.0"
        names = {p.name.lower().replace("_", "-") for p in await sandbox.list_packages()}
        assert "alphora-probe-pkg" in names
        host = subprocess.run([sys.executable, "-c", "import alphora_probe_pkg"], capture_output=True)
        assert host.returncode != 0, "the package leaked into the host's environment"
        r = await sandbox.uninstall_package("alphora_probe_pkg")
        assert r.success, r.stderr
        assert not await sandbox.package_installed("alphora_probe_pkg")
        await sandbox.destroy()


async def test_sessions_see_the_sandbox_env(local_sandbox: Sandbox) -> None:
    await local_sandbox.set_env("SESSION_VAR", "visible")
    async with local_sandbox.session() as py:
        await py.run("import os")
        r = await py.run("os.environ.get('SESSION_VAR')")
        assert r.value == "'visible'"


async def test_list_files_hides_the_backends_own_entries(local_sandbox: Sandbox) -> None:
    await local_sandbox.write_file("a.py", "x = 1")
    await local_sandbox.write_file(".config/settings.json", "{}")  # the user's dotfiles stay visible
    top = {f.path for f in await local_sandbox.list_files("", recursive=True)}
    assert top == {"a.py", ".config", ".config/settings.json"}
    await local_sandbox.run("import os; open(os.path.join(os.environ['TMPDIR'], 'scratch'), 'w').write('s')")
    assert [f.path for f in await local_sandbox.list_files(".tmp")] == [".tmp/scratch"]


def test_repr_shows_a_name_that_differs_from_the_id(tmp_path: Path) -> None:
    named = Sandbox.create_local(base_path=tmp_path, sandbox_id="abc123", name="worker-1")
    assert repr(named) == "<Sandbox abc123 name='worker-1' local created>"
    anonymous = Sandbox.create_local(base_path=tmp_path)
    assert repr(anonymous) == f"<Sandbox {anonymous.sandbox_id} local created>"
