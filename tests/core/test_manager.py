"""SandboxManager with real local sandboxes: the spec's examples and the whole API table."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import (
    BackendType,
    ConfigurationError,
    ResourceLimits,
    ResourceUsage,
    SandboxAlreadyExistsError,
    SandboxConfig,
    SandboxManager,
    SandboxNotFoundError,
    SandboxStatus,
    SecurityPolicy,
)
from alphora.sandbox.manager import SandboxLimitError


async def test_spec_manager_example(tmp_path: Path) -> None:
    """The spec's SandboxManager block, with a temporary directory for /data/sandboxes."""
    base = tmp_path / "sandboxes"
    async with SandboxManager(base_path=str(base)) as manager:
        # 创建沙箱
        sandbox1 = await manager.create_sandbox("worker-1")
        sandbox2 = await manager.create_sandbox("worker-2")

        # 并行执行
        results = await asyncio.gather(sandbox1.run("print('worker 1')"), sandbox2.run("print('worker 2')"))

        # 列出沙箱
        sandboxes = manager.list_sandboxes()

        # 获取指定沙箱
        sandbox = manager.get_sandbox("worker-1")

        # 销毁沙箱
        await manager.destroy_sandbox("worker-1")

        assert [r.stdout for r in results] == ["worker 1\n", "worker 2\n"]
        assert [s.name for s in sandboxes] == ["worker-1", "worker-2"]
        assert sandbox is sandbox1
        assert sandbox1.status is SandboxStatus.DESTROYED
        assert not sandbox1.workspace_path.exists()
        assert manager.list_sandboxes() == [sandbox2]
        assert sandbox2.workspace_path.parent == base
    # auto_cleanup (the default): shutdown destroyed the rest
    assert sandbox2.status is SandboxStatus.DESTROYED
    assert not sandbox2.workspace_path.exists()


async def test_spec_pool_example_on_the_local_backend(tmp_path: Path) -> None:
    """The spec's 沙箱池管理 block (local backend; the Docker variant is in tests/docker/test_manager_docker.py)."""
    manager = SandboxManager(
        base_path=str(tmp_path), default_backend=BackendType.LOCAL, max_sandboxes=100, auto_cleanup=True
    )

    await manager.start()

    # 获取或创建
    sandbox = await manager.get_or_create("task-123")

    assert sandbox.sandbox_id == "task-123"
    assert await manager.get_or_create("task-123") is sandbox
    await sandbox.write_file_bytes("blob.bin", b"x" * (2 * 1024 * 1024))

    # 批量操作 (the spec stops and destroys before the health check; check health first here too)
    health = await manager.health_check_all()
    assert health == {"task-123": True}
    usage = await manager.get_total_resource_usage()
    assert isinstance(usage, ResourceUsage)
    assert usage.disk_mb >= 2.0
    await manager.stop_all()
    assert sandbox.status is SandboxStatus.STOPPED
    assert await manager.health_check_all() == {"task-123": False}
    await manager.destroy_all()
    health = await manager.health_check_all()
    assert health == {}

    # 清理空闲沙箱
    cleaned = await manager.cleanup_idle(max_idle_seconds=3600)
    assert cleaned == []

    # 获取资源使用总量
    usage = await manager.get_total_resource_usage()
    assert usage.process_count == 0

    await manager.shutdown()
    assert not manager.is_running


async def test_lookup_by_id_and_name(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path) as manager:
        sb = await manager.create_sandbox("alpha", sandbox_id="id-1")
        assert manager.get_sandbox("id-1") is sb
        assert manager.get_sandbox("alpha") is sb
        assert manager.get_sandbox_by_name("alpha") is sb
        assert manager.has_sandbox("id-1")
        assert manager.has_sandbox("alpha")
        assert "alpha" in manager
        assert not manager.has_sandbox("beta")
        with pytest.raises(SandboxNotFoundError) as info:
            manager.get_sandbox("beta")
        assert "beta" in str(info.value)
        assert manager.get_sandbox_by_name("id-1") is None  # an id is not a name; None as in the original
        unnamed = await manager.create_sandbox()
        assert unnamed.name == unnamed.sandbox_id
        assert await manager.destroy_sandbox("nope") is False


