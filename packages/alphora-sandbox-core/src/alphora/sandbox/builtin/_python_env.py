"""The Python environment of a local (and isolated) sandbox: its own venv, made from the *base* interpreter.

A sandbox on this host must never see the agent's virtualenv: the agent's packages (``openai``,
its test tools …) are not the sandbox's, and ``pip`` must never change them. So the sandbox runs on
``<workspace>/.venv``, a venv made from the interpreter the agent's own venv was made from (or the
agent's interpreter when it runs outside any venv). What sandbox code can import is then:

* the standard library,
* what was installed into ``.venv`` (``install_package`` and friends),
* and, only with ``system_site_packages=True``, the base interpreter's site-packages (its
  ``site-packages``, or Debian's ``dist-packages``) — faster when they hold heavy packages you
  want, at the price of isolation.

Creating the venv is a few file operations done in-process (no ``python -m venv`` subprocess, no
pip in it), so a sandbox gets it when it starts without a noticeable cost; ``python``, ``python3``
and ``sys.executable`` are then the venv's everywhere, in shell commands as well.

pip is not copied into the venv: the host's pip package (the agent's, else the base interpreter's)
runs *under the venv's Python*, with only ``pip`` importable from its directory (what ``pip
--python`` does), so it installs into and uninstalls from the venv only.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from types import SimpleNamespace

from ..errors import BackendError, PackageError

__all__ = ["PIP_BOOT", "SandboxVenv", "base_interpreter", "base_prefixes", "host_pip_root", "pip_root"]

log = logging.getLogger(__name__)

VENV_DIR = ".venv"
#: marks a ``.venv`` this library created (a user's own ``.venv`` is never touched)
MARKER = ".alphora-venv"
#: a .pth that older versions wrote into the venv to import the host's packages; removed on sight
_LEGACY_PTH = "_alphora_host_site.pth"

#: ``python -c PIP_BOOT <dir> <pip args…>``: runs the pip package found in ``<dir>`` under this
#: interpreter with nothing else of ``<dir>`` importable; a pip installed in the venv itself wins.
PIP_BOOT = (
    "import importlib.machinery, runpy, sys\n"
    "_root = sys.argv.pop(1)\n"
    "class _PipOnly:\n"
    "    @staticmethod\n"
    "    def find_spec(name, path=None, target=None):\n"
    "        return importlib.machinery.PathFinder.find_spec(name, [_root]) if name == 'pip' else None\n"
    "sys.meta_path.append(_PipOnly)\n"
    "runpy.run_module('pip', run_name='__main__', alter_sys=True)\n"
)


def _inside(path: str, prefix: str) -> bool:
    path, prefix = os.path.abspath(path), os.path.abspath(prefix)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@functools.cache
def base_interpreter() -> str:
    """The base interpreter of the running Python: ``sys.executable`` outside a virtual environment;
    inside one (``python -m venv``, virtualenv as nox and tox use it, uv) the interpreter it was made
    from. Raises BackendError when a venv's base cannot be found."""
    if sys.prefix == sys.base_prefix:
        return sys.executable
    names = [f"python{sys.version_info[0]}.{sys.version_info[1]}", f"python{sys.version_info[0]}", "python"]
    candidates: list[str] = []
    # 3.11+ computes it (3.10 reports the venv's own python, which the check below skips)
    base_exe = getattr(sys, "_base_executable", "")
    if base_exe:
        candidates.append(base_exe)
    cfg = _read_cfg(Path(sys.prefix, "pyvenv.cfg"))
    for key in ("base-executable", "executable"):  # virtualenv / CPython 3.11+ record it
        if cfg.get(key):
            candidates.append(cfg[key])
    for home in (cfg.get("home"), os.path.join(sys.base_prefix, "bin")):
        if home:
            candidates += [os.path.join(home, name) for name in names]
    for candidate in candidates:
        if _executable(candidate) and not _inside(candidate, sys.prefix):
            return os.path.abspath(candidate)
    raise BackendError(
        f"cannot find the base interpreter of the virtual environment {sys.prefix} (looked for "
        f"{', '.join(dict.fromkeys(candidates))}); pass the interpreter as the backend option python=..."
    )


def base_prefixes(python: str) -> list[str]:
    """The installation directories of interpreter ``python`` (what an isolated sandbox must see)."""
    if os.path.realpath(python) == os.path.realpath(base_interpreter()):
        found = [sys.base_prefix, sys.base_exec_prefix]
    else:  # another interpreter: <prefix>/bin/python3 by convention
        found = [os.path.dirname(os.path.dirname(os.path.realpath(python)))]
    return list(dict.fromkeys(os.path.realpath(p) for p in found))


