"""Stateful Python sessions: variables, imports and the working directory persist between calls.

Run: python examples/sessions.py
"""

from __future__ import annotations

import asyncio
import tempfile

from alphora.sandbox import Sandbox


async def main() -> None:
    with tempfile.TemporaryDirectory() as base:
        async with Sandbox.create_local(base_path=base) as sandbox, sandbox.session() as py:
            await py.run("x = 41")
            r = await py.run("print(x + 1)")
            print("stdout:", r.stdout.strip())                      # 42

            r = await py.run("import math\nradius = 2\nmath.pi * radius ** 2")
            print("value:", r.value)                                # 12.566370614359172 (repr)

            await py.run("import os\nos.makedirs('data', exist_ok=True)\nos.chdir('data')")
            r = await py.run("os.getcwd().rsplit('/', 1)[-1]")
            print("cwd persists:", r.value)                         # 'data'

            r = await py.run("1 / 0")
            print("error:", r.status.value, "-", r.error)           # failed - ZeroDivisionError: ...
            print("state kept:", (await py.run("x")).value)         # 41

            # a timeout interrupts the cell with KeyboardInterrupt; variables survive
            r = await py.run("import time\ntime.sleep(30)", timeout=1)
            print("timeout:", r.status.value, "state_lost:", r.state_lost, "x:", (await py.run("x")).value)

            # code that swallows KeyboardInterrupt is killed after a grace period: state is lost
            r = await py.run("while True:\n    try:\n        time.sleep(30)\n    except KeyboardInterrupt:\n"
                             "        pass", timeout=1)
            print("stubborn:", r.status.value, "state_lost:", r.state_lost)
            print("after restart:", (await py.run("'x' in globals()")).value)   # False

            # matplotlib figures come back as PNG attachments, once matplotlib is installed in the
            # sandbox (the agent's own packages are not visible there): see docs/sessions.md
            r = await py.run("import importlib.util\nimportlib.util.find_spec('matplotlib') is not None")
            if r.value == "True":
                r = await py.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()")
                for a in r.attachments:
                    print("attachment:", a.mime_type, a.name, len(a.data), "bytes")
            else:
                print("figures: matplotlib is not installed in this sandbox; "
                      "await sandbox.install_package('matplotlib') first")


if __name__ == "__main__":
    asyncio.run(main())
