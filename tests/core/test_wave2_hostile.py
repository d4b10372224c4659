"""Hostile tests of the wave-2 features, played by sandboxed code and by hostile clients and storages:
rich outputs, the pool's reset, checkpoints from untrusted storage, MCP over HTTP, fork and the sync API.

Each test says in its docstring whether it FOUND a hole (it failed before the fix named there) or shows
that a defence HELD. docs/rich-outputs.md, serving.md, checkpoints.md, mcp-http.md and fork.md list
the attacks under "Attacks we test".
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import os
import pickle
import secrets
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from alphora.sandbox import Sandbox, SandboxPool, SecurityPolicy
from alphora.sandbox.builtin.isolated_backend import bwrap_available
from alphora.sandbox.checkpoint import BLOBS, CheckpointError, _canonical, _read_capped, _sha
from alphora.sandbox.pool import PROBE
from alphora.sandbox.runner.display import MAX_BUNDLE_TYPES, MAX_CELL_BYTES, MAX_CELL_OUTPUTS, MAX_OUTPUT_BYTES
from alphora.sandbox.session import PythonSession
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox.storage.local import LocalStorage
from alphora.sandbox.tools.results import attachment_entries
from alphora.sandbox.types import Attachment
from tests._support.rich import PNG_SIGNATURE

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    sb = Sandbox.create_local(base_path=tmp_path_factory.mktemp("hostile2") / "sb")
    await sb.start()
    try:
        yield sb
    finally:
        await sb.destroy()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def py(sandbox: Sandbox) -> AsyncIterator[PythonSession]:
    async with sandbox.session("hostile") as session:
        yield session


# -- rich outputs: the interpreter's caps are in the reach of the code it runs ------------------------


async def test_lifting_the_interpreters_caps_does_not_lift_the_hosts(py: PythonSession) -> None:
    """FOUND (fixed: the runner and the host cap outputs again, runner/display.py OutputBudget): the
    cell set ``display.__self__.max_output = max_cell = 10**12`` and a 64 MiB output reached the host."""
    big = MAX_OUTPUT_BYTES * 2
    r = await py.run(
        "d = display.__self__\n"
        "d.max_output = d.max_cell = 10**12\n"
        f"for _ in range(5): display({{'text/plain': 'x' * {big}}}, raw=True)"
    )
    try:
        assert r.success, r.stderr
        assert len(r.attachments) == 5
        assert all(len(a.data) <= MAX_OUTPUT_BYTES and a.truncated for a in r.attachments)
        assert sum(len(a.data) for a in r.attachments) <= MAX_CELL_BYTES + 5 * 100  # + the cut marks
        assert r.attachments[0].text.endswith(f"[… output cut: {big:,} bytes, over the size cap]\n")
    finally:
        await py.run(f"d.max_output, d.max_cell = {MAX_OUTPUT_BYTES}, {MAX_CELL_BYTES}")


async def test_a_flood_of_tiny_outputs_is_cut_with_one_mark(py: PythonSession) -> None:
    """FOUND (fixed: MAX_CELL_OUTPUTS per cell, counted in the interpreter, the runner and the host):
    50,000 empty outputs weigh 0 bytes against the byte caps and all reached the host as Attachments."""
    r = await py.run("for i in range(5000): display({'text/plain': ''}, raw=True)\nprint('done')")
    assert r.success, r.stderr
    assert r.stdout == "done\n"
    assert len(r.attachments) == MAX_CELL_OUTPUTS + 1
    mark = r.attachments[-1]
    assert (mark.name, mark.truncated) == ("outputs-dropped.txt", True)
    assert f"more than {MAX_CELL_OUTPUTS} outputs" in mark.text
    again = await py.run("display({'text/plain': 'next cell'}, raw=True)")  # the count is per cell
    assert [a.text for a in again.attachments] == ["next cell"]


async def test_forged_display_frames_are_checked_outside_the_interpreter(py: PythonSession) -> None:
    """FOUND (fixed: the runner checks each frame): cell code that writes display frames itself (the
    interpreter's ``send``) got any number of MIME types per output and any payload through."""
    r = await py.run(
        "import base64\n"
        "item = lambda i: {'mime_type': 'text/x-%d' % i, 'name': 'n', 'data': base64.b64encode(b'%d' % i).decode()}\n"
        "display.__self__.send({'ev': 'display', 'a': [item(i) for i in range(100)]})\n"
        "display.__self__.send({'ev': 'display', 'a': [{'mime_type': 7, 'data': 'AAAA'}, {'mime_type': 'text/plain',"
        " 'data': '!!not base64!!'}, 'junk', {'mime_type': 'text/plain', 'data': base64.b64encode(b'ok').decode()}]})\n"
        "display.__self__.send({'ev': 'display', 'a': 'not a list'})\n"
        "print('still fine')"
    )
    assert r.success, r.stderr
    assert r.stdout == "still fine\n"
    assert [a.mime_type for a in r.attachments] == [f"text/x-{i}" for i in range(MAX_BUNDLE_TYPES)] + ["text/plain"]
    assert r.attachments[-1].data == b"ok"


async def test_a_repr_that_hangs_times_out_and_the_session_lives_on(py: PythonSession) -> None:
    """HELD: a ``_repr_html_`` that never returns is the cell's own time; the timeout ends it and the
    session keeps its variables."""
    r = await py.run(
        "kept = 42\nclass Hang:\n    def _repr_html_(self):\n        while True: pass\nHang()", timeout=1.5
    )
    assert r.timed_out
    assert (await py.run("kept")).value == "42"


async def test_bytes_that_only_claim_to_be_an_image_are_not_shown_to_the_model() -> None:
    """FOUND (fixed: tools/results.py checks the format's signature): sandbox code names the MIME type,
    so ``display({'image/png': b'not a png'}, raw=True)`` was sent to the model as an image, and a model
    API refuses a request whose image does not decode (the conversation breaks on every later turn)."""
    real = Attachment(mime_type="image/png", data=PNG_SIGNATURE + b"\0" * 20, name="a.png")
    fake = Attachment(mime_type="image/png", data=b"<svg>not a png</svg>", name="b.png")
    jpeg_named_webp = Attachment(mime_type="image/webp", data=b"RIFF\0\0\0\0AVI ", name="c.webp")
    entries, shown = attachment_entries((real, fake, jpeg_named_webp), 1000)
    assert shown == (real,)
    assert [e["shown"] for e in entries] == [True, False, False]
    assert entries[1]["note"] == "not shown: the data is not image/png (it lacks that format's signature)"


# -- the pool's reset: a holder that hides its changes from the fingerprint -------------------------

#: rewrite .venv/pyvenv.cfg in place (same size) and put its mtime back
SAME_SIZE_TAMPER = r"""
import os
p = ".venv/pyvenv.cfg"
st = os.stat(p)
data = open(p, "rb").read()
new = data.replace(b"version", b"VERSION", 1)
assert len(new) == len(data) and new != data
open(p, "wb").write(new)
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
st2 = os.stat(p)
print(st2.st_size == st.st_size and st2.st_mtime_ns == st.st_mtime_ns)
"""

#: replace .venv/bin/python (what the pool ran its probe with) by a wrapper that answers the probe with
#: the clean fingerprint (computed first, with the real interpreter) and runs the real one otherwise
LYING_INTERPRETER = r"""
import os, subprocess, sys
venv_python = ".venv/bin/python"
real = os.path.realpath(venv_python)
clean = subprocess.run([venv_python, "-I", "-S", "-c", PROBE, ".venv"], capture_output=True, text=True).stdout
bin_dir = os.stat(".venv/bin")
os.remove(venv_python)
with open(venv_python, "w") as f:
    f.write("#!/bin/sh\nif [ \"$1\" = -I ]; then echo '%s'; exit 0; fi\nexec %s \"$@\"\n" % (clean.strip(), real))
os.chmod(venv_python, 0o755)
os.utime(".venv/bin", ns=(bin_dir.st_atime_ns, bin_dir.st_mtime_ns))
print("planted")
"""


@pytest.mark.parametrize("attack", [SAME_SIZE_TAMPER, LYING_INTERPRETER], ids=["same-size+utime", "lying-python"])
async def test_a_holder_cannot_hide_a_change_of_the_environment_from_the_reset(tmp_path: Path, attack: str) -> None:
    """FOUND (fixed: the fingerprint hashes contents and symlink targets, and runs on the base
    interpreter, pool.py): a file of the venv rewritten in place with its size and mtime put back, or
    a venv python that answers the probe itself, passed the reset, and the next holder got the change."""
    async with SandboxPool("local", size=1, base_path=tmp_path) as pool:
        async with pool.acquire(timeout=30) as first:
            r = await first.run(attack.replace("PROBE", repr(PROBE)))
            assert r.success, r.stderr
        await pool.settle()
        stats = pool.stats()
        assert (stats.resets, stats.reset_failures) == (0, 1)  # destroyed, not reset
        async with pool.acquire(timeout=30) as second:
            assert second.sandbox_id != first.sandbox_id
            r = await second.run(
                "import os; print(os.path.islink('.venv/bin/python'), b'VERSION' in open('.venv/pyvenv.cfg', 'rb').read())"
            )
            assert r.stdout == "True False\n", r.stderr


async def test_a_double_forked_daemon_does_not_survive_the_release(tmp_path: Path) -> None:
    """HELD: a holder's grandchild in its own session (double fork + setsid, parent gone) is killed at
    the release like any other of its processes."""
    pidfile = tmp_path / "daemon.pid"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "        while True: time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    async with SandboxPool("local", size=1, base_path=tmp_path / "pool") as pool:
        async with pool.acquire(timeout=30) as sb:
            assert (await sb.run(code)).success
        daemon = int(pidfile.read_text())
        await pool.settle()
        try:
            proc = psutil.Process(daemon)
        except psutil.NoSuchProcess:
            return
        _, alive = await asyncio.to_thread(psutil.wait_procs, [proc], 10)
        assert alive == [], f"daemon {daemon} outlived the release"


@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap (bwrap) is not installed")
async def test_isolated_holder_leaves_nothing_in_shm_tmp_or_home(tmp_path: Path) -> None:
    """HELD (isolated): what a holder writes to /dev/shm, /tmp and its home is gone for the next
    holder of the same sandbox (private mounts, and the home is in the wiped workspace)."""
    places = "import os\nplaces = ['/dev/shm', '/tmp', os.path.expanduser('~')]\n"
    async with SandboxPool("isolated", size=1, base_path=tmp_path) as pool:
        async with pool.acquire(timeout=60) as first:
            r = await first.run(places + "for d in places: open(os.path.join(d, 'left'), 'w').write('x')")
            assert r.success, r.stderr
        await pool.settle()
        async with pool.acquire(timeout=60) as second:
            assert second.sandbox_id == first.sandbox_id  # reset, not replaced
            r = await second.run(places + "print([os.path.exists(os.path.join(d, 'left')) for d in places])")
            assert r.stdout == "[False, False, False]\n", r.stderr


async def test_cancelled_acquires_never_leak_or_double_hand_out(tmp_path: Path) -> None:
    """HELD: 12 callers on a pool of 2, half of them cancelled while they wait or check health: every
    sandbox comes back, none is held by two callers at once."""
    holders: set[str] = set()
    twice: list[str] = []

    async def use(pool: SandboxPool) -> None:
        async with pool.acquire(timeout=60) as sb:
            if sb.sandbox_id in holders:
                twice.append(sb.sandbox_id)
            holders.add(sb.sandbox_id)
            await asyncio.sleep(0.05)
            holders.discard(sb.sandbox_id)

    async with SandboxPool("local", size=2, base_path=tmp_path, on_release="destroy") as pool:
        tasks = [asyncio.create_task(use(pool)) for _ in range(12)]
        await asyncio.sleep(0.02)
        for t in tasks[::2]:
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
        await pool.settle()
        stats = pool.stats()
        assert twice == []
        assert (stats.in_use, stats.waiting) == (0, 0)
        assert stats.idle + stats.creating <= 2


# -- checkpoints from untrusted storage ----------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def storage(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(StorageConfig.local(str(tmp_path_factory.mktemp("hostile-store"))))
    await store.connect()
    yield store
    await store.close()


async def _forge(storage: LocalStorage, name: str, body: Any) -> None:
    """A manifest as whoever can write the storage makes it: its checksum is its own, so it passes."""
    doc = {"body": body, "sha256": _sha(_canonical(body))}
    await storage.put(f"checkpoints/{name}/manifest.json", json.dumps(doc).encode())


async def _blob(storage: LocalStorage, data: bytes) -> str:
    digest = _sha(data)
    await storage.put(BLOBS + digest, data)
    return digest


ENV = {"python": "3.11", "tag": "cpython-311", "platform": "linux-x86_64", "requirements": [], "blob": None}
BASE = {"format": 1, "name": "x", "created": "", "backend": "local", "environment": ENV, "sessions": {}}
ZERO = "0" * 64

MALFORMED = {
    "files-not-a-table": {**BASE, "files": ["a"]},
    "file-entry-a-string": {**BASE, "files": {"a": "zz"}},
    "digest-an-int": {**BASE, "files": {"a": {"sha256": 5, "size": 1}}},
    "digest-a-key-path": {**BASE, "files": {"a": {"sha256": "../x/manifest.json", "size": 1}}},
    "no-files": dict(BASE),
    "environment-a-string": {**BASE, "files": {}, "environment": "e"},
    "sessions-a-list": {**BASE, "files": {}, "sessions": [1]},
    "session-without-blob": {**BASE, "files": {}, "sessions": {"s": {"blob": None}}},
    "body-a-list": [1],
    "file-and-folder": {**BASE, "files": {"a": {"sha256": ZERO, "size": 1}, "a/b": {"sha256": ZERO, "size": 1}}},
    "into-the-scratch-folder": {**BASE, "files": {".alphora-checkpoint": {"sha256": ZERO, "size": 1}}},
}


@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_manifest_is_refused_with_a_checkpoint_error(
    storage: LocalStorage, tmp_path: Path, case: str
) -> None:
    """FOUND (fixed: checkpoint._body_problem checks the manifest's shape): a manifest with a valid
    checksum but the wrong shape raised AttributeError, TypeError or KeyError from inside resume (or,
    for a file that is also a folder, failed half-way through writing files)."""
    await _forge(storage, case, MALFORMED[case])
    with pytest.raises(CheckpointError, match=r"corrupted|format"):
        await Sandbox.resume(storage, case, backend="local", base_path=tmp_path / "sb")
    assert not (tmp_path / "sb").exists() or list((tmp_path / "sb").iterdir()) == []


@pytest.mark.parametrize("path", ["../escape.txt", "/tmp/escape.txt", "a/../../escape.txt", "a\0b", "./a"])
async def test_a_manifest_cannot_write_outside_the_workspace(storage: LocalStorage, tmp_path: Path, path: str) -> None:
    """HELD: paths that climb out, absolute paths, NUL bytes and unnormalized paths are refused
    before any sandbox exists."""
    digest = await _blob(storage, b"pwned")
    await _forge(storage, "escape", {**BASE, "files": {path: {"sha256": digest, "size": 5}}})
    with pytest.raises(CheckpointError, match="not a workspace"):
        await Sandbox.resume(storage, "escape", backend="local", base_path=tmp_path / "sb")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "sb").exists() or list((tmp_path / "sb").iterdir()) == []


