"""Code written for the original alphora (opencmit/alphora, alphora/sandbox/) runs unchanged.

The lists below are the methods the original declares ``async`` (read from its sandbox.py and
manager.py); docs/migration.md shows the same lists.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from alphora.sandbox import (
    BackendType,
    ResourceLimits,
    Sandbox,
    SandboxInfo,
    SandboxManager,
    SandboxStatus,
    SecurityPolicy,
)

ROOT = Path(__file__).resolve().parents[2]

ORIGINAL_SANDBOX_COROUTINES = (
    "start",
    "stop",
    "restart",
    "destroy",
    "execute_code",
    "execute_file",
    "execute_shell",
    "run",
    "read_file",
    "read_file_bytes",
    "write_file",
    "write_file_bytes",
    "save_file",
    "delete_file",
    "file_exists",
    "list_files",
    "download_file",
    "copy_file",
    "move_file",
    "install_package",
    "install_packages",
    "uninstall_package",
    "list_packages",
    "package_installed",
    "install_requirements",
    "set_env",
    "get_env",
    "set_env_vars",
    "get_resource_usage",
    "health_check",
    "get_status",
    "get_info",
    "__aenter__",
    "__aexit__",
)
ORIGINAL_MANAGER_COROUTINES = (
    "start",
    "shutdown",
    "__aenter__",
    "__aexit__",
    "create_sandbox",
    "create_local_sandbox",
    "create_docker_sandbox",
    "get_or_create",
    "list_info",
    "stop_sandbox",
    "destroy_sandbox",
    "restart_sandbox",
    "stop_all",
    "destroy_all",
    "health_check_all",
    "get_total_resource_usage",
    "get_status",
    "cleanup_stopped",
    "cleanup_idle",
)
ORIGINAL_MANAGER_SYNC = ("get_sandbox", "get_sandbox_by_name", "has_sandbox", "list_sandboxes", "list_running")


@pytest.mark.parametrize(
    ("cls", "names"), [(Sandbox, ORIGINAL_SANDBOX_COROUTINES), (SandboxManager, ORIGINAL_MANAGER_COROUTINES)]
)
def test_every_coroutine_of_the_original_is_a_coroutine_here(cls: type, names: tuple[str, ...]) -> None:
    not_async = [n for n in names if not inspect.iscoroutinefunction(getattr(cls, n, None))]
    assert not_async == [], f"{cls.__name__}: the original awaits these, here they are not coroutines"


def test_the_originals_synchronous_lookups_stay_synchronous() -> None:
    assert not any(inspect.iscoroutinefunction(getattr(SandboxManager, n)) for n in ORIGINAL_MANAGER_SYNC)
    assert isinstance(SandboxManager.sandbox_count, property)


def test_the_migration_page_lists_the_same_coroutines() -> None:
    page = (ROOT / "docs" / "migration.md").read_text(encoding="utf-8")
    for cls, names in (("Sandbox", ORIGINAL_SANDBOX_COROUTINES), ("SandboxManager", ORIGINAL_MANAGER_COROUTINES)):
        row = re.search(rf"^\| `{cls}` \| (.+) \|$", page, re.MULTILINE)
        assert row is not None, f"docs/migration.md has no coroutine row for {cls}"
        assert re.findall(r"`(\w+)`", row.group(1)) == list(names)


async def original_style(base_path: str) -> dict[str, object]:
    """A program as written for the original alphora: every formerly synchronous call awaited."""
    seen: dict[str, object] = {}
    async with Sandbox.create_local(base_path=base_path) as sandbox:
        await sandbox.set_env("FOO", "bar")
        await sandbox.set_env_vars({"A": "1", "B": "2"})
        seen["FOO"] = await sandbox.get_env("FOO")
        result = await sandbox.execute_code("import os; print(os.environ['FOO'], os.environ['A'], os.environ['B'])")
        seen["stdout"] = result.stdout
        await sandbox.write_file("data.txt", "Hello, World!")
        seen["file"] = await sandbox.read_file("data.txt")
        seen["status"] = await sandbox.get_status()
        seen["info"] = await sandbox.get_info()

    manager = SandboxManager(
        base_path=base_path,
        default_backend=BackendType.LOCAL,
        default_limits=ResourceLimits(timeout_seconds=60),
        default_policy=SecurityPolicy(allow_shell=False),
        max_sandboxes=10,
        auto_cleanup=True,
    )
    await manager.start()
    worker = await manager.create_sandbox("worker-1")
    await worker.set_env("ROLE", "worker")
    seen["worker"] = (await worker.run("import os; print(os.environ['ROLE'])")).stdout
    seen["manager_status"] = await manager.get_status()
    seen["list_info"] = await manager.list_info()
    seen["sandbox_count"] = manager.sandbox_count
    seen["by_name"] = manager.get_sandbox_by_name("worker-1") is worker
    seen["missing"] = manager.get_sandbox_by_name("nobody")
    seen["limits"] = worker.resource_limits.timeout_seconds, worker.security_policy.allow_shell
    await manager.shutdown()
    return seen


async def test_a_program_written_for_the_original_runs_unchanged(tmp_path: Path) -> None:
    seen = await original_style(str(tmp_path))
    assert seen["FOO"] == "bar"
    assert seen["stdout"] == "bar 1 2\n"
    assert seen["file"] == "Hello, World!"
    status = seen["status"]
    assert isinstance(status, dict)
    original_keys = {
        "sandbox_id",
        "name",
        "status",
        "backend_type",
        "is_running",
        "workspace_path",
        "created_at",
        "started_at",
        "execution_count",
    }
    assert original_keys <= set(status)
    assert (status["status"], status["backend_type"], status["is_running"], status["execution_count"]) == (
        "running",
        "local",
        True,
        1,
    )
    info = seen["info"]
    assert isinstance(info, SandboxInfo)
    assert (info.status, info.execution_count, info.stopped_at) == (SandboxStatus.RUNNING, 1, None)
    assert seen["worker"] == "worker\n"
    manager_status = seen["manager_status"]
    assert isinstance(manager_status, dict)
    assert {k: manager_status[k] for k in ("default_backend", "max_sandboxes", "sandbox_count", "running_count")} == {
        "default_backend": "local",
        "max_sandboxes": 10,
        "sandbox_count": 1,
        "running_count": 1,
    }
    [entry] = manager_status["sandboxes"].values()
    assert (entry["name"], entry["status"], entry["backend"]) == ("worker-1", "running", "local")
    assert [i.name for i in seen["list_info"]] == ["worker-1"]  # type: ignore[attr-defined]
    assert seen["sandbox_count"] == 1
    assert seen["by_name"] is True
    assert seen["missing"] is None
    assert seen["limits"] == (60, False)
