"""End to end: hostile paths and planted links through the real Sandbox file API never leave the workspace.

Sandbox code (``execute_shell``) plants symlinks and hard links to a sentinel directory outside the
workspace (``ln -s <outside> loot`` and friends, a FIFO, a link up to ``/``). Hypothesis then drives
read/write/list/delete/copy/move/stat/mkdir with generated hostile paths. After every example the
whole temporary tree outside the workspace must be byte-for-byte unchanged (names, contents,
inodes, link counts, mtimes), and no call may have returned the sentinel's secret bytes or the
names of files that exist only outside. A race test flips a path between a regular file and a
symlink to the outside while the file API works on it in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphora.sandbox import Sandbox, SandboxError
from tests._support.loop_thread import LoopThread

T = TypeVar("T")

SECRET = b"TOP-SECRET-" + secrets.token_hex(8).encode()
OUTSIDE_ONLY_NAME = "only-outside-" + secrets.token_hex(4)


def snapshot(root: Path, exclude: Path) -> dict[str, tuple[Any, ...]]:
    """Everything observable about the tree under ``root`` except the workspace ``exclude``."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        if d == exclude or exclude in d.parents:
            dirnames[:] = []
            continue
        dirnames[:] = [n for n in dirnames if d / n != exclude]
        for name in [*dirnames, *filenames]:
            p = d / name
            st_ = os.lstat(p)
            content: bytes | str | None = None
            if stat.S_ISREG(st_.st_mode):
                content = p.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                content = os.readlink(p)
            # st_nlink is left out: sandbox code may legitimately add or drop its own hard links
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_ino, st_.st_size, st_.st_mtime_ns, content)
    return out


class World:
    """A started sandbox under ``tmp/sandboxes`` and a sentinel directory ``tmp/outside``."""

    def __init__(self, tmp: Path, runner: LoopThread) -> None:
        self.tmp = tmp
        self.runner = runner
        self.outside = tmp / "outside"
        (self.outside / "victim_dir").mkdir(parents=True)
        (self.outside / "secret.txt").write_bytes(SECRET)
        (self.outside / "hardlink_target.txt").write_bytes(SECRET + b"-hard")
        (self.outside / "victim_dir" / "inner.txt").write_bytes(SECRET + b"-inner")
        (self.outside / OUTSIDE_ONLY_NAME).write_bytes(SECRET)
        self.sandbox = Sandbox.create_local(base_path=tmp / "sandboxes")
        runner.run(self.sandbox.start())
        self.ws = self.sandbox.workspace_path
        self.rel_outside = os.path.relpath(self.outside, self.ws)
        self.plant()
        self.before = snapshot(tmp, self.ws)

    def plant(self) -> None:
        """Sandbox code plants links to the outside (fresh every example)."""
        o = self.outside
        script = f"""
set -e
find . -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {{}} +
echo benign > benign.txt
echo benign2 > benign2.txt
mkdir -p sub/deeper d
echo inside > sub/deeper/file.txt
ln -s {o}/secret.txt link_file
ln -s {o} link_dir
ln -s {o} loot
ln -s link_dir chain
ln -s ../../.. up
ln -s / d/root
ln -s {o}/victim_dir sub/victim
ln -s {o}/does-not-exist-yet dangling
ln {o}/hardlink_target.txt hard
mkfifo fifo
"""
        result = self.runner.run(self.sandbox.execute_shell(script, timeout=30))
        assert result.success, result.stderr

    def check(self, returned: list[Any]) -> None:
        after = snapshot(self.tmp, self.ws)
        assert after == self.before, _diff(self.before, after)
        assert SECRET.decode() not in repr(returned), "a file API call returned the outside secret"
        # error messages echo the path asked for; results (FileInfo lists, bytes) must not show outside names
        results = [r for r in returned if not isinstance(r, _Refused)]
        assert OUTSIDE_ONLY_NAME not in repr(results), "a listing showed a file that exists only outside"

    def close(self) -> None:
        self.runner.run(self.sandbox.destroy())


class _Refused(str):
    """The message of an error a file API call raised (kept apart from real results)."""


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"outside tree changed: added={added} removed={removed} changed={changed}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    runner = LoopThread()
    w = World(tmp_path_factory.mktemp("guard"), runner)
    try:
        yield w
    finally:
        w.close()
        runner.close()


# -- hostile paths ----------------------------------------------------------------------------

_PLANTED = ["link_file", "link_dir", "loot", "chain", "up", "d/root", "sub/victim", "dangling", "hard", "fifo"]
# (OUTSIDE_ONLY_NAME is not a tail: writing a file of that name *inside* the workspace is legitimate)
_TAILS = [
    "",
    "secret.txt",
    "victim_dir",
    "victim_dir/inner.txt",
    "new.txt",
    "..",
    "../..",
    "etc/passwd",
    "x/y/z.txt",
    "hardlink_target.txt",
    "does-not-exist-yet",
]


