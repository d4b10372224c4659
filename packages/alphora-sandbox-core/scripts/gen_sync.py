"""Writes ``_generated.py``: the sync classes, one method per public method of the async classes.

The async classes are the one place the API is defined; this script reads their source (names,
signatures, defaults, annotations, docstrings) and writes real, typed sync classes whose methods
forward to :mod:`._portal`. Run it after changing the async API::

    python packages/alphora-sandbox-core/scripts/gen_sync.py          # rewrite _generated.py
    python packages/alphora-sandbox-core/scripts/gen_sync.py --check  # exit 1 if it is out of date (a test runs this)

Translations: ``async def`` → ``def`` (runs on the sync API's loop thread); an ``AsyncIterator``
result → ``Iterator``; an ``@asynccontextmanager`` → a context manager; ``__aenter__``/``__aexit__``
→ ``__enter__``/``__exit__``; ``aclose`` → ``close``; an async classmethod (``Sandbox.resume``) runs
on the loop and makes a new root. The wrapped classes' names in signatures
mean the sync classes (arguments are unwrapped, results wrapped).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "alphora" / "sandbox" / "sync" / "_generated.py"


@dataclass(frozen=True)
class Target:
    name: str  # the class's name (sync and async)
    module: str  # the async class's module
    base: str  # the _portal base class
    alias: str  # the async module's alias in the generated file
    constructible: bool = True


TARGETS = (
    Target("Sandbox", "alphora.sandbox.sandbox", "SandboxBase", "_sandbox"),
    Target("SandboxManager", "alphora.sandbox.manager", "ManagerBase", "_manager"),
    Target("SandboxPool", "alphora.sandbox.pool", "PoolBase", "_pool"),
    Target("SandboxTools", "alphora.sandbox.tools.sandbox_tools", "SyncWrapper", "_tools"),
    Target("PythonSession", "alphora.sandbox.session", "SyncWrapper", "_session", constructible=False),
)
WRAPPED = frozenset(t.name for t in TARGETS)
RENAMES = {"__aenter__": "__enter__", "__aexit__": "__exit__", "aclose": "close"}
SKIP = frozenset({"__init__", "__del__", "__repr__"})
KEEP_DUNDERS = frozenset({"__aenter__", "__aexit__", "__len__", "__contains__"})


def _mentions_wrapped(node: ast.AST | None) -> bool:
    if node is None:
        return False
    text = ast.unparse(node)
    return any(isinstance(n, ast.Name) and n.id in WRAPPED for n in ast.walk(ast.parse(text, mode="eval")))


def _names(node: ast.AST | None) -> set[str]:
    if node is None:
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
        node = ast.parse(node.value, mode="eval")
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Module:
    """Where each top-level name of a source module comes from."""

    def __init__(self, name: str) -> None:
        self.name = name
        module = importlib.import_module(name)
        self.source = inspect.getsource(module)
        self.tree = ast.parse(self.source)
        package = name if hasattr(module, "__path__") else name.rpartition(".")[0]
        self.origin: dict[str, tuple[str, str]] = {}  # name -> (module, attribute)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                mod = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                for a in node.names:
                    self.origin[a.asname or a.name] = (mod, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.origin[a.asname or a.name.partition(".")[0]] = (a.name, "")
        for node in self.tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                self.origin.setdefault(node.name, (name, node.name))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        self.origin.setdefault(t.id, (name, t.id))

    def cls(self, name: str) -> ast.ClassDef:
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise LookupError(f"{name} not in {self.name}")


def _members(target: Target) -> tuple[str, list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, _Module]]]:
    """The class's docstring and its public methods, MRO order (first definition wins)."""
    cls = getattr(importlib.import_module(target.module), target.name)
    seen: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, _Module]] = {}
    for klass in cls.__mro__:
        if klass is object:
            continue
        mod = _Module(klass.__module__)
        for node in mod.cls(klass.__name__).body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name in seen:
                continue
            public = not node.name.startswith("_") or node.name in KEEP_DUNDERS or node.name == "__init__"
            if public and node.name not in SKIP - {"__init__"}:
                seen[node.name] = (node, mod)
    return inspect.getdoc(cls) or "", list(seen.values())