async def test_ids_and_names_are_unique(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path) as manager:
        await manager.create_sandbox("w1", sandbox_id="s1")
        clashes: list[dict[str, Any]] = [{"name": "w1"}, {"sandbox_id": "s1"}, {"name": "s1"}, {"sandbox_id": "w1"}]
        for kwargs in clashes:
            with pytest.raises(SandboxAlreadyExistsError):
                await manager.create_sandbox(**kwargs)
        assert len(manager) == 1


async def test_max_sandboxes_is_enforced_even_under_concurrency(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path, max_sandboxes=3) as manager:
        results = await asyncio.gather(*(manager.create_sandbox(f"w{i}") for i in range(6)), return_exceptions=True)
        created = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(created) == 3
        assert len(refused) == 3
        assert all(isinstance(e, SandboxLimitError) for e in refused)
        assert "max_sandboxes=3" in str(refused[0])
        assert len(manager) == 3
        # refused sandboxes left nothing behind
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(s.sandbox_id for s in created)
        await manager.destroy_sandbox("w0")
        assert (await manager.create_sandbox("again")).name == "again"


async def test_invalid_manager_settings() -> None:
    for kwargs in ({"max_sandboxes": 0}, {"max_sandboxes": True}, {"cleanup_interval": 0}, {"idle_timeout": -1}):
        with pytest.raises(ConfigurationError):
            SandboxManager(**kwargs)


async def test_unknown_backend_is_refused_and_not_counted(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path, max_sandboxes=1) as manager:
        with pytest.raises(ConfigurationError, match="unknown backend"):
            await manager.create_sandbox("x", backend_type="no-such-backend")
        assert (await manager.create_sandbox("y")).is_running


async def test_filters_stop_restart_and_cleanup_stopped(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path) as manager:
        a = await manager.create_local_sandbox("a")
        b = await manager.create_sandbox("b")
        c = await manager.create_sandbox("c", auto_start=False)
        assert c.status is SandboxStatus.CREATED
        assert manager.list_running() == [a, b]
        assert manager.list_sandboxes(status="created") == [c]
        assert manager.list_sandboxes(backend_type=BackendType.LOCAL) == [a, b, c]
        assert manager.list_sandboxes(backend_type="docker") == []
        await manager.stop_sandbox("a")
        assert manager.list_sandboxes(status=SandboxStatus.STOPPED) == [a]
        assert (await manager.restart_sandbox("a")).is_running
        assert (await a.run("print(6*7)")).stdout == "42\n"
        await manager.stop_sandbox(b.sandbox_id)
        assert await manager.cleanup_stopped() == [b.sandbox_id]
        assert not manager.has_sandbox("b")
        assert b.status is SandboxStatus.DESTROYED
        # get_or_create brings a stopped sandbox back instead of making a new one
        await manager.stop_sandbox("a")
        assert await manager.get_or_create("a") is a
        assert a.is_running


async def test_cleanup_idle_destroys_only_idle_sandboxes(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path) as manager:
        idle = await manager.create_sandbox("idle")
        busy = await manager.create_sandbox("busy")
        await asyncio.sleep(1.5)
        await busy.run("print('still here')")
        cleaned = await manager.cleanup_idle(max_idle_seconds=1.0)
        assert cleaned == [idle.sandbox_id]
        assert idle.status is SandboxStatus.DESTROYED
        assert manager.list_sandboxes() == [busy]


async def test_auto_cleanup_reaps_idle_sandboxes_in_the_background(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path, idle_timeout=0.5, cleanup_interval=0.2) as manager:
        sb = await manager.create_sandbox("short-lived")
        deadline = time.monotonic() + 10
        while manager.has_sandbox("short-lived") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not manager.has_sandbox("short-lived")
        assert sb.status is SandboxStatus.DESTROYED


