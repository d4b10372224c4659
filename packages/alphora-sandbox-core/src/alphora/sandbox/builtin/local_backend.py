"""Built-in plugin: the local backend (the runner as a subprocess of the host, in the workspace).

::

    backend = LocalBackend(sandbox_id="test", workspace_path="/tmp/sandbox/test")
    await backend.initialize()
    await backend.start()
    result = await backend.execute_code("print('Hello')")
    await backend.stop()

Every call is forked by the runner in its own session/process group with a minimal environment
(never the host's), rlimits (memory via RLIMIT_DATA, file size, open files, processes) and a
timeout that kills the whole tree. The runner lives in a pids cgroup of its own where one can be
made (:mod:`._cgroup`: ``max_processes`` enforced also for root; ``stop()`` kills what is left in
it). Isolation is weaker than Docker: user code runs as the host
user and can read whatever that user can. File primitives run in-process through
:mod:`alphora.sandbox.runner.safefs` (race-safe, no symlinks, no hard links).

Sandbox code runs on the workspace's own venv (``.venv``, made from the base interpreter when the
sandbox starts), never on the agent's virtualenv; see :mod:`._python_env`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

from ..backend import FILE_CHUNK, entry_to_fileinfo, map_fs_error, map_os_error
from ..errors import BackendError, ConfigurationError
from ..plugins import hookimpl
from ..runner import bootstrap_argv, safefs
from ..runner.backend import RunnerBackend
from ..runner.transport import ProcessConnection, RunnerConnection
from ..types import FileInfo
from ._cgroup import PidsCgroup, create_pids_cgroup
from ._python_env import PIP_BOOT, VENV_DIR, SandboxVenv, base_interpreter, pip_root

__all__ = ["LocalBackend", "base_interpreter", "sandbox_register_backends"]

T = TypeVar("T")

_BIG = 256 * 1024  # above this, file bytes are moved in a worker thread


class LocalBackend(RunnerBackend):
    """Runs code on this machine: a runner subprocess per sandbox, the workspace as its cwd.

    Options: ``system_site_packages`` (default False) lets sandbox code import the base
    interpreter's site-packages too; ``python`` names the base interpreter of the sandbox's venv
    (default: :func:`base_interpreter`, never the agent's virtualenv)."""

    name = "local"
    internal_paths = (".tmp", VENV_DIR)
    scratch_paths = (".tmp",)
    pip_host_env = True

    def __init__(self, sandbox_id: str, workspace_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kwargs)
        self.workspace_path = self.workspace_path.absolute()
        system_site = self.options.get("system_site_packages", False)
        if not isinstance(system_site, bool):
            raise ConfigurationError(
                f"backend option system_site_packages must be true or false, got {system_site!r}",
                field="system_site_packages",
                value=system_site,
            )
        self.system_site_packages = system_site
        #: the interpreter the sandbox's venv is made from
        self.base_python = str(self.options.get("python") or base_interpreter())
        self.probe_python = self.base_python
        self.venv = SandboxVenv(self.workspace_path, self.base_python, system_site)
        #: the sandbox's Python: always its own venv's
        self.python = str(self.venv.python)
        self._venv_synced = False

    @property
    def venv_path(self) -> Path:
        return self.venv.path

    def _venv_python(self) -> Path:
        return self.venv.python

    async def initialize(self) -> None:
        await super().initialize()
        (self.workspace_path / ".tmp").mkdir(exist_ok=True, mode=0o700)

    async def _ensure_venv(self) -> None:
        """Create or check the sandbox's venv once per backend (and again if sandbox code removed it)."""
        if not self._venv_synced or not self.venv.ready():
            await asyncio.to_thread(self.venv.ensure)
            self._venv_synced = True

    def runner_argv(self) -> list[str]:
        """The command that starts the runner (a subclass may wrap it, e.g. in bubblewrap)."""
        return bootstrap_argv(self.python)

    def _runner_argv(self) -> list[str]:
        """The name of earlier versions, for callers (a subclass overrides ``runner_argv``)."""
        return self.runner_argv()

    async def spawn_runner(self) -> RunnerConnection:
        await self._ensure_venv()
        await asyncio.to_thread(self._prepare_spawn)
        argv = self.runner_argv()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(self.workspace_path),
                env=self.runner_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start {self.python!r}: {exc}", sandbox_id=self.sandbox_id) from exc
        if self.pids_cgroup is not None and not self.argv_enters_cgroup:
            self._enter_cgroup(proc.pid)
        return ProcessConnection(proc)

    # -- the pids cgroup (see ._cgroup) ----------------------------------------------------------

    #: tasks the runner itself keeps besides the calls' processes (the runner and its pre-forked spare)
    runner_tasks = 2
    pids_cgroup: PidsCgroup | None = None

    #: the runner's command line moves itself into the cgroup (a wrapper that forks before the runner
    #: does); else the host moves the runner's pid right after spawning it, before the first request
    #: (the runner forks nothing before it gets one, and Python's startup forks nothing)
    argv_enters_cgroup = False

    def _enter_cgroup(self, pid: int) -> None:
        assert self.pids_cgroup is not None
        try:
            self.pids_cgroup.add(pid)
        except OSError as exc:
            raise BackendError(
                f"cannot move the runner into its pids cgroup {self.pids_cgroup.path}: {exc}",
                sandbox_id=self.sandbox_id,
            ) from exc

    def _prepare_spawn(self) -> None:
        """Before the runner starts (blocking): make the sandbox's pids cgroup once, when one can be made."""
        if self.pids_cgroup is None:
            self.pids_cgroup = create_pids_cgroup(
                self.sandbox_id, self.resource_limits.max_processes + self.runner_tasks
            )

    def _release_environment(self) -> None:
        """After the runner is gone (blocking): kill what is left in the pids cgroup and remove it."""
        cgroup, self.pids_cgroup = self.pids_cgroup, None
        if cgroup is not None:
            cgroup.remove()

    async def stop_environment(self) -> None:
        await super().stop_environment()
        await asyncio.to_thread(self._release_environment)

    def same_interpreter(self) -> bool:
        # the venv runs this interpreter's own base binary: same version, so the runner goes pre-compiled
        return os.path.realpath(self.base_python) == os.path.realpath(sys.executable)

    def runner_env(self) -> dict[str, str]:
        env = super().runner_env()
        env["PATH"] = f"{self.venv.path / 'bin'}:{env['PATH']}"
        env["VIRTUAL_ENV"] = str(self.venv.path)
        return env

    # -- packages --------------------------------------------------------------------------------

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        """pip for ``<workspace>/.venv`` only: the host's pip package run by the venv's Python with
        nothing else of the host importable, so it installs into and uninstalls from the venv alone."""
        await self._ensure_venv()
        root = await asyncio.to_thread(self._pip_root)
        return [self.python, "-c", PIP_BOOT, root], {"VIRTUAL_ENV": str(self.venv.path)}

    def _pip_root(self) -> str:
        """The directory holding the pip package, as sandbox code sees it."""
        return pip_root(self.base_python)

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

    async def read_stream(self, path: str, chunk_size: int = FILE_CHUNK) -> AsyncIterator[bytes]:
        fd = await self._do(safefs.open_read, path)
        try:
            while True:
                try:
                    data = await asyncio.to_thread(os.read, fd, chunk_size)
                except OSError as exc:
                    raise map_os_error(exc, path, self.sandbox_id) from exc
                if not data:
                    return
                yield data
        finally:
            os.close(fd)

    async def write_stream(self, path: str, chunks: AsyncIterable[bytes]) -> None:
        writer: safefs.Writer = await self._do(safefs.Writer, path)
        try:
            async for chunk in chunks:  # what the source raises passes through as it is
                if chunk:
                    await self._writer_step(writer.write, path, chunk, big=len(chunk) > _BIG)
            await self._writer_step(writer.commit, path)
        finally:
            writer.abort()  # nothing once committed; the temp file if anything failed

    async def _writer_step(self, fn: Any, path: str, *args: Any, big: bool = False) -> None:
        try:
            if big:
                await asyncio.to_thread(fn, *args)
            else:
                fn(*args)
        except (safefs.PathEscape, OSError) as exc:
            raise map_os_error(exc, path, self.sandbox_id) from exc

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
