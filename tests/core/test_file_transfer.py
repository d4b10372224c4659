"""Streamed file transfer: the facade's streaming calls, the runner's binary frames, bounded memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import FileSystemError, Sandbox, SecurityPolicy, SecurityViolationError
from alphora.sandbox.runner import protocol

MiB = 1024 * 1024


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox.create_local(base_path=tmp_path / "sb", security_policy=SecurityPolicy(max_file_size_mb=1)) as s:
        yield s


async def _gen(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_every_kind_of_source_is_written(sandbox: Sandbox) -> None:
    sources: list[object] = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"memoryview"),
        _gen(b"async ", b"", b"generator"),
        (p for p in (b"sync ", b"generator")),
        [b"li", b"st"],
        io.BytesIO(b"file object"),
    ]
    for i, source in enumerate(sources):
        info = await sandbox.write_file_stream(f"s/{i}.bin", source)  # type: ignore[arg-type]
        assert info.path == f"s/{i}.bin"
    got = [await sandbox.read_file_bytes(f"s/{i}.bin") for i in range(len(sources))]
    assert got == [
        b"bytes",
        b"bytearray",
        b"memoryview",
        b"async generator",
        b"sync generator",
        b"list",
        b"file object",
    ]


async def test_wrong_sources_name_what_came(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError, match="not str: use write_file"):
        await sandbox.write_file_stream("a", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        await sandbox.write_file_stream("a", 5)  # type: ignore[arg-type]
    text_mode = io.StringIO("abc")  # what open(path) without "b" gives: read() returns str
    with pytest.raises(TypeError, match=r"gave str \(open files in binary mode"):
        await sandbox.write_file_stream("a", text_mode)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="gave int"):
        await sandbox.write_file_stream("a", _gen(b"ok", 7))  # type: ignore[arg-type]
    assert not await sandbox.file_exists("a")
    for bad in (0, -1, protocol.CHUNK_MAX + 1, True, 1.5):
        with pytest.raises(ValueError, match="chunk_size must be an int"):
            async for _ in sandbox.read_file_stream("a", chunk_size=bad):  # type: ignore[arg-type]
                pass


async def test_the_size_limit_is_enforced_while_streaming(sandbox: Sandbox) -> None:
    """The policy (max_file_size_mb=1 here) refuses a stream when it passes the limit, before the
    source is used up, and the old file is left as it was."""
    await sandbox.write_file("keep.bin", "old")
    taken = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            taken.append(1)
            yield b"x" * 65536

    with pytest.raises(SecurityViolationError, match="exceeds max_file_size_mb=1"):
        await sandbox.write_file_stream("keep.bin", endless())
    assert len(taken) == 17  # 17 x 64 KiB is the first size over 1 MiB
    assert await sandbox.read_file("keep.bin") == "old"
    assert [f.path for f in await sandbox.list_files()] == ["keep.bin"]


async def test_streamed_reads_come_in_pieces_and_stop_early(sandbox: Sandbox) -> None:
    data = bytes(range(256)) * 1000
    await sandbox.write_file_bytes("d.bin", data)
    pieces = [p async for p in sandbox.read_file_stream("d.bin", chunk_size=10_000)]
    assert b"".join(pieces) == data
    assert [len(p) for p in pieces] == [10_000] * 25 + [6_000]
    async for _ in sandbox.read_file_stream("d.bin", chunk_size=1):
        break
    assert await sandbox.read_file_bytes("d.bin") == data


async def test_download_and_upload_host_files(sandbox: Sandbox, tmp_path: Path) -> None:
    data = bytes(range(256)) * 3000
    await sandbox.write_file_bytes("in/d.bin", data)
    target = tmp_path / "host" / "d.bin"
    target.parent.mkdir()
    assert await sandbox.download_to_file("in/d.bin", target) == target
    assert target.read_bytes() == data
    assert await sandbox.download_file("in/d.bin") == data  # the spec's form is unchanged
    info = await sandbox.upload_file(target)
    assert (info.path, info.size) == ("d.bin", len(data))
    await sandbox.upload_file(str(target), "up/x.bin")
    assert await sandbox.read_file_bytes("up/x.bin") == data
    # a failed download leaves nothing on the host, not even a partial file
    with pytest.raises(FileSystemError):
        await sandbox.download_to_file("missing.bin", tmp_path / "host" / "m.bin")
    assert sorted(p.name for p in target.parent.iterdir()) == ["d.bin"]
    # a host directory that does not exist is named as the caller gave it (not the hidden temp file)
    with pytest.raises(
        FileNotFoundError, match=r"cannot download to .*/nowhere/m\.bin: its directory .*/nowhere does not"
    ):
        await sandbox.download_to_file("in/d.bin", tmp_path / "nowhere" / "m.bin")


#: streams ``SIZE`` bytes into a started local sandbox and back *through its runner* (the
#: protocol path Docker uses), then reads it whole for comparison; prints the RSS growth of each
RSS_PROBE = """
import asyncio, json, os, sys, tempfile
from alphora.sandbox import LocalBackend
from alphora.sandbox.runner.backend import RunnerBackend

