"""A deliberately naive backend fails the contract's hard-link, FIFO and symlink-swap cases.

``NaiveBackend`` does what a first attempt does: it checks each component of the host path with
``lstat`` (refusing symlinks it sees) and then opens the path string. It passes the older file
cases, including planted symlinks, yet a hard link to an outside file reads and writes through,
a FIFO blocks the read, and a symlink swapped in between the check and the open is followed. The
contract suite must catch each of these, or it would not protect a third-party backend.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox.backend import (
    Backend,
    OutputCallback,
    ProcessRequest,
    fileinfo_from_stat,
    map_os_error,
    minimal_env,
)
from alphora.sandbox.errors import PathTraversalError
from alphora.sandbox.testing import BackendContractTests
from alphora.sandbox.types import ExecutionResult, ExecutionStatus, FileInfo, ResourceUsage


class NaiveBackend(Backend):
    """lstat-then-open on host paths; no fd-relative walk, no hard-link or file-type check."""

    name = "naive"
    python = sys.executable

    async def start(self) -> None:
        await self.initialize()

    async def stop(self) -> None:
        pass

    async def health_check(self) -> bool:
        return True

    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        argv = {
            "python": [self.python, "-c", request.code],
            "shell": ["/bin/sh", "-c", request.code],
            "file": [self.python, *request.argv],
        }.get(request.kind, list(request.argv))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.workspace_path,
            env={**minimal_env(str(self.workspace_path)), **request.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), request.timeout)
        except asyncio.TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = await proc.communicate()
            return ExecutionResult(
                status=ExecutionStatus.TIMEOUT, stdout=out.decode(), stderr=err.decode(), return_code=None
            )
        rc = proc.returncode
        return ExecutionResult(
            status=ExecutionStatus.SUCCESS if rc == 0 else ExecutionStatus.FAILED,
            stdout=out.decode(),
            stderr=err.decode(),
            return_code=rc,
        )

    def _host(self, rel: str) -> Path:
        """The host path, after an lstat of every component (the check a race defeats)."""
        path = self.workspace_path
        for part in [p for p in rel.split("/") if p]:
            path = path / part
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    raise PathTraversalError(f"symlink: {rel}", path=rel)
            except FileNotFoundError:
                pass
        return path

    async def _do(self, rel: str, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            if isinstance(exc, PathTraversalError):
                raise
            raise map_os_error(exc, rel, self.sandbox_id) from exc
        except shutil.Error as exc:
            raise map_os_error(OSError(str(exc)), rel, self.sandbox_id) from exc

    async def read_bytes(self, path: str) -> bytes:
        return await self._do(path, lambda: self._host(path).read_bytes())  # type: ignore[no-any-return]

    async def write_bytes(self, path: str, data: bytes) -> None:
        def write() -> None:
            host = self._host(path)
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(data)

        await self._do(path, write)

    async def stat(self, path: str) -> FileInfo | None:
        def info() -> FileInfo | None:
            try:
                return fileinfo_from_stat(path, os.lstat(self._host(path)))
            except FileNotFoundError:
                return None

        return await self._do(path, info)  # type: ignore[no-any-return]

    async def list_dir(self, path: str, recursive: bool = False) -> list[FileInfo]:
        def listing() -> list[FileInfo]:
            base = self._host(path)
            names = sorted(base.rglob("*") if recursive else base.iterdir())
            return [fileinfo_from_stat(p.relative_to(self.workspace_path).as_posix(), os.lstat(p)) for p in names]

        return await self._do(path, listing)  # type: ignore[no-any-return]

    async def remove(self, path: str) -> bool:
        def rm() -> bool:
            host = self._host(path)
            if not os.path.lexists(host):
                return False
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
            else:
                host.unlink()
            return True

        return await self._do(path, rm)  # type: ignore[no-any-return]

    async def copy(self, source: str, dest: str) -> None:
        def cp() -> None:
            src, dst = self._host(source), self._host(dest)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copyfile(src, dst)

        await self._do(source, cp)

    async def move(self, source: str, dest: str) -> None:
        def mv() -> None:
            dst = self._host(dest)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._host(source), dst)

        await self._do(source, mv)

    async def mkdir(self, path: str) -> None:
        await self._do(path, lambda: self._host(path).mkdir(parents=True, exist_ok=True))

    async def get_resource_usage(self) -> ResourceUsage:
        return ResourceUsage()


class NaiveContract(BackendContractTests):
    race_bound = 30.0
    fifo_bound = 3.0

    async def make_backend(self, workspace: Path) -> Backend:
        return NaiveBackend("naive", workspace)


@pytest.fixture
async def naive(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = NaiveBackend("naive", tmp_path / "ws")
    await backend.start()
    yield backend
    await backend.destroy()


#: the cases added for hostile workspace entries: each must fail on the naive backend
NEW_CASES = [
    "test_hard_link_to_an_outside_file_is_never_read_or_written_through",
    "test_fifo_is_refused_not_waited_on",
    "test_symlink_swap_race_never_reaches_outside",
]
#: older cases the naive backend passes, so the failures above are the new cases' doing
CONTROL_CASES = [
    "test_planted_symlinks_are_refused",
    "test_file_roundtrip_and_info",
    "test_list_remove_copy_move",
    "test_missing_file",
]


@pytest.mark.parametrize("case", NEW_CASES)
async def test_naive_backend_fails_the_new_case(naive: Backend, case: str) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)) as failure:
        await getattr(NaiveContract(), case)(naive)
    print(f"{case}: {failure.typename}: {str(failure.value).splitlines()[0][:300]}")


@pytest.mark.parametrize("case", CONTROL_CASES)
async def test_naive_backend_passes_the_older_file_cases(naive: Backend, case: str) -> None:
    await getattr(NaiveContract(), case)(naive)
