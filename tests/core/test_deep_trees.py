"""Deep directory trees: destroy, delete, list, copy, save and restore on local and isolated.

Sandbox code builds the trees the way hostile code would (``mkdir`` + ``chdir`` in a loop: a
10,000-level path is far longer than PATH_MAX, so ``os.makedirs`` cannot make it). Every walk must
be free of recursion limits: trees the file API can name (1,500 levels, 3,000 bytes) work end to
end; deeper ones are deleted and destroyed, and listing, copying and saving them fail with a
FileSystemError naming the limit, having written nothing. Race tests move a directory out of the
workspace while a walk is inside it: the walk must stop, never continue in the directory it lands
in. The Docker tier is covered in tests/docker/test_docker_deep_trees.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import FileSystemError, LocalBackend, Sandbox, SandboxStatus
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from alphora.sandbox.runner import safefs
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox.storage.local import LocalStorage

LIMIT = f"{safefs.MAX_PATH_BYTES} bytes"


def build(levels: int, name: str = "d", leaf: str = "leaf.txt") -> str:
    """Sandbox code: ``keep/top.txt`` plus ``levels`` nested ``name`` folders with ``leaf`` at the bottom."""
    return (
        "import os\n"
        "os.makedirs('keep', exist_ok=True)\n"
        "open('keep/top.txt', 'w').write('top')\n"
        f"for _ in range({levels}):\n"
        f"    os.mkdir({name!r}); os.chdir({name!r})\n"
        f"open({leaf!r}, 'w').write('leaf')\n"
        "print('built')\n"
    )


def chain(levels: int, name: str = "d") -> str:
    return "/".join([name] * levels)


@pytest.fixture(params=["local", "isolated"])
async def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    if request.param == "isolated" and not bwrap_available():
        if os.environ.get("CI"):
            pytest.fail("CI must provide bubblewrap (bwrap): .ci/run installs it", pytrace=False)
        pytest.skip("bubblewrap (bwrap) is not installed: apt install bubblewrap")
    box = Sandbox.create(request.param, base_path=tmp_path / "sandboxes")
    await box.start()
    try:
        yield box
    finally:
        if box.status is not SandboxStatus.DESTROYED:
            await box.destroy()


async def _run(box: Sandbox, code: str) -> None:
    result = await box.run(code, timeout=120)
    assert result.success, result.stderr[-2000:]
    assert result.stdout == "built\n"


def _storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(StorageConfig.local(str(tmp_path / "storage")))


# -- trees too deep to name: deleted and destroyed, everything else refused clearly -----------------


@pytest.mark.slow
async def test_destroy_removes_a_10000_level_tree_made_by_sandbox_code(sandbox: Sandbox) -> None:
    await _run(sandbox, build(10_000))
    workspace = sandbox.workspace_path
    await sandbox.destroy()
    assert not workspace.exists(), "destroy left the workspace behind"


@pytest.mark.slow
async def test_delete_file_removes_a_10000_level_tree(sandbox: Sandbox) -> None:
    await _run(sandbox, build(10_000))
    assert await sandbox.delete_file("d") is True
    assert not await sandbox.file_exists("d")
    assert [f.path for f in await sandbox.list_files("", recursive=True)] == ["keep", "keep/top.txt"]


@pytest.mark.slow
async def test_a_10000_level_tree_fails_list_copy_and_save_clearly_writing_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    await _run(sandbox, build(10_000))
    with pytest.raises(FileSystemError, match=LIMIT) as listed:
        await sandbox.list_files("", recursive=True)
    assert "path too long" in str(listed.value)
    assert len(str(listed.value)) < 400, "the message must not carry the whole 20,000-byte path"

    with pytest.raises(FileSystemError, match=LIMIT):
        await sandbox.copy_file("d", "copy")
    assert not await sandbox.file_exists("copy"), "a failed copy left a partial copy"

    storage = _storage(tmp_path)
    with pytest.raises(FileSystemError, match=f"save_workspace stored nothing: .*{LIMIT}"):
        await sandbox.save_workspace(storage, "deep")
    assert await storage.list("") == []

    # the shallow part stays usable
    assert [f.path for f in await sandbox.list_files("")] == ["d", "keep"]
    assert await sandbox.read_file("keep/top.txt") == "top"


@pytest.mark.slow
async def test_save_skips_a_too_deep_tree_that_is_excluded(sandbox: Sandbox, tmp_path: Path) -> None:
    await _run(sandbox, build(10_000))
    storage = _storage(tmp_path)
    assert await sandbox.save_workspace(storage, "deep", exclude=["d"]) == ["keep/top.txt"]
    assert await storage.list("") == ["deep/keep/top.txt"]


# -- trees the file API can name: everything works --------------------------------------------------


async def test_1500_levels_list_copy_save_and_restore_work(sandbox: Sandbox, tmp_path: Path) -> None:
    await _run(sandbox, build(1_500))
    leaf = chain(1_500) + "/leaf.txt"

    listed = [f.path for f in await sandbox.list_files("", recursive=True)]
    assert len(listed) == 1_500 + 3
    assert listed[-3:] == [leaf, "keep", "keep/top.txt"]

    await sandbox.copy_file("d", "e")
    assert await sandbox.read_file("e/" + chain(1_499) + "/leaf.txt") == "leaf"

    storage = _storage(tmp_path)
    try:
        saved = await sandbox.save_workspace(storage, "deep")
        assert saved == sorted([leaf, "e/" + chain(1_499) + "/leaf.txt", "keep/top.txt"])

        assert await sandbox.delete_file("d") is True
        assert await sandbox.delete_file("e") is True
        assert sorted(await sandbox.restore_workspace(storage, "deep")) == saved
        assert await sandbox.read_file(leaf) == "leaf"
    finally:
        # pytest's own clean-up of old tmp dirs recurses (shutil.rmtree): leave no deep tree behind
        safefs.rmtree(tmp_path / "storage")


async def test_make_dir_refuses_paths_over_the_limit_and_accepts_up_to_it(sandbox: Sandbox) -> None:
    with pytest.raises(FileSystemError, match=f"5999 bytes in 3000 levels.*{LIMIT}"):
        await sandbox.make_dir("a/" * 3000)
    assert await sandbox.list_files("") == [], "a refused make_dir created something"

    widest = "a/" * 2048  # 4095 bytes once the trailing '/' is dropped: exactly the limit
    await sandbox.make_dir(widest)
    assert await sandbox.file_exists(widest)
    with pytest.raises(FileSystemError, match=LIMIT):
        await sandbox.make_dir(widest + "b")
    with pytest.raises(FileSystemError, match=LIMIT):
        await sandbox.write_file(widest + "b", "x")
    assert len(await sandbox.list_files("", recursive=True)) == 2048

    with pytest.raises(FileSystemError, match="256 bytes, the limit is 255 bytes"):
        await sandbox.write_file("x" * 256, "too long a name")
    await sandbox.write_file("x" * 255, "fine")
    with pytest.raises(FileSystemError, match="256 bytes, the limit is 255 bytes"):
        await sandbox.make_dir("ok/" + "é" * 128)  # 256 bytes of UTF-8 in 128 characters

    workspace = sandbox.workspace_path
    await sandbox.destroy()
    assert not workspace.exists()


async def test_deep_symlinks_are_removed_never_followed(sandbox: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "secret.txt").write_text("keep me")
    (outside / "inner" / "deeper.txt").write_text("keep me too")
    code = build(3_000) + (
        f"os.symlink({str(outside)!r}, 'to-outside')\n"
        f"os.symlink({str(outside / 'secret.txt')!r}, 'to-secret')\n"
        "for _ in range(1500):\n    os.chdir('..')\n"
        f"os.symlink({str(outside)!r}, 'midway')\n"
    )
    await _run(sandbox, code)
    workspace = sandbox.workspace_path
    await sandbox.destroy()
    assert not workspace.exists()
    assert (outside / "secret.txt").read_text() == "keep me"
    assert (outside / "inner" / "deeper.txt").read_text() == "keep me too"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become an unprivileged user (uid 65534)")
def test_destroy_removes_directories_sandbox_code_made_unreadable() -> None:
    """On the local tier sandbox code runs as the host user and may chmod its folders to 000 or 500;
    a host process of the same (non-root) user must still remove the whole workspace."""
    base = Path(tempfile.mkdtemp(prefix="alphora-locked-", dir="/tmp"))
    os.chown(base, 65534, 65534)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 3
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                ws = base / "ws"
                ws.mkdir()
                os.chdir(ws)
                for i in range(300):
                    os.mkdir("d")
                    os.chdir("d")
                    Path("f.txt").write_text(str(i))
                for i in range(300):  # going up, lock every folder: 000, 500 (no write), 100 (no read)
                    os.chdir("..")
                    os.chmod("d", (0o000, 0o500, 0o100)[i % 3])
                os.chdir("/")
                asyncio.run(LocalBackend(sandbox_id="locked", workspace_path=ws).destroy())
                code = 2 if ws.exists() else 0
            except BaseException:  # noqa: BLE001 - the child reports anything by its exit code
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "destroy left a locked workspace behind (2) or failed (3)"
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- safefs directly: the ascent through '..' is checked ------------------------------------------


def test_a_walk_stops_when_its_directory_was_moved_away(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    fd = os.open(tmp_path / "a" / "b", os.O_RDONLY | os.O_DIRECTORY)
    expected = os.stat(tmp_path / "a")
    os.rename(tmp_path / "a" / "b", tmp_path / "elsewhere" / "b")  # '..' of fd is now 'elsewhere'
    with pytest.raises(OSError, match="moved while it was being walked") as info:
        safefs._up(fd, (expected.st_dev, expected.st_ino), "a/b")
    assert info.value.errno == errno.ESTALE


SENTINEL = "only-outside-" + secrets.token_hex(4)


class _Mover:
    """Moves ``tree/a`` out of the workspace (next to look-alike folders) and back, as fast as it can."""

    def __init__(self, inside: Path, outside: Path) -> None:
        self.inside, self.outside = inside, outside
        self.stop = threading.Event()
        self.moves = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                os.rename(self.inside, self.outside)
            except OSError:
                time.sleep(0.0005)
                continue
            time.sleep(0.0005)
            with contextlib.suppress(OSError):
                os.rename(self.outside, self.inside)
            self.moves += 1
            time.sleep(0.0005)

    def __enter__(self) -> _Mover:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        with contextlib.suppress(OSError):
            os.rename(self.outside, self.inside)


def _race_world(tmp_path: Path, depth: int = 30, files: int = 30) -> tuple[Path, Path, Path]:
    """``ws/tree/a/...`` (deep, many files) with siblings ``s0``…``s9``; ``tree/a`` is parked at
    ``outside/moved``, where ``outside`` holds look-alikes (an empty ``a``, folders ``s0``…``s9``), so a
    walk that ascended from ``a`` into ``outside`` would act on them."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    level = ws / "tree" / "a"
    for _ in range(depth):
        level.mkdir(parents=True)
        for i in range(files):
            (level / f"f{i}").write_text("x")
        level = level / "d"
    for i in range(10):
        (ws / "tree" / f"s{i}").mkdir()
        (ws / "tree" / f"s{i}" / "inside.txt").write_text("inside")
        (outside / f"s{i}").mkdir(parents=True, exist_ok=True)
        (outside / f"s{i}" / SENTINEL).write_text("outside")
    (outside / "a").mkdir()
    return ws, outside, outside / "moved"