async def test_a_blob_that_fails_its_checksum_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    """HELD: a blob whose bytes are not its name's sha256 is refused before anything is written."""
    digest = _sha(b"what the manifest promised")
    await storage.put(BLOBS + digest, b"what an attacker stored")
    await _forge(storage, "swapped", {**BASE, "files": {"f.txt": {"sha256": digest, "size": 26}}})
    with pytest.raises(CheckpointError, match="fails its checksum"):
        await Sandbox.resume(storage, "swapped", backend="local", base_path=tmp_path / "sb")


async def test_enormous_blobs_and_manifests_are_refused_unread(tmp_path: Path) -> None:
    """FOUND (fixed: resume checks sizes in the storage first, checkpoint.py): a manifest, or a blob
    it names, of any size was downloaded whole into host memory before its checksum was checked.
    Here sparse files of 64 MiB and 65 MiB; a storage can hold terabytes the same way."""
    root = tmp_path / "store"
    store = LocalStorage(StorageConfig.local(str(root)))
    await store.connect()
    try:
        digest = _sha(b"promised")
        await store.put(BLOBS + digest, b"")
        os.truncate(root / BLOBS / digest, 64 << 20)
        await _forge(store, "big-blob", {**BASE, "files": {"f.bin": {"sha256": digest, "size": 8}}})
        policy = SecurityPolicy(max_file_size_mb=1)
        with pytest.raises(CheckpointError, match=r"67,108,864 bytes, over the new sandbox's max_file_size_mb"):
            await Sandbox.resume(store, "big-blob", backend="local", base_path=tmp_path / "sb", security_policy=policy)
        await _forge(store, "big-manifest", {})
        os.truncate(root / "checkpoints/big-manifest/manifest.json", 65 << 20)
        with pytest.raises(CheckpointError, match=r"is 68,157,440 bytes .* it was not read"):
            await Sandbox.resume(store, "big-manifest", backend="local", base_path=tmp_path / "sb")
    finally:
        await store.close()