MiB = 1 << 20
SIZE = int(sys.argv[1]) * MiB

def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

def peak():
    # VmHWM: the peak of this process's own memory. Not ru_maxrss, which Linux carries over fork and
    # exec, so a probe started by a big pytest process began at pytest's peak and measured nothing.
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmHWM in /proc/self/status')

async def main():
    with tempfile.TemporaryDirectory() as d:
        b = LocalBackend('rss', d + '/ws')
        await b.start()
        chunk = os.urandom(MiB)
        async def source(size):
            for _ in range(size // MiB):
                yield chunk
        # warm the code paths with a small file: a warm-up as big as the test file would raise the
        # peak by itself and hide an unbounded transfer
        await RunnerBackend.write_stream(b, 'warm.bin', source(4 * MiB))
        async for part in RunnerBackend.read_stream(b, 'warm.bin'):
            pass
        before = max(rss(), peak())
        await RunnerBackend.write_stream(b, 'big.bin', source(SIZE))
        got = 0
        async for part in RunnerBackend.read_stream(b, 'big.bin'):
            got += len(part)
        assert got == SIZE, got
        streamed = peak() - before
        # the control, against the memory in use just before it (the peak only ever grows)
        now = rss()
        data = await RunnerBackend.read_bytes(b, 'big.bin')
        assert len(data) == SIZE
        read_whole = max(peak(), rss()) - now
        del data
        await b.stop()
    print(json.dumps({'streamed': streamed / MiB, 'whole': read_whole / MiB}))

asyncio.run(main())
"""


def test_a_large_transfer_through_the_runner_keeps_host_memory_bounded() -> None:
    """96 MiB written and read back through the runner protocol grow the host's peak RSS by far
    less than the file (bound: 32 MiB; measured ~1-3 MiB); reading the same file whole, as a
    control, grows it by at least the file's size, so the measurement does see memory."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, "96"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    growth = json.loads(out.stdout.strip().splitlines()[-1])
    assert growth["streamed"] < 32, growth
    assert growth["whole"] >= 0.9 * 96, growth


def test_the_file_transfer_example_runs(tmp_path: Path) -> None:
    """examples/file_transfer.py as documented (local backend)."""
    example = Path(__file__).resolve().parents[2] / "examples" / "file_transfer.py"
    env = {**os.environ, "ALPHORA_SANDBOX_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "wrote data/big.bin: 32 MiB"
    assert lines[1].split()[-1] == lines[2].split()[-1]  # the host's hash is the sandbox's
    assert lines[-2].startswith("refused: refused by security policy: data/big.bin")
    assert lines[-1] == "data/big.bin is still 32 MiB"


def test_streaming_calls_in_sync_form(tmp_path: Path) -> None:
    """The sync API has the streaming calls too: a plain iterator out, a generator or file in."""
    from alphora.sandbox.sync import Sandbox as SyncSandbox

    with SyncSandbox.create_local(base_path=tmp_path / "sb") as sandbox:
        info = sandbox.write_file_stream("s.bin", (bytes([i]) * 1000 for i in range(5)))
        assert info.size == 5000
        pieces = list(sandbox.read_file_stream("s.bin", chunk_size=2048))
        assert [len(p) for p in pieces] == [2048, 2048, 904]
        local = sandbox.download_to_file("s.bin", tmp_path / "s.bin")
        assert sandbox.upload_file(local, "t.bin").size == 5000
