"""The default policy checks (a guard rail) and how the facade applies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import (
    Sandbox,
    SecurityPolicy,
    SecurityViolationError,
    ShellAccessDeniedError,
)
from alphora.sandbox.builtin.security_checks import used_names

SPEC_POLICY = SecurityPolicy(
    allow_shell=True,
    allow_network=False,
    allow_file_write=True,
    allow_subprocess=False,
    blocked_imports=["os.system", "subprocess", "ctypes"],
    blocked_paths=["/etc", "/usr", "/root"],
    max_file_size_mb=100,
    audit_enabled=True,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import subprocess", "subprocess"),
        ("from subprocess import run as r", "subprocess.run"),
        ("import os as o\no.system('ls')", "os.system"),
        ("from os import system\nsystem('x')", "os.system"),
        ("__import__('ctypes')", "ctypes"),
        ("import importlib\nimportlib.import_module('ctypes')", "ctypes"),
    ],
)
def test_used_names_sees_through_aliases(code: str, expected: str) -> None:
    assert expected in used_names(code)


@pytest.fixture
async def strictish(tmp_path: Path):  # type: ignore[no-untyped-def]
    sandbox = Sandbox.create_local(base_path=tmp_path, security_policy=SPEC_POLICY)
    async with sandbox:
        yield sandbox
    await sandbox.destroy()


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess; subprocess.run(['id'])",
        "import os\nos.system('id')",
        "import ctypes",
        "open('/etc/passwd').read()",
    ],
)
async def test_blocked_code_is_refused_before_it_runs(strictish: Sandbox, code: str) -> None:
    with pytest.raises(SecurityViolationError) as info:
        await strictish.run(code + "\nopen('ran.txt','w').write('x')")
    assert info.value.violations
    assert not await strictish.file_exists("ran.txt")


async def test_allowed_code_runs_and_is_audited(strictish: Sandbox) -> None:
    r = await strictish.run("import json; print(json.dumps([1]))")
    assert r.stdout == "[1]\n"
    assert any(e["action"] == "run" for e in strictish.audit_events)


async def test_shell_denied(tmp_path: Path) -> None:
    async with Sandbox.create_local(base_path=tmp_path, security_policy=SecurityPolicy.strict()) as sandbox:
        with pytest.raises(ShellAccessDeniedError, match="allow_shell=False"):
            await sandbox.execute_shell("echo hi")
        with pytest.raises(SecurityViolationError, match="blocked_imports"):
            await sandbox.run("import subprocess")
        await sandbox.destroy()
    async with Sandbox.create_local(base_path=tmp_path, security_policy=SecurityPolicy(allow_subprocess=False)) as sb:
        with pytest.raises(SecurityViolationError, match="allow_subprocess=False"):
            await sb.run("import os\nos.execv('/bin/sh', ['sh'])")
        assert (await sb.execute_shell("echo shell-still-allowed")).stdout == "shell-still-allowed\n"
        await sb.destroy()


async def test_file_write_and_size_policy(tmp_path: Path) -> None:
    policy = SecurityPolicy(allow_file_write=False)
    async with Sandbox.create_local(base_path=tmp_path, security_policy=policy) as sandbox:
        with pytest.raises(SecurityViolationError, match="allow_file_write=False"):
            await sandbox.write_file("a.txt", "x")
        assert not await sandbox.file_exists("a.txt")
        await sandbox.destroy()
    small = SecurityPolicy(max_file_size_mb=0.001)
    async with Sandbox.create_local(base_path=tmp_path, security_policy=small) as sandbox:
        with pytest.raises(SecurityViolationError, match="exceeds max_file_size_mb"):
            await sandbox.write_file_bytes("big.bin", b"x" * 5000)
        assert not await sandbox.file_exists("big.bin")
        await sandbox.destroy()