def _hostile_env_tar(outside: Path) -> bytes:
    """An environment tar that climbs out, names an absolute path, and plants a symlink to write through."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:

        def add(info: tarfile.TarInfo, data: bytes = b"") -> None:
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

        add(tarfile.TarInfo("../../../../../../../../" + str(outside / "dotdot.txt").lstrip("/")), b"x")
        add(tarfile.TarInfo(str(outside / "absolute.txt")), b"x")
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        add(link)
        add(tarfile.TarInfo("link/through.txt"), b"x")
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
        add(hard)
    return buf.getvalue()


async def test_a_hostile_environment_tar_writes_nothing_outside(
    sandbox: Sandbox, storage: LocalStorage, tmp_path: Path
) -> None:
    """HELD: the environment tar is unpacked in the sandbox with the ``data`` filter: no member lands
    outside the environment, whether by ``..``, an absolute name, a symlink or a hard link."""
    await sandbox.checkpoint(storage, "genuine")  # the Python, tag and platform of this host
    doc = json.loads(await storage.get("checkpoints/genuine/manifest.json"))
    outside = tmp_path / "outside"
    outside.mkdir()
    body = doc["body"]
    body["environment"]["blob"] = await _blob(storage, _hostile_env_tar(outside))
    body["sessions"] = {}
    await _forge(storage, "hostile-env", body)
    resumed = await Sandbox.resume(storage, "hostile-env", backend="local", base_path=tmp_path / "sb")
    async with resumed:
        assert resumed.resume_report is not None
        assert resumed.resume_report.environment.startswith("not restored: unpacking failed")
    assert list(outside.iterdir()) == []


async def test_a_sparse_giant_in_the_workspace_is_not_read_by_the_host(storage: LocalStorage, tmp_path: Path) -> None:
    """FOUND (fixed: checkpoint._read_capped): sandbox code makes a sparse file of any size in an
    instant (here 8 MiB over a 1 MiB policy; 50 GB costs the same), and the checkpoint read it whole
    into host memory. Over the policy's max_file_size_mb it is refused by name; exclude= leaves it out."""
    policy = SecurityPolicy(max_file_size_mb=1)
    async with Sandbox.create_local(base_path=tmp_path / "sb", security_policy=policy) as sb:
        assert (await sb.run("open('giant.bin', 'wb').truncate(8 << 20)")).success
        with pytest.raises(CheckpointError, match=r"file 'giant.bin' is 8,388,608 bytes, over .*max_file_size_mb=1"):
            await sb.checkpoint(storage, "giant")
        assert (await sb.checkpoint(storage, "giant", exclude=["giant.bin"])).files == 0
        # listed at 0 bytes, then grown before it is read (the race the listing's size cannot see)
        with pytest.raises(CheckpointError, match=r"or more \(it grew while the checkpoint was taken\)"):
            await _read_capped(sb, "giant.bin", "file 'giant.bin'", 0)


