"""Built-in plugin: the default security checks (shell, imports, subprocess, writes, paths).

Static checks on the text of code: a guard rail, not a boundary (see :mod:`alphora.sandbox.security`).
"""

from __future__ import annotations

import ast
import fnmatch
import re

from ..hookspecs import RegisterSecurityCheck
from ..plugins import hookimpl
from ..security import CheckRequest, Violation
from ..types import SecurityPolicy

#: what ``allow_subprocess=False`` blocks, as module or dotted-call patterns
SUBPROCESS_NAMES: tuple[str, ...] = (
    "subprocess",
    "os.system",
    "os.popen",
    "os.exec*",
    "os.spawn*",
    "os.fork",
    "os.forkpty",
    "os.posix_spawn*",
    "pty",
    "multiprocessing",
    "concurrent.futures.process",
)


class ShellCheck:
    name = "shell"

    async def check(self, request: CheckRequest, policy: SecurityPolicy) -> list[Violation]:
        if request.kind == "shell" and not policy.allow_shell:
            return [Violation(check=self.name, reason="shell commands are disabled (allow_shell=False)")]
        return []


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def used_names(code: str) -> set[str]:
    """Modules imported and dotted names called or referenced by ``code`` (aliases resolved)."""
    tree = ast.parse(code)
    aliases: dict[str, str] = {}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names.add(a.name)
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            for a in node.names:
                full = f"{node.module}.{a.name}"
                names.add(full)
                aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func in ("__import__", "importlib.import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name):
            dotted = _dotted(node)
            if dotted:
                head, _, rest = dotted.partition(".")
                if head in aliases:
                    names.add(aliases[head] + ("." + rest if rest else ""))
    return names


def _matches(name: str, pattern: str) -> bool:
    # "subprocess" blocks "subprocess" and "subprocess.run"; "os.exec*" blocks "os.execv"
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


class ImportCheck:
    name = "imports"

    async def check(self, request: CheckRequest, policy: SecurityPolicy) -> list[Violation]:
        if request.kind != "python":
            return []
        blocked = list(policy.blocked_imports)
        if not policy.allow_subprocess:
            blocked.extend(SUBPROCESS_NAMES)
        if not blocked:
            return []
        try:
            names = used_names(request.content)
        except (SyntaxError, ValueError):
            return []  # let it run and fail with Python's own error message
        out: list[Violation] = []
        for pattern in dict.fromkeys(blocked):
            hits = sorted(n for n in names if _matches(n, pattern))
            if hits:
                why = (
                    "subprocesses are disabled (allow_subprocess=False)"
                    if pattern in SUBPROCESS_NAMES and pattern not in policy.blocked_imports
                    else f"{pattern!r} is in blocked_imports"
                )
                out.append(Violation(check=self.name, reason=f"use of {', '.join(hits)}: {why}"))
        return out


class WriteCheck:
    name = "file_write"

    async def check(self, request: CheckRequest, policy: SecurityPolicy) -> list[Violation]:
        if request.kind not in ("write", "delete"):
            return []
        if not policy.allow_file_write:
            return [
                Violation(check=self.name, reason=f"file writes are disabled (allow_file_write=False): {request.path}")
            ]
        if request.kind == "write" and request.size > policy.max_file_size_bytes:
            return [
                Violation(
                    check=self.name,
                    reason=(f"{request.path}: {request.size} bytes exceeds max_file_size_mb={policy.max_file_size_mb}"),
                )
            ]
        return []


class BlockedPathCheck:
    name = "blocked_paths"

    async def check(self, request: CheckRequest, policy: SecurityPolicy) -> list[Violation]:
        if request.kind not in ("python", "shell") or not policy.blocked_paths:
            return []
        out = []
        for blocked in policy.blocked_paths:
            b = blocked.rstrip("/") or "/"
            if re.search(r"(?<![\w./-])" + re.escape(b) + r"(?![\w.-])", request.content):
                out.append(Violation(check=self.name, reason=f"the code refers to blocked path {blocked!r}"))
        return out


@hookimpl
def sandbox_register_security_checks(register: RegisterSecurityCheck) -> None:
    for check in (ShellCheck(), ImportCheck(), WriteCheck(), BlockedPathCheck()):
        register(check)