async def test_without_auto_cleanup_nothing_is_reaped_and_shutdown_keeps_workspaces(tmp_path: Path) -> None:
    manager = SandboxManager(base_path=tmp_path, auto_cleanup=False, idle_timeout=0.2, cleanup_interval=0.1)
    async with manager:
        sb = await manager.create_sandbox("keeper")
        await sb.write_file("state.txt", "kept")
        await asyncio.sleep(0.5)
        assert manager.has_sandbox("keeper")
    assert sb.status is SandboxStatus.STOPPED
    assert (sb.workspace_path / "state.txt").read_text() == "kept"
    await manager.shutdown(force=True)
    assert sb.status is SandboxStatus.DESTROYED
    assert not sb.workspace_path.exists()
    assert len(manager) == 0


async def test_exception_in_body_forces_cleanup_and_propagates(tmp_path: Path) -> None:
    manager = SandboxManager(base_path=tmp_path, auto_cleanup=False)
    created = []

    async def body() -> None:
        async with manager:
            created.append(await manager.create_sandbox("doomed"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await body()
    assert created[0].status is SandboxStatus.DESTROYED


async def test_sandboxes_destroyed_behind_the_managers_back_free_their_slot(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path, max_sandboxes=1) as manager:
        sb = await manager.create_sandbox("one")
        await sb.destroy()
        assert (await manager.create_sandbox("two")).is_running


async def test_defaults_from_manager_and_config(tmp_path: Path) -> None:
    limits = ResourceLimits(timeout_seconds=7, memory_mb=256)
    config = SandboxConfig.local(path=str(tmp_path / "cfg"), resource_limits=limits, env_vars={"GREETING": "hi"})
    async with SandboxManager(config=config) as manager:
        assert manager.default_backend == "local"
        sb = await manager.create_sandbox("c1")
        assert sb.resource_limits == limits
        assert sb.workspace_path.parent == tmp_path / "cfg"
        assert (await sb.run("import os; print(os.environ['GREETING'])")).stdout == "hi\n"
        other = await manager.create_sandbox("c2", env_vars={"GREETING": "hello"})
        assert (await other.run("import os; print(os.environ['GREETING'])")).stdout == "hello\n"


async def test_get_status(tmp_path: Path) -> None:
    async with SandboxManager(base_path=tmp_path, max_sandboxes=5) as manager:
        await manager.create_sandbox("s1")
        s2 = await manager.create_sandbox("s2")
        await s2.stop()
        status = await manager.get_status()
        assert status["running"] is True
        assert status["sandbox_count"] == 2
        assert status["running_count"] == 1
        assert status["by_status"] == {"running": 1, "stopped": 1}
        assert status["by_backend"] == {"local": 2}
        assert status["max_sandboxes"] == 5
        assert status["default_backend"] == "local"
        assert status["base_path"] == str(tmp_path)
        assert [(s["name"], s["status"], s["backend"]) for s in status["sandboxes"].values()] == [
            ("s1", "running", "local"),
            ("s2", "stopped", "local"),
        ]
        assert list(status["sandboxes"]) == [s.sandbox_id for s in manager.list_sandboxes()]
        assert manager.sandbox_count == 2
        infos = await manager.list_info()
        assert [(i.name, i.status) for i in infos] == [("s1", SandboxStatus.RUNNING), ("s2", SandboxStatus.STOPPED)]
    assert (await manager.get_status())["sandbox_count"] == 0


def test_the_originals_argument_names_are_accepted_once(tmp_path: Path) -> None:
    limits, policy = ResourceLimits(timeout_seconds=7), SecurityPolicy(allow_shell=False)
    manager = SandboxManager(base_path=tmp_path, default_limits=limits, default_policy=policy)
    assert (manager.resource_limits, manager.security_policy) == (limits, policy)
    with pytest.raises(ConfigurationError, match="resource_limits or default_limits, not both"):
        SandboxManager(base_path=tmp_path, resource_limits=limits, default_limits=limits)