#: swap a file of the workspace for a symlink to the host's secret and back, as fast as possible
SWAPPER = r"""
import os, sys, time
secret = sys.argv[1]
end = time.time() + 20
while time.time() < end and not os.path.exists("stop"):
    for i in range(20):
        try:
            os.symlink(secret, "f%d.l" % i)
            os.replace("f%d.l" % i, "f%d.txt" % i)  # now a symlink out of the workspace
            open("f%d.n" % i, "w").write("mine")
            os.replace("f%d.n" % i, "f%d.txt" % i)
        except OSError:
            pass
"""


async def test_symlink_swaps_during_a_checkpoint_never_save_a_host_file(storage: LocalStorage, tmp_path: Path) -> None:
    """HELD: sandbox code swaps workspace files for symlinks to a host secret and back while
    checkpoints are taken; reads do not follow symlinks, so no blob ever holds the secret (a
    checkpoint may fail on a file that changed under it; at least one goes through)."""
    secret = tmp_path / "host-secret.txt"
    token = secrets.token_hex(16)
    secret.write_text(token)
    errors: list[str] = []
    async with Sandbox.create_local(base_path=tmp_path / "sb") as sb:
        await sb.write_file("swap.py", SWAPPER)
        await sb.execute_shell(f"python swap.py {secret} >/dev/null 2>&1 &")
        await asyncio.sleep(0.2)
        taken = 0
        for i in range(8):
            try:
                await sb.checkpoint(storage, f"race-{i}")
                taken += 1
            except Exception as exc:  # noqa: BLE001 - a file swapped mid-checkpoint may fail it: fine
                errors.append(f"{type(exc).__name__}: {exc}")
        await sb.write_file("stop", "")
    assert taken > 0, errors
    for key in await storage.list(BLOBS):
        assert token.encode() not in await storage.get(key)