class _Writer:
    def __init__(self) -> None:
        self.runtime: dict[str, tuple[str, str]] = {}
        self.known: dict[str, tuple[str, str]] = {}
        self.lines: list[str] = []

    def need(self, names: set[str], mod: _Module, runtime: bool) -> None:
        """Remember where the names come from; runtime names (defaults) are imported at runtime."""
        for n in names - WRAPPED - LOCAL:
            origin = mod.origin.get(n)
            if origin is None:
                raise LookupError(f"can't resolve {n!r} used in {mod.name}")
            self.known.setdefault(n, origin)
            if runtime:
                self.runtime[n] = origin

    def typing_names(self, code: str) -> set[str]:
        """The names the generated annotations use (they are imported for type checkers only)."""
        used: set[str] = set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.FunctionDef):
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                    if arg is not None:
                        used |= _names(arg.annotation)
                used |= _names(node.returns)
        return used - WRAPPED - LOCAL - set(self.runtime)


#: names the generated module defines or imports itself, and builtins
LOCAL = frozenset(
    {"None", "self", "cls", "Any", "TYPE_CHECKING", "cast", "Iterator", "AbstractContextManager", "TracebackType"}
    | {"str", "int", "float", "bool", "bytes", "dict", "list", "tuple", "object", "type", "BaseException"}
)


def _call_args(args: ast.arguments, wrapped: set[str]) -> str:
    def value(name: str) -> str:
        return f"_unwrap({name})" if name in wrapped else name

    positional = [a.arg for a in args.posonlyargs + args.args][1:]  # drop self/cls
    parts = [value(a) for a in positional]
    if args.vararg:
        parts.append(f"*{args.vararg.arg}")
    parts += [f"{a.arg}={value(a.arg)}" for a in args.kwonlyargs]
    if args.kwarg:
        parts.append(f"**{args.kwarg.arg}")
    return ", ".join(parts)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, returns: str) -> str:
    args = ast.unparse(node.args)
    return f"def {RENAMES.get(node.name, node.name)}({args}) -> {returns}:"


def _docstring(doc: str | None, indent: str) -> list[str]:
    if not doc:
        return []
    body = doc.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = body.splitlines()
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *[f"{indent}{ln}" if ln else "" for ln in lines[1:]], f'{indent}"""']


def _method_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef, mod: _Module) -> list[str]:
    """The method's docstring literal exactly as written (escapes included): the sync method's
    ``__doc__`` is then the async one's, character for character."""
    first = node.body[0] if node.body else None
    if not (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    ):
        return []
    segment = ast.get_source_segment(mod.source, first)
    if segment is None or first.col_offset != 8:  # not at a method body's usual depth: re-indent it
        return _docstring(ast.get_docstring(node, clean=True), " " * 8)
    lines = segment.splitlines()
    return [" " * 8 + lines[0], *lines[1:]]


def _decorators(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {ast.unparse(d) for d in node.decorator_list}


def _method(w: _Writer, target: Target, node: ast.FunctionDef | ast.AsyncFunctionDef, mod: _Module) -> list[str]:
    decorators = _decorators(node)
    ann = ast.unparse(node.returns) if node.returns else "None"
    wrapped_args = {
        a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs if _mentions_wrapped(a.annotation)
    }
    for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]:
        if a is not None:
            w.need(_names(a.annotation), mod, runtime=False)
    for d in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
        w.need({n.id for n in ast.walk(d) if isinstance(n, ast.Name)}, mod, runtime=True)
    w.need(_names(node.returns), mod, runtime=False)
    call = _call_args(node.args, wrapped_args)
    name = node.name
    doc = _method_docstring(node, mod)
    out: list[str] = []

    def result(expr: str, returns: str) -> str:
        if _mentions_wrapped(ast.parse(returns, mode="eval")):
            return f'return cast("{returns}", self._wrap({expr}))'
        return f"return {expr}"

    if name == "__init__":
        out += [f"    {_signature(node, 'None')}"]
        out += _docstring(ast.get_docstring(node, clean=True), " " * 8)
        fam = ", ".join(sorted(wrapped_args))
        out += [f"        self._bind({target.alias}.{target.name}({call}), _family_of({fam}))"]
        return out
    if "property" in decorators:
        out += ["    @property", f"    {_signature(node, ann)}", *doc, f"        {result(f'self._obj.{name}', ann)}"]
        return out
    if "classmethod" in decorators:
        out += ["    @classmethod", f"    {_signature(node, ann)}", *doc]
        made = f"{target.alias}.{target.name}.{name}({call})"
        if isinstance(node, ast.AsyncFunctionDef):  # an async factory: it runs on the loop, as a new root
            out += [f'        return cls._from_async_call("{name}", lambda: {made})']
        else:
            out += [f"        return cls._from_async({made})"]
        return out
    if "staticmethod" in decorators:
        raise ValueError(f"don't know how to mirror {target.name}.{name}")
    target_call = f"self._obj.{name}({call})"
    if "asynccontextmanager" in decorators:
        inner = ann.removeprefix("AsyncIterator[").removesuffix("]")
        returns = f"AbstractContextManager[{inner}]"
        out += [
            f"    {_signature(node, returns)}",
            *doc,
            f'        return self._context("{name}", lambda: {target_call})',
        ]
        return out
    if ann.startswith("AsyncIterator["):
        returns = "Iterator[" + ann.removeprefix("AsyncIterator[")
        out += [
            f"    {_signature(node, returns)}",
            *doc,
            f'        return self._iterate("{name}", lambda: {target_call})',
        ]
        return out
    if name == "__aenter__":
        out += [f"    {_signature(node, target.name)}", *doc]
        out += [f'        self._run("__enter__", lambda: {target_call})', "        return self"]
        return out
    if isinstance(node, ast.AsyncFunctionDef):
        expr = f'self._run("{RENAMES.get(name, name)}", lambda: {target_call})'
        out += [f"    {_signature(node, ann)}", *doc, f"        {result(expr, ann)}"]
        return out
    out += [f"    {_signature(node, ann)}", *doc, f"        {result(target_call, ann)}"]
    return out