def _hostile(w: World) -> st.SearchStrategy[str]:
    heads = st.sampled_from(
        [
            *_PLANTED,
            "",
            ".",
            "..",
            "../..",
            "/",
            "/workspace",
            str(w.ws),
            str(w.outside),
            w.rel_outside,
            "sub/..",
            "sub/../..",
            "sub/deeper/../../..",
            "~",
            "benign.txt",
            "sub",
            "./link_dir",
            str(w.ws) + "/..",
            "/workspace/..",
            "link_dir/..",
            "sub/victim/..",
        ]
    )
    junk = st.text(alphabet=st.sampled_from(list("ab./\\\x00~")), max_size=6)
    return st.builds(
        lambda h, t, j: "/".join(p for p in (h, t) if p) + j,
        heads,
        st.sampled_from(_TAILS),
        st.one_of(st.just(""), junk),
    )


_OPS = [
    "read",
    "read_text",
    "write",
    "save",
    "list",
    "list_rec",
    "delete",
    "copy_from",
    "copy_to",
    "move_from",
    "move_to",
    "exists",
    "info",
    "mkdir",
    "download",
    "list_glob",
]


def _op(sandbox: Sandbox, op: str, path: str) -> Callable[[], Awaitable[Any]]:
    table: dict[str, Callable[[], Awaitable[Any]]] = {
        "read": lambda: sandbox.read_file_bytes(path),
        "read_text": lambda: sandbox.read_file(path),
        "write": lambda: sandbox.write_file_bytes(path, b"pwned"),
        "save": lambda: sandbox.save_file(path, "pwned"),
        "list": lambda: sandbox.list_files(path),
        "list_rec": lambda: sandbox.list_files(path, recursive=True),
        "delete": lambda: sandbox.delete_file(path),
        "copy_from": lambda: sandbox.copy_file(path, "copied"),
        "copy_to": lambda: sandbox.copy_file("benign.txt", path),
        "move_from": lambda: sandbox.move_file(path, "moved"),
        "move_to": lambda: sandbox.move_file("benign2.txt", path),
        "exists": lambda: sandbox.file_exists(path),
        "info": lambda: sandbox.get_file_info(path),
        "mkdir": lambda: sandbox.make_dir(path),
        "download": lambda: sandbox.download_file(path),
        "list_glob": lambda: sandbox.list_files(path, recursive=True, pattern="*"),
    }
    return table[op]


async def _attempt(sandbox: Sandbox, steps: list[tuple[str, str]]) -> list[Any]:
    returned: list[Any] = []
    for op, path in steps:
        try:
            returned.append(await asyncio.wait_for(_op(sandbox, op, path)(), timeout=20))
        except (SandboxError, OSError) as exc:  # refused or not found: fine, as long as nothing leaked
            returned.append(_Refused(exc))
        # anything else (TimeoutError from a blocked FIFO, a raw ValueError …) fails the test
    return returned


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_hostile_paths_and_planted_links_never_reach_outside(world: World, data: st.DataObject) -> None:
    world.plant()
    steps = data.draw(st.lists(st.tuples(st.sampled_from(_OPS), _hostile(world)), min_size=1, max_size=4))
    returned = world.runner.run(_attempt(world.sandbox, steps))
    world.check(returned)


@pytest.mark.parametrize("op", _OPS)
@pytest.mark.parametrize(
    "path",
    [
        *_PLANTED,
        "link_dir/secret.txt",
        "loot/victim_dir/inner.txt",
        "chain/secret.txt",
        "up/outside/secret.txt",
        "d/root/etc/passwd",
        "sub/victim/inner.txt",
        "dangling",
        "link_dir/new.txt",
    ],
)
def test_each_operation_on_each_planted_link(world: World, op: str, path: str) -> None:
    """The same property, exhaustively for the planted links (a fixed table next to the random search)."""
    world.plant()
    returned = world.runner.run(_attempt(world.sandbox, [(op, path)]))
    world.check(returned)


def test_reads_through_links_are_refused_not_empty(world: World) -> None:
    """Refusals name the path (PathTraversalError), so an agent learns why."""
    from alphora.sandbox import PathTraversalError

    world.plant()

    async def go() -> None:
        for path in (
            "link_file",
            "loot/secret.txt",
            "hard",
            "../outside/secret.txt",
            str(world.outside / "secret.txt"),
        ):
            with pytest.raises(PathTraversalError) as info:
                await world.sandbox.read_file_bytes(path)
            assert info.value.path
        # the workspace itself still works
        assert await world.sandbox.read_file("sub/deeper/file.txt") == "inside\n"
        assert await world.sandbox.read_file(str(world.ws / "benign.txt")) == "benign\n"

    world.runner.run(go())
    world.check([])


# -- races ------------------------------------------------------------------------------------


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _flipper(
    ws: Path,
    name: str,
    make_link: Callable[[Path], None],
    make_real: Callable[[Path], None],
    stop: threading.Event,
    flips: list[int],
) -> None:
    """Swap ``ws/name`` between a real entry and a symlink to the outside, as fast as possible."""
    dest = ws / name
    n = 0
    flips.append(0)  # flips[0]: swaps so far, updated as they happen (the hammers wait for enough)
    while not stop.is_set():
        for maker in (make_link, make_real):
            new, old = ws / f".flip-new-{n}", ws / f".flip-old-{n}"
            maker(new)
            try:
                os.rename(dest, old)
            except FileNotFoundError:
                pass
            try:
                os.rename(new, dest)
            except OSError:  # the file API created something there in between
                _remove(new)
            _remove(old)
            n += 1
            flips[0] = n


