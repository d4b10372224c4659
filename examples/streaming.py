"""Streaming output while code runs: a callback, or an async iterator of chunks.

Run: python examples/streaming.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time

from alphora.sandbox import ExecutionResult, OutputChunk, Sandbox

CODE = """
import sys, time
for i in range(3):
    print(f"step {i}", flush=True)
    time.sleep(0.3)
print("done, with a warning", file=sys.stderr)
"""


async def main() -> None:
    with tempfile.TemporaryDirectory() as base:
        async with Sandbox.create_local(base_path=base) as sandbox:
            t0 = time.monotonic()

            # 1. a callback (plain function or coroutine function) gets each chunk as it arrives
            def show(chunk: OutputChunk) -> None:
                print(f"  +{time.monotonic() - t0:.2f}s {chunk.stream}: {chunk.text!r}")

            print("callback:")
            result = await sandbox.run(CODE, on_output=show)
            print("  result:", result.status.value, repr(result.stdout))

            # 2. an async iterator: chunks, then the ExecutionResult as the last item
            print("iterator:")
            t0 = time.monotonic()
            async for item in sandbox.stream(CODE):
                if isinstance(item, ExecutionResult):
                    print("  result:", item.status.value, f"in {item.execution_time:.2f}s")
                else:
                    print(f"  +{time.monotonic() - t0:.2f}s {item.stream}: {item.text!r}")

            # 3. the same works in a stateful session
            print("session:")
            async with sandbox.session() as py:
                await py.run("import time", on_output=show)
                t0 = time.monotonic()
                await py.run("for i in range(2):\n    print('tick', i, flush=True)\n    time.sleep(0.3)",
                             on_output=show)


if __name__ == "__main__":
    asyncio.run(main())
