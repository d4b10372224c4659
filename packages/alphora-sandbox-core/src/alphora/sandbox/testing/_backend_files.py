"""The contract's hostile workspace entries: hard links to outside files, FIFOs, and a symlink-swap
race, all planted by sandbox code. A mixin of :class:`~alphora.sandbox.testing.BackendContractTests`
(which provides the ``backend`` fixture); its knobs are ``fifo_bound``, ``race_bound`` and
``race_rounds``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import time
from typing import Any

import pytest

from ..backend import Backend
from ..errors import SandboxError


class HostileEntryCases:
    """Hard links, FIFOs and a symlink-swap race against the backend's file primitives."""

    # -- hostile workspace entries: hard links, FIFOs, a symlink-swap race --------------------------
    #
    # Sandbox code plants these itself. The "outside" files live where user code can write outside
    # the workspace (the workspace's parent directory, else /tmp) as *user code* sees it, which is
    # also what a backend's file primitives would reach if they followed the entry.

    #: seconds a file primitive may take on a FIFO before the contract calls it hung
    fifo_bound: float = 10.0
    #: seconds the symlink-swap race may run to see both outcomes (a read and a refusal)
    race_bound: float = 60.0
    #: the race goes on until each outcome (a read, a refusal) was seen this many times
    race_rounds: int = 300

    async def _code_json(self, backend: Backend, code: str, timeout: float = 60.0) -> Any:
        r = await backend.execute_code(code, timeout=timeout)
        assert r.success, r
        return json.loads(r.stdout.strip().splitlines()[-1])

    async def _outside_dir(self, backend: Backend, tag: str) -> str:
        """Make a fresh directory outside the workspace, writable by user code; its path as user
        code sees it."""
        path: str = await self._code_json(backend, _MAKE_OUTSIDE.replace("TAG", repr(tag)))
        return path

    async def _snapshot(self, backend: Backend, outside: str) -> dict[str, str]:
        code = (
            "import json, os\nd = OUT\nprint(json.dumps({n: open(os.path.join(d, n)).read() "
            "for n in sorted(os.listdir(d))}))"
        ).replace("OUT", repr(outside))
        files: dict[str, str] = await self._code_json(backend, code)
        return files

    async def test_hard_link_to_an_outside_file_is_never_read_or_written_through(self, backend: Backend) -> None:
        outside = await self._outside_dir(backend, "hardlink")
        planted = await self._code_json(backend, _PLANT_HARD_LINKS.replace("OUT", repr(outside)))
        if not planted:
            # user code could not link an outside file into the workspace at all (a separate mount:
            # EXDEV): the hazard cannot arise on this backend, and the plant code proved it
            return
        before = await self._snapshot(backend, outside)
        assert before == {"secret.txt": "outside secret", "target.txt": "outside target"}, before
        with pytest.raises(SandboxError):
            leaked = await backend.read_bytes("hl.txt")
            pytest.fail(f"read through a hard link returned {leaked!r}")
        with contextlib.suppress(SandboxError):
            await backend.copy("hl.txt", "copied.txt")
        copied = await backend.stat("copied.txt")
        if copied is not None:  # a copy may be refused; if made, it must not carry the outside bytes
            assert b"outside" not in await _read_or_empty(backend, "copied.txt")
        await backend.write_bytes("mine.txt", b"inside")
        await backend.write_bytes("mine2.txt", b"inside")
        # each destination is a hard link to the outside target: replacing the name is fine,
        # writing into the inode is not
        with contextlib.suppress(SandboxError):
            await backend.write_bytes("hl_w.txt", b"written by the file API")
        with contextlib.suppress(SandboxError):
            await backend.copy("mine.txt", "hl_c.txt")
        with contextlib.suppress(SandboxError):
            await backend.move("mine2.txt", "hl_m.txt")
        with contextlib.suppress(SandboxError):
            await backend.remove("hl.txt")
        assert await self._snapshot(backend, outside) == before  # the outside files: unread, unchanged

    async def test_fifo_is_refused_not_waited_on(self, backend: Backend) -> None:
        made = await backend.execute_code("import os; os.mkfifo('pipe'); os.makedirs('d'); os.mkfifo('d/pipe')")
        assert made.success, made
        for name, call in (
            ("read_bytes", lambda: backend.read_bytes("pipe")),
            ("copy", lambda: backend.copy("pipe", "pipe_copy")),
            ("copy of a tree", lambda: backend.copy("d", "d_copy")),
        ):
            try:
                await asyncio.wait_for(call(), self.fifo_bound)
            except SandboxError:
                continue  # the clear error the contract asks for
            except asyncio.TimeoutError:
                await _unblock_fifos(backend)
                pytest.fail(f"{name} on a FIFO hung for {self.fifo_bound:g}s instead of raising")
            if name == "read_bytes":
                pytest.fail("read_bytes on a FIFO returned instead of raising")
            copied = await backend.stat("pipe_copy" if name == "copy" else "d_copy/pipe")
            assert copied is None or not copied.is_directory, copied  # a tree copy may skip a FIFO
        assert (await backend.stat("pipe")) is not None  # the entries are listed, just not opened

    async def test_symlink_swap_race_never_reaches_outside(self, backend: Backend) -> None:
        outside = await self._outside_dir(backend, "race")
        await backend.write_bytes("d/f.txt", b"inside")
        await backend.write_bytes("g.txt", b"inside")
        stop = f"stop-{secrets.token_hex(4)}"
        swapper = asyncio.ensure_future(
            backend.execute_code(
                _SWAPPER.replace("OUT", repr(outside)).replace("STOP", repr(stop)), timeout=self.race_bound + 30
            )
        )
        outcomes: collections.Counter[str] = collections.Counter()
        leaks: list[str] = []
        deadline = time.monotonic() + self.race_bound
        try:
            while time.monotonic() < deadline and not swapper.done():
                for path in ("d/f.txt", "g.txt"):
                    try:
                        data = await backend.read_bytes(path)
                    except SandboxError:
                        outcomes["refused"] += 1
                    else:
                        outcomes["read"] += 1
                        if data != b"inside":
                            leaks.append(f"read_bytes({path!r}) returned {data!r}")
                    with contextlib.suppress(SandboxError):
                        await backend.write_bytes(path, b"inside")
                    with contextlib.suppress(SandboxError):
                        await backend.copy(path, "copy.txt")
                        copied = await _read_or_empty(backend, "copy.txt")
                        if b"outside" in copied:
                            leaks.append(f"copy({path!r}) copied {copied!r}")
                    with contextlib.suppress(SandboxError):
                        for info in await backend.list_dir("d"):
                            if info.name != "f.txt":
                                leaks.append(f"list_dir('d') listed {info.path!r}")
                if leaks or (outcomes["read"] >= self.race_rounds and outcomes["refused"] >= self.race_rounds):
                    break
        finally:
            await backend.write_bytes(stop, b"")
            swapped = await swapper
        assert swapped.success, swapped
        assert "swaps" in swapped.stdout, swapped
        after = await self._snapshot(backend, outside)
        assert not leaks, leaks[:5]
        assert after == {"f.txt": "outside secret", "g.txt": "outside secret"}, after
        assert outcomes["read"], f"the race was not exercised: {dict(outcomes)}"
        assert outcomes["refused"], f"the race was not exercised: {dict(outcomes)}"


