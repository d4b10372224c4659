"""Package operations without a network: a wheel built in memory and a scenario every backend must pass.

Used by tests/core/test_packages.py (local, isolated) and tests/docker/test_docker_packages.py (Docker).
"""

from __future__ import annotations

import io
import zipfile

from alphora.sandbox import Sandbox


def wheel(name: str, version: str) -> bytes:
    """A minimal pure-Python wheel of module ``name`` (built here: no index, no build backend)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: alphora-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
        whl.writestr(f"{dist}/RECORD", "".join(f"{p},,\n" for p in [*files, f"{dist}/RECORD"]))
    return buf.getvalue()


async def offline_index(sandbox: Sandbox, name: str, version: str) -> None:
    """Put a wheel into the workspace and point pip at it (no network on any backend)."""
    await sandbox.write_file_bytes(f"wheels/{name}-{version}-py3-none-any.whl", wheel(name, version))
    cwd = (await sandbox.run("import os; print(os.getcwd())")).stdout.strip()  # the workspace, as the sandbox sees it
    await sandbox.set_env("PIP_NO_INDEX", "1")
    await sandbox.set_env("PIP_FIND_LINKS", f"{cwd}/wheels")


async def install_then_uninstall(sandbox: Sandbox, *, own_env: str) -> None:
    """Install, use, list, uninstall: the same answers on every backend. ``own_env`` is where the
    sandbox's own environment lies as the sandbox sees it (the package must land there)."""
    await offline_index(sandbox, "alphora_pkg_probe", "1.0.0")
    assert not await sandbox.package_installed("alphora_pkg_probe")
    installed = await sandbox.install_package("alphora_pkg_probe")
    assert installed.success, installed.stderr[-2000:]
    assert "Successfully installed alphora" in installed.stdout
    r = await sandbox.run("import alphora_pkg_probe; print(alphora_pkg_probe.VERSION)")
    assert r.stdout == "1.0.0\n", r.stderr
    assert await sandbox.package_installed("alphora-pkg-probe")
    assert await sandbox.get_package_version("alphora_pkg_probe") == "1.0.0"
    [listed] = [p for p in await sandbox.list_packages() if p.name == "alphora_pkg_probe"]
    assert listed.version == "1.0.0"
    assert listed.location.startswith(own_env), listed.location

    removed = await sandbox.uninstall_package("alphora_pkg_probe")
    assert removed.success, removed.stderr[-2000:]
    assert "Successfully uninstalled alphora" in removed.stdout
    assert not await sandbox.package_installed("alphora_pkg_probe")
    r = await sandbox.run("import alphora_pkg_probe")
    assert "No module named 'alphora_pkg_probe'" in r.stderr
    again = await sandbox.uninstall_package("alphora_pkg_probe")
    assert not again.success
    assert "alphora_pkg_probe is not installed in the sandbox" in again.error
