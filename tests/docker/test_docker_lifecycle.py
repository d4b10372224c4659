"""Hostile code and lifecycle on real containers: timeouts, fork and memory bombs, outside kills,
no leaks, orphan reaping, missing images, bounded engine logs. Each test that takes ``image`` runs on a
foreign image and on ours (see conftest)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alphora.sandbox import DockerBackend, DockerError, ExecutionStatus, ResourceLimits, Sandbox, SandboxStatus
from alphora.sandbox.runner import bootstrap_argv
from alphora.sandbox_docker import prune_orphans

#: how the runner (and what it forks) shows in `ps`: its bootstrap argv, without the program text
RUNNER_CMDLINE = " ".join(bootstrap_argv("python3")[:-1])

Objects = Callable[[str], tuple[list[str], list[str]]]


#: prints "pid state cmdline" of every live (non-zombie) process in the container
LIVE_PROCESSES = """
import os

for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
    try:
        state = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').replace(b'\\n', b' ')
    except OSError:
        continue
    if state != 'Z':
        print(pid, state, cmd.decode(errors='replace')[:60])
"""


def _docker(tmp_path: Path, image: str, **limits: Any) -> Sandbox:
    return Sandbox.create_docker(base_path=tmp_path, docker_image=image, resource_limits=ResourceLimits(**limits))


async def test_timeout_kills_the_tree_and_the_sandbox_stays_usable(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image, timeout_seconds=30) as sandbox:
        code = (
            "import subprocess, time\n"
            "subprocess.Popen(['sh', '-c', 'sleep 1000 & sleep 1000; echo late > late.txt'])\n"
            "print('started', flush=True)\n"
            "time.sleep(1000)\n"
        )
        t0 = time.monotonic()
        result = await sandbox.execute_code(code, timeout=2)
        assert time.monotonic() - t0 < 2 + 5
        assert result.status is ExecutionStatus.TIMEOUT
        assert result.stdout == "started\n"
        survivors = await sandbox.run(LIVE_PROCESSES)
        assert survivors.success, survivors.stderr
        # nothing the timed-out call started is alive (killed processes may linger as zombies)
        assert "sleep" not in survivors.stdout, survivors.stdout
        assert (await sandbox.run("print('still here')")).stdout == "still here\n"
        await sandbox.destroy()


async def test_fork_bomb_is_contained(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image, max_processes=32, timeout_seconds=10) as sandbox:
        bomb = (
            "import os\n"
            "root, told = os.getpid(), False\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError as exc:\n"
            "        if os.getpid() == root and not told:\n"
            "            print('fork refused:', exc.strerror, flush=True)\n"
            "            told = True\n"
        )
        t0 = time.monotonic()
        result = await sandbox.execute_code(bomb, timeout=3)
        assert time.monotonic() - t0 < 3 + 5
        assert result.status is ExecutionStatus.TIMEOUT
        assert "fork refused: Resource temporarily unavailable" in result.stdout  # the pids limit held
        t0 = time.monotonic()
        # the parent forks once, then execs (no fork needed): it lives until the timeout kills the session
        shell_bomb = await sandbox.execute_shell("bomb() { bomb | bomb & }; bomb & exec sleep 30", timeout=3)
        assert time.monotonic() - t0 < 3 + 5
        assert shell_bomb.status is ExecutionStatus.TIMEOUT
        after = await sandbox.run(LIVE_PROCESSES)
        assert after.success, after
        live = [ln for ln in after.stdout.splitlines() if RUNNER_CMDLINE not in ln]
        assert live == [], live  # only the runner and its own forks (this call, a spare) are left
        await sandbox.destroy()


async def test_memory_bomb_is_reported_as_oom_and_the_sandbox_recovers(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image, memory_mb=128, timeout_seconds=30) as sandbox:
        bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
        result = await sandbox.run(bomb)
        assert result.status is ExecutionStatus.FAILED
        assert result.oom_killed is True
        assert "out of memory" in result.error
        ok = await sandbox.run("print(sum(range(10)))")
        assert ok.stdout == "45\n"
        assert ok.oom_killed is False
        # an ordinary SIGKILL is not an OOM
        killed = await sandbox.run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
        assert killed.return_code == -9
        assert killed.oom_killed is False
        await sandbox.destroy()


async def test_outside_kill_is_detected_and_restart_recovers(tmp_path: Path, image: str, docker_client: Any) -> None:
    sandbox = _docker(tmp_path, image)
    await sandbox.start()
    try:
        await sandbox.write_file("keep.txt", "kept")
        assert await sandbox.health_check()
        backend = sandbox.backend
        assert isinstance(backend, DockerBackend)
        docker_client.api.kill(backend.container_name)
        for _ in range(50):
            if not await sandbox.health_check():
                break
            await asyncio.sleep(0.1)
        assert sandbox.status is SandboxStatus.ERROR
        await sandbox.restart()
        assert sandbox.status is SandboxStatus.RUNNING
        assert await sandbox.health_check()
        assert (await sandbox.run("print(open('keep.txt').read())")).stdout == "kept\n"
    finally:
        await sandbox.destroy()


async def test_stop_removes_the_container_and_start_brings_the_files_back(
    tmp_path: Path, image: str, objects_of: Objects
) -> None:
    sandbox = _docker(tmp_path, image)
    await sandbox.start()
    try:
        await sandbox.write_file("a.txt", "A")
        await sandbox.stop()
        containers, volumes = objects_of(sandbox.sandbox_id)
        assert containers == []
        assert len(volumes) == 2
        await sandbox.start()
        assert await sandbox.read_file("a.txt") == "A"
    finally:
        await sandbox.destroy()
    assert objects_of(sandbox.sandbox_id) == ([], [])


async def test_async_with_leaves_nothing_behind(tmp_path: Path, image: str, objects_of: Objects) -> None:
    sandbox = _docker(tmp_path, image)
    async with sandbox:
        await sandbox.write_file("x.txt", "x")
        assert len(objects_of(sandbox.sandbox_id)[0]) == 1
    assert objects_of(sandbox.sandbox_id) == ([], [])


async def test_twenty_sandboxes_leave_nothing_behind(tmp_path: Path, image: str, objects_of: Objects) -> None:
    """20 sandboxes, 4 at a time; some time out, some are OOM-killed; then nothing is left."""
    ids: list[str] = []

    async def one(i: int) -> None:
        sandbox = _docker(tmp_path, image, memory_mb=96, timeout_seconds=20)
        ids.append(sandbox.sandbox_id)
        async with sandbox:
            if i % 5 == 1:
                r = await sandbox.run("import time; time.sleep(60)", timeout=1)
                assert r.timed_out
            elif i % 5 == 2:
                r = await sandbox.run("x = []\nwhile True: x.append(bytearray(8 << 20))")
                assert r.oom_killed, r
            else:
                r = await sandbox.run(f"print({i} * 2)")
                assert r.stdout == f"{i * 2}\n"
        await sandbox.destroy()

    sem = asyncio.Semaphore(4)

    async def limited(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(*(limited(i) for i in range(20)))
    assert len(ids) == 20
    for sid in ids:
        assert objects_of(sid) == ([], []), sid


async def test_forgotten_sandbox_is_cleaned_when_collected(tmp_path: Path, image: str, objects_of: Objects) -> None:
    # the spec's manual lifecycle (start ... stop), then the object is dropped without destroy()
    sandbox = _docker(tmp_path, image)
    await sandbox.start()
    await sandbox.run("print(1)")
    await sandbox.stop()
    sid = sandbox.sandbox_id
    assert len(objects_of(sid)[1]) == 2  # stopped: volumes kept for a restart
    del sandbox
    import gc

    gc.collect()
    assert objects_of(sid) == ([], [])


async def test_reaper_removes_what_a_crashed_process_left(tmp_path: Path, image: str, objects_of: Objects) -> None:
    script = (
        "import asyncio, os\n"
        "from alphora.sandbox import Sandbox\n"
        "async def main():\n"
        f"    sb = Sandbox.create_docker(base_path={str(tmp_path)!r}, docker_image={image!r})\n"
        "    await sb.start()\n"
        "    print(sb.sandbox_id, flush=True)\n"
        "    os._exit(1)  # a crash: no stop, no finalizers\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    sid = out.stdout.strip()
    assert sid, out.stderr
    containers, volumes = objects_of(sid)
    assert len(containers) == 1
    assert len(volumes) == 2
    # a live owner is protected: our own sandbox survives a prune
    async with _docker(tmp_path, image) as mine:
        report = prune_orphans(sandbox_id=mine.sandbox_id)
        assert report.containers == ()
        assert report.skipped_alive == 1
        assert (await mine.run("print('alive')")).stdout == "alive\n"
        await mine.destroy()
    dry = subprocess.run(
        [sys.executable, "-m", "alphora.sandbox_docker", "prune", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert containers[0] in dry.stdout
    assert objects_of(sid)[0] == containers  # dry run removed nothing
    report = prune_orphans(sandbox_id=sid)
    assert set(report.containers) == set(containers)
    assert set(report.volumes) == set(volumes)
    assert objects_of(sid) == ([], [])


async def test_missing_image_error_names_the_build_command(tmp_path: Path) -> None:
    sandbox = Sandbox.create_docker(base_path=tmp_path, docker_image="alphora/sandbox:datascience-missing")
    with pytest.raises(DockerError, match=r"alphora-sandbox docker build"):
        await sandbox.start()
    assert sandbox.status is SandboxStatus.ERROR
    await sandbox.destroy()


def test_cli_images_lists_the_base() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alphora.sandbox_docker", "images"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "alphora/sandbox:base" in ln)
    assert "present" in line


async def test_disk_limit_caps_file_size_and_tmp(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image, disk_mb=20, memory_mb=128) as sandbox:
        big = await sandbox.run("open('big.bin', 'wb').write(b'x' * (21 << 20))")
        assert not big.success
        assert "File too large" in big.stderr or big.return_code == -25, big
        fits = await sandbox.run("open('ok.bin', 'wb').write(b'x' * (10 << 20)); print('ok')")
        assert fits.stdout == "ok\n"
        tmp = await sandbox.execute_shell("df -m /tmp | tail -1")
        assert tmp.stdout.split()[1] == "20", tmp.stdout  # the /tmp tmpfs is capped at disk_mb
        await sandbox.destroy()


async def test_session_killed_by_oom_is_reported(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image, memory_mb=128) as sandbox:
        async with sandbox.session() as py:
            await py.run("x = 1")
            bomb = await py.run("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n")
            assert bomb.oom_killed is True, bomb
            assert bomb.state_lost is True
            after = await py.run("1 + 1")
            assert after.value == "2"
        await sandbox.destroy()


async def test_workspace_saved_to_storage_and_restored_in_a_new_container(tmp_path: Path, image: str) -> None:
    from alphora.sandbox.storage import LocalStorage, StorageConfig

    async with LocalStorage(StorageConfig.local(str(tmp_path / "store"))) as storage:
        async with _docker(tmp_path, image) as first:
            await first.run("import os; os.makedirs('d'); open('d/made.txt', 'w').write('from code')")
            await first.write_file_bytes("blob.bin", bytes(range(256)))
            saved = await first.save_workspace(storage, "ws/demo")
            assert set(saved) >= {"d/made.txt", "blob.bin"}
        async with _docker(tmp_path, image) as second:
            restored = await second.restore_workspace(storage, "ws/demo")
            assert set(restored) == set(saved)
            check = await second.run("print(open('d/made.txt').read(), len(open('blob.bin','rb').read()))")
            assert check.stdout == "from code 256\n"


async def test_cancelled_call_is_killed_in_the_container(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image) as sandbox:
        task = asyncio.ensure_future(sandbox.execute_shell("sleep 300 & sleep 300"))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            survivors = await sandbox.run(LIVE_PROCESSES)
            if "sleep" not in survivors.stdout:
                break
            await asyncio.sleep(0.1)
        assert "sleep" not in survivors.stdout, survivors.stdout
        assert (await sandbox.run("print('usable')")).stdout == "usable\n"


async def test_concurrent_memory_bombs_are_all_reported(tmp_path: Path, image: str) -> None:
    async with _docker(tmp_path, image, memory_mb=128) as sandbox:
        bomb = "import time\nchunks = []\nwhile True:\n    chunks.append(bytearray(4 << 20)); time.sleep(0.005)\n"
        results = await asyncio.gather(*(sandbox.run(bomb) for _ in range(3)))
        killed = [r for r in results if r.return_code == -9]
        assert killed, results
        assert all(r.oom_killed for r in killed), [r.error for r in results]
        assert (await sandbox.run("print('ok')")).stdout == "ok\n"


async def test_engine_keeps_no_growing_log_of_the_traffic(tmp_path: Path, image: str, docker_client: Any) -> None:
    """Everything the container prints is the runner's protocol: a json-file log on the engine would keep
    every byte of output and of every file moved until the container is removed."""
    import docker.errors

    async with _docker(tmp_path, image, memory_mb=256) as sandbox:
        backend = sandbox.backend
        assert isinstance(backend, DockerBackend)
        blob = os.urandom(4 << 20)
        await sandbox.write_file_bytes("blob.bin", blob)
        for _ in range(4):
            assert await sandbox.download_file("blob.bin") == blob
        flood = await sandbox.run("import sys\nfor _ in range(8): sys.stdout.write('x' * (1 << 20))")
        assert flood.success
        assert len(flood.stdout) == 8 << 20  # the flood reached us over the attach stream
        attrs = docker_client.api.inspect_container(backend.container_name)
        log_path = attrs["LogPath"]
        if log_path:  # a capped json-file log would be fine too: what counts is its size
            assert os.path.getsize(log_path) < 1 << 20, (attrs["HostConfig"]["LogConfig"], os.path.getsize(log_path))
        try:
            logs = docker_client.api.logs(backend.container_name, stdout=True, stderr=True)
        except docker.errors.APIError as exc:
            logs = str(exc).encode()  # the "none" driver keeps nothing: "... does not support reading"
            assert b"does not support reading" in logs
        assert len(logs) < 1 << 20
        assert (await sandbox.run("print('attached')")).stdout == "attached\n"
        await sandbox.destroy()
