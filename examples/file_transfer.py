"""Large files in and out of a sandbox with bounded memory: streamed writes and reads, host files.

Run: python examples/file_transfer.py            (local backend)
     python examples/file_transfer.py docker     (Docker; needs the engine and alphora/sandbox:base)
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from alphora.sandbox import Sandbox, SecurityPolicy

MiB = 1024 * 1024


async def generated(total_mib: int) -> AsyncIterator[bytes]:
    """A source that makes its data as it goes (never all of it in memory)."""
    for i in range(total_mib):
        yield bytes([i % 256]) * MiB


async def main(backend: str) -> None:
    # streamed writes obey the policy's max_file_size_mb while they stream (default 100)
    policy = SecurityPolicy(max_file_size_mb=64)
    with tempfile.TemporaryDirectory() as base:
        if backend == "docker":
            sandbox = Sandbox.create_docker(base_path=base, docker_image="alphora/sandbox:base", security_policy=policy)
        else:
            sandbox = Sandbox.create_local(base_path=base, security_policy=policy)
        async with sandbox:
            # 1. write from an async iterator: atomic, nothing is visible until the last byte is in
            info = await sandbox.write_file_stream("data/big.bin", generated(32))
            print(f"wrote {info.path}: {info.size // MiB} MiB")

            # 2. read it back in pieces, hashing as they come
            digest = hashlib.sha256()
            pieces = 0
            async for piece in sandbox.read_file_stream("data/big.bin", chunk_size=MiB):
                digest.update(piece)
                pieces += 1
            print(f"read {pieces} pieces, sha256 {digest.hexdigest()[:16]}")

            # 3. code in the sandbox sees the same bytes
            result = await sandbox.run(
                "import hashlib; print(hashlib.sha256(open('data/big.bin', 'rb').read()).hexdigest()[:16])"
            )
            print(f"in the sandbox:  sha256 {result.stdout.strip()}")

            # 4. host files: download into one, upload from one (a binary file object works too)
            local = await sandbox.download_to_file("data/big.bin", Path(base) / "copy.bin")
            print(f"downloaded to a host file of {local.stat().st_size // MiB} MiB")
            uploaded = await sandbox.upload_file(local, "data/copy.bin")
            print(f"uploaded back as {uploaded.path}")

            # 5. over the limit: refused while streaming, and the old file stays as it was
            try:
                await sandbox.write_file_stream("data/big.bin", generated(100))
            except PermissionError as exc:  # SecurityViolationError
                print(f"refused: {exc}")
            print(f"data/big.bin is still {(await sandbox.get_file_info('data/big.bin')).size // MiB} MiB")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "local"))