HEADER = '''"""The sync classes (generated by ``packages/alphora-sandbox-core/scripts/gen_sync.py``; do not edit)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

'''


def _import(name: str, module: str, attribute: str) -> str:
    if not attribute:
        return f"import {module}" + (f" as {name}" if name != module else "")
    return f"from {module} import {attribute}" + (f" as {name}" if attribute != name else "")


def generate() -> str:
    w = _Writer()
    body: list[str] = []
    for target in TARGETS:
        doc, members = _members(target)
        intro = (
            f"The sync :class:`{target.module}.{target.name}`: the same methods, names and arguments, "
            "called without ``await`` (``with`` instead of ``async with``, ``for`` instead of ``async for``). "
            "Works from any thread that does not run an event loop; see :mod:`alphora.sandbox.sync`."
        )
        body += ["", "", f"class {target.name}({target.base}):"]
        body += _docstring(intro + "\n\n" + doc, " " * 4)
        body += ["", f"    _async_class = {target.alias}.{target.name}", f"    _obj: {target.alias}.{target.name}"]
        if not target.constructible:
            body += [
                "",
                "    def __init__(self) -> None:",
                f'        raise TypeError("{target.name} objects come from Sandbox.session(); they are not created directly")',
            ]
        for node, mod in members:
            if node.name == "__init__" and not target.constructible:
                continue
            if node.name == "__aexit__":
                body += [
                    "",
                    "    def __exit__(",
                    "        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None",
                    "    ) -> None:",
                    '        self._run("__exit__", lambda: self._obj.__aexit__(exc_type, exc, tb))',
                ]
                continue
            body += ["", *_method(w, target, node, mod)]
    bases = sorted({t.base for t in TARGETS})
    imports = [f"import {t.module} as {t.alias}" for t in TARGETS]
    imports += [f"from ._portal import {', '.join(bases)}, _family_of, _unwrap, register"]
    for n, (m, a) in sorted(w.runtime.items()):
        imports.append(_import(n, m, a))
    lines = [HEADER + "\n".join(imports), "", "if TYPE_CHECKING:"]
    for n in sorted(w.typing_names("\n".join(body))):
        lines.append("    " + _import(n, *w.known[n]))
    lines += [
        "",
        f"__all__ = {sorted(WRAPPED)!r}".replace("'", '"'),
        *body,
        "",
        "",
        f"register({', '.join(t.name for t in TARGETS)})",
        "",
    ]
    return "\n".join(lines)


def _formatted(text: str) -> str:
    """The text as ``ruff`` (import sorting and format, the settings lint uses) leaves it."""
    beside = Path(sys.executable).with_name("ruff")
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    if ruff is None:
        raise SystemExit("gen_sync.py formats its output with ruff, which is not installed: pip install ruff")
    cmd = [ruff]
    fixed = subprocess.run(
        [*cmd, "check", "--select", "I", "--fix", "--quiet", "--stdin-filename", str(OUT), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return subprocess.run(
        [*cmd, "format", "--quiet", "--stdin-filename", str(OUT), "-"],
        input=fixed,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def main(argv: list[str]) -> int:
    text = _formatted(generate())
    if "--check" in argv:
        if OUT.read_text() != text:
            print(
                f"{OUT} is out of date: run python packages/alphora-sandbox-core/scripts/gen_sync.py", file=sys.stderr
            )
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