class _Payload:
    """Unpickling it runs code: records which process did the unpickling."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        code = f"import os; open({self.marker!r}, 'w').write(str(os.getpid()))"
        return (exec, (code,))


async def test_a_hostile_pickle_is_unpickled_only_inside_the_sandbox(storage: LocalStorage, tmp_path: Path) -> None:
    """HELD: a session's variables are unpickled by the session's interpreter in the sandbox, never
    by the host process that runs resume."""
    marker = tmp_path / "unpickled-by.pid"
    blob = await _blob(storage, pickle.dumps({"evil": pickle.dumps(_Payload(str(marker)))}))
    session = {"blob": blob, "saved": ["evil"], "modules": {}, "unpicklable": {}}
    async with Sandbox.create_local(base_path=tmp_path / "probe") as probe:  # this host's Python, tag, platform
        await probe.checkpoint(storage, "probe")
    body = json.loads(await storage.get("checkpoints/probe/manifest.json"))["body"]
    body["sessions"] = {"default": session}
    await _forge(storage, "pickled", body)
    resumed = await Sandbox.resume(storage, "pickled", backend="local", base_path=tmp_path / "sb")
    async with resumed:
        assert marker.exists()
        assert int(marker.read_text()) != os.getpid()


# -- MCP over HTTP: a hostile client --------------------------------------------------------------------

needs_mcp = pytest.mark.skipif(
    importlib.util.find_spec("mcp") is None, reason="the MCP HTTP server needs the mcp SDK (alphora-sandbox[mcp])"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests._support.mcp_http import Server, start_server

    tmp = tmp_path_factory.mktemp("mcp-hostile")
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    (tmp / "tokens.txt").write_text("".join(f"{n} {t}\n" for n, t in tokens.items()))
    proc, url = start_server(tmp, "--token-file", str(tmp / "tokens.txt"), "--idle-timeout", "60")
    srv = Server(proc, url, tmp / "sandboxes", tokens)
    try:
        yield srv
    finally:
        assert srv.stop() == 0
        assert srv.workspaces() == []


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


async def _open(http: Any, server: Any, who: str) -> str:
    opened = await http.post(server.url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {server.tokens[who]}"})
    assert opened.status_code == 200, opened.text
    return str(opened.headers["mcp-session-id"])


@needs_mcp
async def test_two_session_ids_in_one_request_are_refused(server: Any) -> None:
    """FOUND (fixed: the gate answers 400, tools/mcp_http.py): the gate read the last mcp-session-id
    header and the SDK the first, so a DELETE ``[own, other]`` ended the SDK's session while the gate
    kept its sandbox (and its place in the per-token limit), and a call's activity went to the wrong
    session (the idle reaper could end a session in the middle of its call)."""
    import httpx2

    async with httpx2.AsyncClient() as http:
        own = await _open(http, server, "bob")
        auth = ("authorization", f"Bearer {server.tokens['bob']}")
        twice = [auth, ("mcp-session-id", own), ("mcp-session-id", "0" * 32)]
        answer = await http.delete(server.url, headers=twice)
        assert answer.status_code == 400
        assert "more than one mcp-session-id header" in answer.text
        still = await http.post(
            server.url, json=LIST, headers={**ACCEPT, "Authorization": auth[1], "mcp-session-id": own}
        )
        assert still.status_code == 200
        assert (await http.delete(server.url, headers=[auth, ("mcp-session-id", own)])).status_code < 400


@needs_mcp
async def test_another_tokens_delete_does_not_end_a_session(server: Any) -> None:
    """HELD: bob cannot end alice's session (404, as if it did not exist); it keeps working."""
    import httpx2

    async with httpx2.AsyncClient() as http:
        sid = await _open(http, server, "alice")
        alice = {**ACCEPT, "Authorization": f"Bearer {server.tokens['alice']}", "mcp-session-id": sid}
        bob = {"Authorization": f"Bearer {server.tokens['bob']}", "mcp-session-id": sid}
        assert (await http.delete(server.url, headers=bob)).status_code == 404
        assert (await http.post(server.url, json=LIST, headers=alice)).status_code == 200
        assert (await http.delete(server.url, headers=alice)).status_code < 400


