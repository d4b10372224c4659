"""The in-sandbox runner and its host-side client.

* :mod:`.server` (the request loop) and :mod:`.child` (what runs in forked children: calls,
  the session kernel) are the program that runs *inside* the sandbox (stdlib only). A backend starts it
  with :func:`bootstrap_argv` and sends :func:`runner_source` as the first frame on its stdin;
  no file has to be copied into the environment.
* :mod:`.safefs` holds race-safe workspace file operations (shipped with the runner, also used
  in-process by the local backend).
* :mod:`.client` has the asyncio client and :class:`~.client.RunnerBackend`, the base class of
  backends built on the runner.

See docs/runner.md for the protocol.
"""

from __future__ import annotations

import functools
import marshal
from pathlib import Path

__all__ = ["BOOT", "bootstrap_argv", "runner_source"]

_HERE = Path(__file__).resolve().parent

#: A tiny program for ``python -c``: reads one length-prefixed blob (the runner's source) from
#: fd 0 with unbuffered reads (so nothing after it is swallowed) and execs it; the runner then
#: speaks the protocol over the same stdin/stdout.
BOOT = (
    "import os\n"
    "def _r(n):\n"
    " b=b''\n"
    " while len(b)<n:\n"
    "  c=os.read(0,n-len(b))\n"
    "  if not c:raise SystemExit(3)\n"
    "  b+=c\n"
    " return b\n"
    "_s=_r(int.from_bytes(_r(4),'big'))\n"
    "del _r\n"
    "if _s[:1]==b'\\x01':\n"
    " import marshal\n"
    " _s=marshal.loads(_s[1:])\n"
    "else:\n"
    " _s=compile(_s,'<alphora-runner>','exec')\n"
    "exec(_s,{'__name__':'__alphora_runner__'})\n"
)

_FUTURE = "from __future__ import annotations\n"


@functools.cache
def runner_source() -> bytes:
    """The complete runner program: safefs.py (as a module object), then child.py and server.py
    as one text; it needs only a plain python3."""
    safefs_src = (_HERE / "safefs.py").read_text(encoding="utf-8")
    parts = [(_HERE / name).read_text(encoding="utf-8").replace(_FUTURE, "", 1) for name in ("child.py", "server.py")]
    prelude = (
        _FUTURE
        + "import types as _alphora_types\n"
        + "_ALPHORA_INLINED = True\n"
        + "_ALPHORA_SAFEFS = _alphora_types.ModuleType('alphora_runner_safefs')\n"
        + f"exec(compile({safefs_src!r}, '<alphora-runner-safefs>', 'exec'), _ALPHORA_SAFEFS.__dict__)\n"
    )
    return (prelude + "\n".join(parts)).encode("utf-8")


@functools.cache
def _compiled_blob() -> bytes:
    return b"\x01" + marshal.dumps(compile(runner_source(), "<alphora-runner>", "exec"))


def source_frame(same_interpreter: bool = False) -> bytes:
    """The first frame a backend writes to a bootstrapped runner: length + program.

    With ``same_interpreter`` (the runner's Python is this very interpreter version, e.g. the
    local backend) the program is sent pre-compiled (marshal), which saves compiling it at every
    start; otherwise as source, which any python3 can run."""
    blob = _compiled_blob() if same_interpreter else runner_source()
    return len(blob).to_bytes(4, "big") + blob


def bootstrap_argv(python: str = "python3") -> list[str]:
    """``[python, "-u", "-c", BOOT]``: start a runner with nothing but a Python interpreter."""
    return [python, "-u", "-c", BOOT]
