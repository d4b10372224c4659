"""The in-sandbox runner and its host-side client.

Module map (docs/runner.md has the picture and the protocol table):

* shared by both ends: :mod:`.protocol` (frames, limits, op names, error kinds; stdlib only).
* the program that runs *inside* the sandbox (stdlib only, relative imports only):
  :mod:`.server` (the request loop and calls), :mod:`.sessions` (the runner's side of sessions),
  :mod:`.kernel` (the session interpreter), :mod:`.child` (set-up and execution in forked children),
  :mod:`.proctree` (process trees and memory through /proc), :mod:`.leftovers` (the background-process
  rule), :mod:`.streams` (capped output pipes), :mod:`.safefs` (race-safe workspace file operations, also used in-process by the local backend)
  and :mod:`.fswalk` (the layer below it: path limits, the iterative walk and tree removal);
  :mod:`.forward` (with an egress policy: the loopback forwarder to the host's egress proxy).
* the host side: :mod:`.transport` (byte streams to a started runner), :mod:`.client` (the asyncio
  protocol client), :mod:`.backend` (:class:`~.backend.RunnerBackend`, the base class of backends
  built on the runner) and :mod:`.session` (:class:`~.session.RunnerSession`).

Boot: a backend starts :func:`bootstrap_argv` (``python3 -u -S -c BOOT``) in the environment and writes
:func:`source_frame` to its stdin. The frame holds a small loader program with the sources of
:data:`RUNNER_MODULES`; the loader installs a meta-path finder that imports them from that dict as
the package ``_alphora_runner`` (so they are ordinary modules with ordinary relative imports, as on
the host) and runs ``_alphora_runner.server.main()``. No file is copied into the environment.
"""

from __future__ import annotations

import functools
import marshal
import types
from importlib.machinery import SourceFileLoader
from pathlib import Path

from .protocol import header

__all__ = ["BOOT", "RUNNER_MODULES", "RUNNER_PACKAGE", "bootstrap_argv", "runner_source", "source_frame"]

_HERE = Path(__file__).resolve().parent

#: the modules shipped into the sandbox (stdlib imports and relative imports among these only)
RUNNER_MODULES = (
    "protocol",
    "proctree",
    "leftovers",
    "streams",
    "fswalk",
    "safefs",
    "forward",
    "child",
    "display",
    "kernel",
    "sessions",
    "server",
)
#: the package name the shipped modules get inside the sandbox
RUNNER_PACKAGE = "_alphora_runner"

#: A tiny program for ``python -c``: reads one length-prefixed blob (the loader, see
#: :func:`runner_source`) from fd 0 with unbuffered reads (so nothing after it is swallowed) and
#: execs it; the runner then speaks the protocol over the same stdin/stdout.
#:
#: The runner is started with ``-S`` and without ``''`` on ``sys.path`` (dropped before the first
#: import): the runner itself never imports from its working directory (the workspace) and never
#: runs ``.pth`` files or ``sitecustomize`` from the package environment or the user site. Sandbox
#: code can write all three; without this, a module planted there (``json.py`` in the workspace, a
#: ``.pth`` in site-packages) ran inside the runner at its next start and outlived a restart or a
#: pool reset. User code gets the usual ``sys.path`` and site set-up in its own process
#: (:func:`.child.enter_site`).
BOOT = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'):del sys.path[0]\n"
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

#: The loader (Python 3.8+, stdlib only). ``_M`` maps a module's short name to its source (str) or,
#: when the runner's Python is the host's own version, its marshalled code (bytes).
_LOADER = '''
import sys
from importlib.machinery import ModuleSpec
_P = {package!r}
_M = {modules}


class _Finder:
    """Imports {package}.<name> from _M (meta-path finder and loader in one)."""

    def find_spec(self, name, path=None, target=None):
        if name == _P:
            return ModuleSpec(name, self, is_package=True)
        if name.startswith(_P + ".") and name[len(_P) + 1:] in _M:
            return ModuleSpec(name, self, origin="<alphora-runner>/" + name[len(_P) + 1:] + ".py")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ == _P:
            return
        short = module.__name__[len(_P) + 1:]
        src = _M[short]
        if isinstance(src, bytes):
            import marshal
            code = marshal.loads(src)
        else:
            code = compile(src, "<alphora-runner>/" + short + ".py", "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, name):
        src = _M.get(name[len(_P) + 1:])
        return src if isinstance(src, str) else None


_finder = _Finder()
sys.meta_path.insert(0, _finder)
try:
    from {package}.server import main
finally:
    sys.meta_path.remove(_finder)
del _finder
main()
'''


def _module_sources() -> dict[str, str]:
    return {name: (_HERE / f"{name}.py").read_text(encoding="utf-8") for name in RUNNER_MODULES}


def _loader(modules: dict[str, str] | dict[str, bytes]) -> str:
    return _LOADER.format(package=RUNNER_PACKAGE, modules=repr(modules))


@functools.cache
def runner_source() -> bytes:
    """The program a bootstrapped runner execs: the loader with the runner modules' sources; it
    needs only a plain python3 (3.8 or later)."""
    return _loader(_module_sources()).encode("utf-8")


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _module_code(name: str) -> types.CodeType:
    """A runner module's code, from Python's own bytecode cache (``__pycache__``, checked against the
    source as for any import; compiled and cached when missing or stale): compiling the modules at
    the first start of every process cost ~20 ms. Named ``<alphora-runner>/<name>.py`` as when it is
    compiled from source inside the sandbox."""
    loader = SourceFileLoader(f"{__name__}.{name}", str(_HERE / f"{name}.py"))
    code = loader.get_code(loader.name)
    assert code is not None
    return _renamed(code, f"<alphora-runner>/{name}.py")


_PLACEHOLDER = b"@@alphora-runner-modules@@"


@functools.cache
def _compiled_blob() -> bytes:
    codes = {name: marshal.dumps(_module_code(name)) for name in RUNNER_MODULES}
    # the loader gets the modules as one marshalled bytes constant put in place of a placeholder
    # (writing them into its source as a literal and compiling that cost more than the modules)
    source = _LOADER.format(package=RUNNER_PACKAGE, modules=f"__import__('marshal').loads({_PLACEHOLDER!r})")
    loader = compile(source, "<alphora-runner>", "exec", dont_inherit=True)
    consts = tuple(marshal.dumps(codes) if c == _PLACEHOLDER else c for c in loader.co_consts)
    assert consts != loader.co_consts
    return b"\x01" + marshal.dumps(loader.replace(co_consts=consts))


def source_frame(same_interpreter: bool = False) -> bytes:
    """The first frame a backend writes to a bootstrapped runner: length + program.

    With ``same_interpreter`` (the runner's Python is this very interpreter version, e.g. the
    local backend) the program and its modules are sent pre-compiled (marshal), which saves
    compiling them at every start; otherwise as source, which any python3 can run."""
    blob = _compiled_blob() if same_interpreter else runner_source()
    return header(len(blob)) + blob


def bootstrap_argv(python: str = "python3") -> list[str]:
    """``[python, "-u", "-S", "-c", BOOT]``: start a runner with nothing but a Python interpreter
    (``-S``: no site set-up in the runner itself, see :data:`BOOT`)."""
    return [python, "-u", "-S", "-c", BOOT]