def _read_cfg(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


class _Builder(venv.EnvBuilder):
    """venv's builder pointed at a given base interpreter (on 3.10 inside a venv it would pick the
    venv's python), without pip and without activate scripts (nothing sources them)."""

    def __init__(self, base: str, system_site_packages: bool) -> None:
        super().__init__(system_site_packages=system_site_packages, symlinks=True, with_pip=False)
        self._base = base

    def ensure_directories(self, env_dir: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> SimpleNamespace:
        context: SimpleNamespace = super().ensure_directories(env_dir)
        context.executable = self._base
        context.python_dir, context.python_exe = os.path.split(self._base)
        return context

    def setup_scripts(self, context: SimpleNamespace) -> None:
        pass


class SandboxVenv:
    """``<workspace>/.venv``, made from ``base`` with or without the base's site-packages."""

    def __init__(self, workspace: Path, base: str, system_site_packages: bool) -> None:
        self.path = workspace / VENV_DIR
        self.base = base
        self.system_site_packages = system_site_packages

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def ready(self) -> bool:
        return self.python.exists()

    def ensure(self) -> None:
        """Create the venv, or bring an existing one in line with the settings (blocking; a few ms)."""
        if self.path.is_symlink() or (self.path.exists() and not (self.path / MARKER).exists()):
            raise BackendError(
                f"{self.path} exists and was not created by alphora-sandbox; the sandbox keeps its "
                "packages there: rename or remove it"
            )
        if self.path.exists():
            if os.path.realpath(self.python) == os.path.realpath(self.base) and self._sync():
                return
            log.warning(
                "the sandbox environment %s was changed or made from another interpreter than %s; "
                "recreating it (packages installed into it must be installed again)",
                self.path,
                self.base,
            )
            shutil.rmtree(self.path)
        self._create()

    def _create(self) -> None:
        # built next to its place (the workspace root: sandbox code cannot swap it for a symlink) and
        # renamed: a concurrent start on the same workspace sees either no venv or a complete one
        tmp = Path(tempfile.mkdtemp(prefix=".venv-", dir=self.path.parent))
        try:
            tmp.chmod(0o755)
            if os.path.realpath(self.base) == os.path.realpath(base_interpreter()):
                _Builder(self.base, self.system_site_packages).create(str(tmp))
            else:  # another interpreter (maybe another version): only it knows its layout
                argv = [
                    self.base,
                    "-m",
                    "venv",
                    "--without-pip",
                    *(["--system-site-packages"] if self.system_site_packages else []),
                    str(tmp),
                ]
                try:
                    proc = subprocess.run(
                        argv,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise BackendError(f"cannot start {self.base!r} to create the sandbox environment: {exc}") from exc
                if proc.returncode != 0:
                    raise BackendError(
                        f"could not create the sandbox environment with {self.base}: "
                        f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
                    )
            (tmp / MARKER).write_text("created by alphora-sandbox\n")
            try:
                tmp.rename(self.path)
            except OSError:
                if not self.python.exists():  # else another start on this workspace was first
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _sync(self) -> bool:
        """Set the system-site flag and drop the legacy .pth; False if the venv was tampered with.

        Sandbox code can change files in the venv: nothing here follows a symlink it planted."""
        cfg = self.path / "pyvenv.cfg"
        try:
            fd = os.open(cfg, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        with os.fdopen(fd, encoding="utf-8") as f:
            lines = f.read().splitlines()
        want = "true" if self.system_site_packages else "false"
        new = [
            f"include-system-site-packages = {want}"
            if line.partition("=")[0].strip().lower() == "include-system-site-packages"
            else line
            for line in lines
        ]
        if new != lines:
            fd, tmp = tempfile.mkstemp(prefix=".pyvenv.cfg.", dir=self.path)  # a new file, never a planted one
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(new) + "\n")
            os.replace(tmp, cfg)
        inside = os.path.realpath(self.path) + "/"
        for legacy in self.path.glob(f"lib/python*/site-packages/{_LEGACY_PTH}"):
            if os.path.realpath(legacy).startswith(inside):
                legacy.unlink()
        return True


def host_pip_root() -> str | None:
    """The directory holding the pip package this process would import (no import, no subprocess)."""
    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.dirname(os.path.abspath(next(iter(spec.submodule_search_locations))))


@functools.cache
def _probe_pip_root(python: str) -> str | None:
    code = (
        "import importlib.util, os\ns = importlib.util.find_spec('pip')\n"
        "print(os.path.dirname(list(s.submodule_search_locations)[0]) if s and s.submodule_search_locations "
        "else '')"
    )
    try:
        out = subprocess.run(
            [python, "-I", "-c", code], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def pip_root(base: str) -> str:
    """Where the pip that manages a sandbox's venv comes from: the agent's pip, else the base
    interpreter's; PackageError when neither has one."""
    root = host_pip_root() or _probe_pip_root(base)
    if root is None:
        raise PackageError(
            f"no pip to manage the sandbox's packages: neither {sys.executable} nor {base} "
            "can import pip; install pip into one of them (python -m ensurepip)"
        )
    return root