def _cleanup_flips(ws: Path) -> None:
    for entry in ws.glob(".flip-*"):
        _remove(entry)


#: the race tests run until both outcomes were seen (the race really happened), at most this many ops
RACE_MIN_OPS, RACE_MAX_OPS = 300, 6000


def test_race_file_swapped_for_a_symlink_during_reads_and_writes(world: World) -> None:
    world.plant()
    ws = world.ws

    def make_file(p: Path) -> None:
        p.write_bytes(b"regular")

    def make_link(p: Path) -> None:
        os.symlink(world.outside / "secret.txt", p)

    stop = threading.Event()
    flips: list[int] = []
    thread = threading.Thread(target=_flipper, args=(ws, "flip", make_link, make_file, stop, flips))

    async def hammer() -> tuple[int, int, list[Any]]:
        ok = refused = 0
        returned: list[Any] = []
        for i in range(RACE_MAX_OPS):
            if i >= RACE_MIN_OPS and ok and refused and flips and flips[0] > 10:
                break
            try:
                if i % 2:
                    data = await world.sandbox.read_file_bytes("flip")
                    returned.append(data)
                else:
                    await world.sandbox.write_file_bytes("flip", b"written-by-api")
                ok += 1
            except (SandboxError, OSError) as exc:
                refused += 1
                returned.append(_Refused(exc))
        return ok, refused, returned

    thread.start()
    try:
        ok, refused, returned = world.runner.run(hammer(), timeout=120)
    finally:
        stop.set()
        thread.join(10)
    _cleanup_flips(ws)
    world.check(returned)
    assert flips
    assert flips[0] > 10, "the flipper did not run"
    assert ok > 0, "the file API never saw the regular file"
    assert refused > 0, "the file API never met the symlink: the race was not exercised"


def test_race_directory_swapped_for_a_symlink(world: World) -> None:
    world.plant()
    ws = world.ws

    def make_dir(p: Path) -> None:
        p.mkdir()
        (p / "secret.txt").write_bytes(b"inside")

    def make_link(p: Path) -> None:
        os.symlink(world.outside, p)

    stop = threading.Event()
    flips: list[int] = []
    thread = threading.Thread(target=_flipper, args=(ws, "flipdir", make_link, make_dir, stop, flips))

    def seen_inside(returned: list[Any]) -> bool:
        return any(isinstance(r, bytes) and r == b"inside" for r in returned)

    async def hammer() -> list[Any]:
        returned: list[Any] = []
        for i in range(RACE_MAX_OPS):
            if i >= RACE_MIN_OPS and i % 3 == 0 and seen_inside(returned) and flips and flips[0] > 10:
                break
            path = ("flipdir/secret.txt", "flipdir/new.txt", "flipdir")[i % 3]
            try:
                if i % 3 == 0:
                    returned.append(await world.sandbox.read_file_bytes(path))
                elif i % 3 == 1:
                    await world.sandbox.write_file_bytes(path, b"written-by-api")
                else:
                    returned.append(await world.sandbox.list_files(path, recursive=True))
            except (SandboxError, OSError) as exc:
                returned.append(_Refused(exc))
        return returned

    thread.start()
    try:
        returned = world.runner.run(hammer(), timeout=120)
    finally:
        stop.set()
        thread.join(10)
    _cleanup_flips(ws)
    world.check(returned)
    assert flips
    assert flips[0] > 10, "the flipper did not run"
    assert seen_inside(returned), "the real directory was never read"


def test_race_driven_by_sandbox_code(world: World) -> None:
    """Sandbox code itself flips the link (as hostile code would) while the host reads in a loop."""
    world.plant()
    flip_code = f"""
import os, time
end = time.time() + 3
n = 0
while time.time() < end:
    os.symlink({str(world.outside / "secret.txt")!r}, '.tmp-link'); os.replace('.tmp-link', 'swap')
    open('.tmp-file', 'w').write('regular'); os.replace('.tmp-file', 'swap')
    n += 1
print(n)
"""

    async def go() -> tuple[list[Any], str]:
        flipper = asyncio.create_task(world.sandbox.run(flip_code, timeout=30))
        returned: list[Any] = []
        while not flipper.done():
            try:
                returned.append(await world.sandbox.read_file_bytes("swap"))
            except (SandboxError, OSError) as exc:
                returned.append(_Refused(exc))
            await asyncio.sleep(0)
        result = await flipper
        return returned, result.stdout

    returned, out = world.runner.run(go(), timeout=60)
    world.check(returned)
    assert int(out.strip() or 0) > 10, "the sandbox-side flipper did not run"
    assert len(returned) > 10, "file reads did not run while the sandbox code was flipping"
    assert any(r == b"regular" for r in returned), "the regular file was never read"
