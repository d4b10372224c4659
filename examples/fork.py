"""session.fork(): branch a live interpreter in milliseconds and explore two paths from one state.

Run: python examples/fork.py            (local backend)
     python examples/fork.py docker     (needs a Docker engine and the alphora-sandbox-docker plugin)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from alphora.sandbox import Sandbox


async def main(backend: str) -> None:
    with tempfile.TemporaryDirectory() as base:
        async with Sandbox.create(backend, base_path=base) as sandbox, sandbox.session() as py:
            # an expensive state: build it once
            await py.run("data = list(range(1_000_000))\nscore = 0")
            await sandbox.write_file("log.txt", "start\n")

            started = time.perf_counter()
            a = await py.fork("try-a")  # shares the workspace with py
            b = await py.fork("try-b", copy_workspace=True)  # works in its own copy: .forks/try-b/
            print(f"two forks in {(time.perf_counter() - started) * 1e3:.1f} ms")

            async with a, b:
                await a.run("score = sum(data[::2])\nopen('log.txt', 'a').write('a was here\\n')")
                await b.run("score = sum(data[1::2])\nopen('log.txt', 'a').write('b was here\\n')")
                print("a:", (await a.run("score")).value)  # 249999500000
                print("b:", (await b.run("score")).value)  # 250000000000
                print("parent:", (await py.run("score")).value)  # 0: the forks never touch it

            print("shared log.txt:", (await sandbox.read_file("log.txt")).splitlines())  # start, a was here
            print("b's own copy:", (await sandbox.read_file(".forks/try-b/log.txt")).splitlines())  # start, b was here


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "local"))
