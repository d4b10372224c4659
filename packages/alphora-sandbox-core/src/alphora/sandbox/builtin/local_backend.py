"""Built-in plugin: the local backend (the runner as a subprocess of the host, in the workspace).

::

    backend = LocalBackend(sandbox_id="test", workspace_path="/tmp/sandbox/test")
    await backend.initialize()
    await backend.start()
    result = await backend.execute_code("print('Hello')")
    await backend.stop()

Every call is forked by the runner in its own session/process group with a minimal environment
(never the host's), rlimits (memory via RLIMIT_DATA, file size, open files, processes) and a
timeout that kills the whole tree. Isolation is weaker than Docker: user code runs as the host
user and can read whatever that user can. File primitives run in-process through
:mod:`alphora.sandbox.runner.safefs` (race-safe, no symlinks, no hard links).
"""

from __future__ import annotations

import asyncio
import os
import site
import sys
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BackendError
from ..plugins import hookimpl
from ..runner import bootstrap_argv, safefs
from ..runner.client import ProcessConnection, RunnerBackend, RunnerConnection, entry_to_fileinfo, map_fs_error
from ..types import FileInfo

__all__ = ["LocalBackend", "sandbox_register_backends"]

T = TypeVar("T")

_VENV = ".venv"
_VENV_MARK = ".alphora-venv"
_BIG = 256 * 1024  # above this, file bytes are moved in a worker thread


class LocalBackend(RunnerBackend):
    """Runs code on this machine: a runner subprocess per sandbox, the workspace as its cwd."""

    name = "local"
    internal_paths = (".tmp", _VENV)

    def __init__(self, sandbox_id: str, workspace_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kwargs)
        self.workspace_path = self.workspace_path.absolute()
        #: the host interpreter until pip_command() creates the sandbox's own venv
        self.python = str(self.options.get("python") or sys.executable)
        self._venv_lock: asyncio.Lock | None = None

    @property
    def venv_path(self) -> Path:
        return self.workspace_path / _VENV

    def _venv_python(self) -> Path:
        return self.venv_path / "bin" / "python"

    async def initialize(self) -> None:
        await super().initialize()
        (self.workspace_path / ".tmp").mkdir(exist_ok=True, mode=0o700)
        if (self.venv_path / _VENV_MARK).exists() and self._venv_python().exists():
            self.python = str(self._venv_python())

    def _runner_argv(self) -> list[str]:
        """The command that starts the runner (a subclass may wrap it, e.g. in bubblewrap)."""
        return bootstrap_argv(self.python)

    async def _spawn_runner(self) -> RunnerConnection:
        argv = self._runner_argv()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(self.workspace_path),
                env=self._runner_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start {self.python!r}: {exc}", sandbox_id=self.sandbox_id) from exc
        return ProcessConnection(proc)

    def _same_interpreter(self) -> bool:
        # the host interpreter, or the sandbox venv made from it
        return self.python in (sys.executable, str(self._venv_python()))

    def _runner_env(self) -> dict[str, str]:
        env = super()._runner_env()
        bindir = os.path.dirname(self.python)
        if bindir:
            env["PATH"] = f"{bindir}:{env['PATH']}"
        if self.python == str(self._venv_python()):
            env["VIRTUAL_ENV"] = str(self.venv_path)
        return env

    # -- packages --------------------------------------------------------------------------------

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        """Create ``<workspace>/.venv`` on first use (``--system-site-packages --without-pip`` plus a
        .pth that keeps the host interpreter's packages importable) and move the runner onto it;
        pip then installs into the venv only. Returns ``[venv python, "-m", "pip"]``."""
        if self._venv_lock is None:
            self._venv_lock = asyncio.Lock()
        async with self._venv_lock:
            venv_python = self._venv_python()
            if not (self.venv_path / _VENV_MARK).exists():
                await self._create_venv()
            if self.python != str(venv_python):
                self.python = str(venv_python)
                await self._restart_runner()
        return [str(venv_python), "-m", "pip"], {"VIRTUAL_ENV": str(self.venv_path)}

    async def _create_venv(self) -> None:
        host = sys.executable
        proc = await asyncio.create_subprocess_exec(
            host, "-m", "venv", "--system-site-packages", "--without-pip", str(self.venv_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise BackendError(f"could not create the sandbox venv: {out.decode(errors='replace')[-2000:]}",
                               sandbox_id=self.sandbox_id)
        probe = await asyncio.create_subprocess_exec(
            str(self._venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={"LANG": "C.UTF-8"},
        )
        purelib = (await probe.communicate())[0].decode().strip()
        await asyncio.to_thread(self._link_host_site, purelib)

    def _link_host_site(self, purelib: str) -> None:
        # the host venv's packages (pip among them) stay importable, after the sandbox's own
        host_paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
        if purelib:
            Path(purelib, "_alphora_host_site.pth").write_text("".join(f"{p}\n" for p in host_paths))
        (self.venv_path / _VENV_MARK).write_text("created by alphora-sandbox\n")

    # -- files: in-process safefs (no round trip to the runner) -----------------------------------

    async def _do(self, fn: Any, *args: Any, big: bool = False) -> Any:
        await self.initialize()
        try:
            if big:
                return await asyncio.to_thread(fn, str(self.workspace_path), *args)
            return fn(str(self.workspace_path), *args)
        except (safefs.PathEscape, OSError, TypeError) as exc:
            path = getattr(exc, "path", None) or getattr(exc, "filename", None) or (args[0] if args else "")
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise map_fs_error(type(exc).__name__, msg, str(path), self.sandbox_id) from exc

    async def read_bytes(self, path: str) -> bytes:
        st = await self._do(safefs.stat, path)
        return bytes(await self._do(safefs.read, path, big=bool(st and st["size"] > _BIG)))

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._do(safefs.write, path, bytes(data), big=len(data) > _BIG)

    async def stat(self, path: str) -> FileInfo | None:
        entry = await self._do(safefs.stat, path)
        return entry_to_fileinfo(entry) if entry else None

    async def list_dir(self, path: str, recursive: bool = False) -> list[FileInfo]:
        return [entry_to_fileinfo(e) for e in await self._do(safefs.listdir, path, recursive, big=recursive)]

    async def remove(self, path: str) -> bool:
        return bool(await self._do(safefs.remove, path, big=True))

    async def copy(self, source: str, dest: str) -> None:
        await self._do(safefs.copy, source, dest, big=True)

    async def move(self, source: str, dest: str) -> None:
        await self._do(safefs.move, source, dest)

    async def mkdir(self, path: str) -> None:
        await self._do(safefs.mkdir, path)


@hookimpl
def sandbox_register_backends(register: Any) -> None:
    register("local", LocalBackend)
