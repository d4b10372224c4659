"""Hostile code against a Docker sandbox: every attack is contained and the sandbox stays usable.

Needs a Docker engine and an image with python3 3.8+ under the tag used below (python:3.11-slim:
`docker pull` it where a registry answers; CI tags a plain Debian stand-in; see docs/images.md)
Run: python examples/docker_hostile.py
"""

import asyncio
import time

from alphora.sandbox import ResourceLimits, Sandbox, is_docker_available

ATTACKS = {
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory bomb": "x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n",
    "runaway daemon": "import subprocess, time\nsubprocess.Popen(['sleep', '1000'])\ntime.sleep(1000)\n",
    # decided from interfaces and routes, without sending a packet anywhere
    "network probe": (
        "import os\n"
        "routes = open('/proc/net/route').read().splitlines()[1:]\n"
        "default = any(r.split()[1] == '00000000' for r in routes)\n"
        "print('interfaces:', sorted(os.listdir('/sys/class/net')), 'default route:', default)\n"
    ),
    "write outside": (
        "try:\n    open('/usr/lib/evil', 'w')\n"
        "except OSError as e:\n    print('blocked:', e)\n"
    ),
    "escalate": "import os\ntry:\n    os.setuid(0)\nexcept OSError as e:\n    print('blocked:', e)\n",
}


async def main() -> None:
    if not is_docker_available():
        print("no Docker engine answers; start dockerd (or run .ci/docker-setup.sh)")
        return
    limits = ResourceLimits(timeout_seconds=3, memory_mb=128, max_processes=32)
    async with Sandbox.create_docker(resource_limits=limits) as sandbox:
        for name, code in ATTACKS.items():
            t0 = time.monotonic()
            r = await sandbox.run(code)
            took = time.monotonic() - t0
            print(f"{name:15} -> {r.status.value:8} oom_killed={r.oom_killed!s:5} {took:4.1f}s "
                  f"{(r.stdout or r.error).strip()[:70]}")
            alive = await sandbox.run("print('ok')")
            assert alive.stdout == "ok\n", alive
        print("sandbox healthy:", await sandbox.health_check())
        await sandbox.destroy()


if __name__ == "__main__":
    asyncio.run(main())