def _outside_intact(outside: Path) -> None:
    assert (outside / "a").is_dir(), "a removal removed a directory outside the workspace"
    for i in range(10):
        assert (outside / f"s{i}" / SENTINEL).read_text() == "outside", "a walk acted outside the workspace"


#: attempts before the race tests give up waiting for the walk to be caught mid-move
RACE_ATTEMPTS = 300


def _race(tmp_path: Path, op: Callable[[Path], Any], check: Callable[[Any], None]) -> None:
    caught = 0
    for attempt in range(RACE_ATTEMPTS):
        root = tmp_path / f"try{attempt}"
        ws, outside, parked = _race_world(root)
        with _Mover(ws / "tree" / "a", parked) as mover:
            time.sleep(0.001)
            try:
                check(op(ws))
            except OSError as exc:
                # ESTALE: the walk noticed the move under it; ENOENT: the directory was already gone
                # when the walk reached it (a lost race, nothing touched): both are refusals
                if exc.errno not in (errno.ESTALE, errno.ENOENT):
                    raise
                caught += exc.errno == errno.ESTALE
        _outside_intact(outside)
        assert mover.moves > 0, "the mover never ran"
        shutil.rmtree(root)
        if caught >= 3:
            return
    pytest.fail(f"the walk was caught mid-move only {caught} times in {RACE_ATTEMPTS} tries: race not exercised")


def test_race_remove_never_continues_in_a_directory_moved_out(tmp_path: Path) -> None:
    _race(tmp_path, lambda ws: safefs.remove(ws, "tree"), lambda removed: None)


def test_race_listing_never_continues_in_a_directory_moved_out(tmp_path: Path) -> None:
    def check(entries: list[dict[str, Any]]) -> None:
        assert all(SENTINEL not in e["name"] for e in entries), "a listing showed a file that exists only outside"

    _race(tmp_path, lambda ws: safefs.listdir(ws, "tree", recursive=True), check)


def test_race_copy_never_continues_in_a_directory_moved_out(tmp_path: Path) -> None:
    def copy(ws: Path) -> Path:
        safefs.copy(ws, "tree", "copy")
        return ws / "copy"

    def check(copied: Path) -> None:
        names = {name for _, _, files in os.walk(copied) for name in files}
        assert SENTINEL not in names, "a copy took a file that exists only outside"

    _race(tmp_path, copy, check)
