"""Code planted by one holder of a sandbox to run inside the runner at its next start.

The runner is the one process that outlives calls, sessions, restarts' callers and pool hand-outs:
code that gets into it sees every later call. Sandbox code can write three places the runner
could import from at start: its working directory (the workspace), the package environment's
site-packages (``.pth`` files run at interpreter start) and the user site. :func:`plant` writes a
module named like one the runner preloads into the workspace and a ``.pth`` into every
site-packages directory the sandbox's Python uses; each writes a marker named after the pid of
the process that ran it. After a restart, :func:`runner_markers` says which of them ran in the
runner.
"""

from __future__ import annotations

from typing import Any

#: a module the runner imports as it starts (the protocol needs it); the planted copy writes its
#: marker and then hands over to the real one, so a runner that imports it keeps working
SHADOWED = "json"

SHIM = r"""
import os, sys
open(os.path.join(%r, "cwd-" + str(os.getpid())), "w").close()
del sys.modules[__name__]
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
try:
    import json as _real
finally:
    sys.path[:] = _saved
sys.modules[__name__] = _real
"""

PLANT = r"""
import os, site, sys, sysconfig
marks = os.path.abspath("plant-marks")
os.makedirs(marks, exist_ok=True)
line = "import os; open(os.path.join(%r, 'pth-' + str(os.getpid())), 'w').close()\n" % marks
dirs = set(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
dirs.add(sysconfig.get_paths()["purelib"])
dirs.add(site.getusersitepackages())
planted = []
for d in sorted(dirs):
    try:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "zz_alphora_plant.pth"), "w") as fh:
            fh.write(line)
        planted.append(d)
    except OSError:
        pass
with open("MODULE.py", "w") as fh:
    fh.write(SHIM % marks)
print(len(planted))
""".replace("MODULE", SHADOWED).replace("SHIM", repr(SHIM))

PIDS = r"""
import os
print(os.getppid())
print(" ".join(sorted(os.listdir("plant-marks"))))
"""


async def plant(sandbox: Any) -> int:
    """Plant the ``.pth`` files and the shadowing module; how many site directories took one."""
    r = await sandbox.run(PLANT)
    assert r.success, r.stderr
    planted = int(r.stdout.split()[-1])
    assert planted >= 1, "no site-packages directory was writable: the plant proves nothing"
    return planted


async def runner_markers(sandbox: Any) -> tuple[int, list[str]]:
    """The runner's pid (the parent of a fresh call) and the markers the runner's pid wrote."""
    r = await sandbox.run(PIDS)
    assert r.success, r.stderr
    lines = r.stdout.splitlines()
    runner = int(lines[0])
    marks = lines[1].split() if len(lines) > 1 else []
    return runner, [m for m in marks if m.rsplit("-", 1)[-1] == str(runner)]