async def _read_or_empty(backend: Backend, path: str) -> bytes:
    try:
        return await backend.read_bytes(path)
    except SandboxError:
        return b""


async def _unblock_fifos(backend: Backend) -> None:
    """Open every FIFO of the test for writing and close it, so a reader stuck in open() goes on."""
    await backend.execute_code(
        "import os\nfor p in ('pipe', 'd/pipe'):\n    for _ in range(20):\n        try:\n"
        "            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))\n        except OSError:\n            pass\n",
        timeout=30,
    )


#: makes a fresh directory outside the workspace (its parent, else /tmp) and prints its path
_MAKE_OUTSIDE = """
import json, os, tempfile
ws = os.path.realpath(os.getcwd())
for base in (os.path.dirname(ws), '/tmp', os.path.expanduser('~')):
    if base == ws or base.startswith(ws + os.sep):
        continue
    try:
        d = tempfile.mkdtemp(prefix='alphora-contract-outside-' + TAG + '-', dir=base)
    except OSError:
        continue
    print(json.dumps(d))
    break
else:
    raise SystemExit('no writable directory outside the workspace')
"""

#: links outside files into the workspace; prints true, or false if linking across is impossible
_PLANT_HARD_LINKS = """
import errno, json, os
d = OUT
for name, text in (('secret.txt', 'outside secret'), ('target.txt', 'outside target')):
    with open(os.path.join(d, name), 'w') as f:
        f.write(text)
try:
    os.link(os.path.join(d, 'secret.txt'), 'hl.txt')
    for name in ('hl_w.txt', 'hl_c.txt', 'hl_m.txt'):
        os.link(os.path.join(d, 'target.txt'), name)
except OSError as exc:
    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES):
        raise
    print(json.dumps(False))
else:
    print(json.dumps(True))
"""

#: swaps d/ and g.txt for symlinks to the outside directory and file until STOP appears
_SWAPPER = """
import os, shutil, time
out = OUT
for name in ('f.txt', 'g.txt'):
    with open(os.path.join(out, name), 'w') as f:
        f.write('outside secret')

def place(src, dst):
    # rename src to dst; if the file API recreated dst in between (a write makes parents), drop that
    for _ in range(1000):
        try:
            os.rename(src, dst)
            return
        except OSError:
            if os.path.islink(dst) or not os.path.isdir(dst):
                try:
                    os.unlink(dst)
                except FileNotFoundError:
                    pass
            else:
                shutil.rmtree(dst, ignore_errors=True)
    raise SystemExit('could not place ' + dst)

n = 0
end = time.monotonic() + 300
while not os.path.exists(STOP) and time.monotonic() < end:
    os.rename('d', 'd_real')
    os.symlink(out, 'd_tmp')
    place('d_tmp', 'd')
    os.symlink(os.path.join(out, 'g.txt'), 'g_tmp')
    os.rename('g_tmp', 'g.txt')
    n += 1
    os.unlink('d')
    place('d_real', 'd')
    with open('g_tmp', 'w') as f:
        f.write('inside')
    os.rename('g_tmp', 'g.txt')
print('swaps', n)
"""