@needs_mcp
@pytest.mark.parametrize(
    "how",
    ["query", "lowercase-scheme-wrong-token", "basic"],
)
async def test_no_way_around_the_bearer_header(server: Any, how: str) -> None:
    """HELD: a token in the query string, a wrong token, or Basic auth gets 401 and no sandbox."""
    import httpx2

    token = server.tokens["alice"]
    url, headers = server.url, dict(ACCEPT)
    if how == "query":
        url += f"?access_token={token}&token={token}"
    elif how == "lowercase-scheme-wrong-token":
        headers["authorization"] = f"bearer {token[:-1]}x"
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(f"alice:{token}".encode()).decode()
    before = server.workspaces()
    async with httpx2.AsyncClient() as http:
        assert (await http.post(url, json=INIT, headers=headers)).status_code == 401
    assert server.workspaces() == before


@needs_mcp
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_huge_body_is_refused_before_it_is_read(server: Any, chunked: bool) -> None:
    """HELD: a body over the SDK's limit (4 MiB) gets 413, whether it declares its length or
    streams chunks without one; the server does not buffer it."""
    import httpx2
    from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

    body = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"x": "'
        + b"a" * (DEFAULT_MAX_REQUEST_BODY_SIZE + 1)
        + b'"}}'
    )

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    headers = {**ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {server.tokens['alice']}"}
    async with httpx2.AsyncClient() as http:
        answer = await http.post(server.url, content=chunks() if chunked else body, headers=headers)
    assert answer.status_code == 413


@needs_mcp
async def test_the_idle_reaper_never_ends_a_session_in_the_middle_of_a_call(tmp_path: Path) -> None:
    """HELD: with a 1 s idle timeout, a call that runs 2.5 s finishes (a call in progress is
    activity) and the session is still there afterwards."""
    from tests._support.mcp_http import Server, start_server

    token = secrets.token_urlsafe(24)
    (tmp_path / "tokens.txt").write_text(f"carol {token}\n")
    proc, url = start_server(tmp_path, "--token-file", str(tmp_path / "tokens.txt"), "--idle-timeout", "1")
    srv = Server(proc, url, tmp_path / "sandboxes", {"carol": token})
    try:
        async with srv.client(token) as carol:
            slow = await carol.call_tool("run_python_code", {"code": "import time; time.sleep(2.5); print('done')"})
            assert slow.structured_content["success"], slow.structured_content
            assert slow.structured_content["output"].strip() == "done"
            assert (await carol.call_tool("file_exists", {"path": "x"})).structured_content["success"]
    finally:
        assert srv.stop() == 0
    assert srv.workspaces() == []


# -- fork and the sync API -----------------------------------------------------------------------------


async def test_closing_the_parent_while_it_forks_leaves_no_interpreter(sandbox: Sandbox) -> None:
    """HELD: forks of forks diverge; closing a session while its fork is being made (both at once)
    neither hangs nor leaves an interpreter behind once the forks are closed."""
    runner_kids_before = _session_interpreters(sandbox)
    async with sandbox.session("forker") as parent:
        assert (await parent.run("depth = 0")).success
        child = await parent.fork("f1")
        grandchild = await child.fork("f2")
        assert (await grandchild.run("depth = 2")).success
        assert [(await s.run("depth")).value for s in (parent, child, grandchild)] == ["0", "0", "2"]
        for s in (grandchild, child):
            await s.close()
        racing = asyncio.ensure_future(parent.fork("f3"))
        await asyncio.sleep(0)
        await asyncio.wait_for(parent.close(), 30)
        try:
            late = await asyncio.wait_for(racing, 30)
        except Exception:  # noqa: BLE001 - refused because its parent closed: fine either way
            late = None
        if late is not None:
            await late.close()
    for _ in range(50):
        if _session_interpreters(sandbox) <= runner_kids_before:
            break
        await asyncio.sleep(0.1)
    assert _session_interpreters(sandbox) <= runner_kids_before


def _session_interpreters(sandbox: Sandbox) -> set[int]:
    """Processes (and their children) whose working directory is the sandbox's workspace, bar this one."""
    ws = str(sandbox.workspace_path)
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.cwd().startswith(ws):
                found.add(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


async def test_the_sync_api_from_many_threads_at_once(tmp_path: Path) -> None:
    """HELD: eight threads calling one sync Sandbox at once (none of them the test's event-loop thread)
    each get their own answer, and the sync API's loop thread ends once the sandbox is closed."""
    await asyncio.wait_for(asyncio.to_thread(_eight_threads_on_one_sync_sandbox, tmp_path), 120)


def _eight_threads_on_one_sync_sandbox(tmp_path: Path) -> None:
    from alphora.sandbox.sync import Sandbox as SyncSandbox
    from alphora.sandbox.sync import loop_thread_alive

    results: dict[int, str] = {}
    errors: list[BaseException] = []
    with SyncSandbox.create_local(base_path=tmp_path) as sb:

        def call(i: int) -> None:
            try:
                results[i] = sb.run(f"print({i} * {i})").stdout
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert results == {i: f"{i * i}\n" for i in range(8)}
    for _ in range(50):
        if not loop_thread_alive():
            break
        threading.Event().wait(0.1)
    assert not loop_thread_alive()


async def test_a_sync_sandbox_dropped_unclosed_in_another_thread_is_cleaned_up(tmp_path: Path) -> None:
    """HELD: a started sync Sandbox that a thread drops without closing is stopped by its finalizer
    (no runner process left in its workspace) and the sync API's loop thread ends."""
    await asyncio.wait_for(asyncio.to_thread(_drop_a_started_sync_sandbox, tmp_path), 120)


def _drop_a_started_sync_sandbox(tmp_path: Path) -> None:
    import gc

    from alphora.sandbox.sync import Sandbox as SyncSandbox
    from alphora.sandbox.sync import loop_thread_alive

    def leak() -> None:
        SyncSandbox.create_local(base_path=tmp_path).start()

    t = threading.Thread(target=leak)
    t.start()
    t.join(60)
    gc.collect()

    def left() -> list[int]:
        out = []
        for proc in psutil.process_iter():
            try:
                if proc.pid != os.getpid() and proc.cwd().startswith(str(tmp_path)):
                    out.append(proc.pid)
            except (psutil.Error, OSError):
                continue
        return out

    for _ in range(100):
        if not loop_thread_alive() and not left():
            break
        threading.Event().wait(0.1)
    assert left() == []
    assert not loop_thread_alive()
