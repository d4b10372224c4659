"""The isolated local tier (bubblewrap): contract suite plus what it adds over "local"."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox, SecurityPolicy
from alphora.sandbox.backend import Backend
from alphora.sandbox.builtin.isolated_backend import IsolatedLocalBackend, bwrap_available
from alphora.sandbox.errors import BackendError, ConfigurationError
from alphora.sandbox.testing import BackendContractTests

if not bwrap_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must provide bubblewrap (bwrap): .ci/run installs it")
    pytest.skip("bubblewrap (bwrap) is not installed: apt install bubblewrap", allow_module_level=True)


class TestIsolatedBackendContract(BackendContractTests):
    async def make_backend(self, workspace: Path) -> Backend:
        return IsolatedLocalBackend(sandbox_id="contract", workspace_path=workspace)


@pytest.fixture
async def isolated(tmp_path: Path) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox.create("isolated", base_path=tmp_path / "ws")
    async with sandbox:
        yield sandbox


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server on the host's loopback that answers 'pong'."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(10)
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"pong")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    srv.close()


PROBE = """
import socket
import tempfile
s = socket.socket(); s.settimeout(3)
try:
    s.connect(('127.0.0.1', {port})); print('reached', s.recv(4).decode())
except OSError as e:
    print('blocked', type(e).__name__)
"""


async def test_no_network_by_default(isolated: Sandbox, host_server: int) -> None:
    r = await isolated.run(PROBE.format(port=host_server))
    assert r.stdout.startswith("blocked"), r


async def test_network_when_limits_and_policy_enable_it(tmp_path: Path, host_server: int) -> None:
    sandbox = Sandbox.create(
        "isolated",
        base_path=tmp_path,
        resource_limits=ResourceLimits(network_enabled=True),
        security_policy=SecurityPolicy(allow_network=True),
    )
    async with sandbox:
        r = await sandbox.run(PROBE.format(port=host_server))
        assert r.stdout == "reached pong\n", r
    only_limits = Sandbox.create("isolated", base_path=tmp_path, resource_limits=ResourceLimits(network_enabled=True))
    async with only_limits:  # fails closed: the policy did not allow it
        assert (await only_limits.run(PROBE.format(port=host_server))).stdout.startswith("blocked")


async def test_host_files_and_processes_are_invisible(isolated: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("do not read")
    code = (
        f"import os\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists('/etc/shadow'), os.path.exists('/home'))\n"
        f"print(os.getuid() != 0, len([p for p in os.listdir('/proc') if p.isdigit()]) < 10)\n"
        f"print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    r = await isolated.run(code)
    assert r.stdout.splitlines() == ["False False False", "True True", "0000000000000000"], r


async def test_workspace_is_shared_with_the_file_api(isolated: Sandbox) -> None:
    await isolated.write_file("in.txt", "from host")
    r = await isolated.run("print(open('in.txt').read()); open('out.txt', 'w').write('from sandbox')")
    assert r.stdout == "from host\n"
    assert await isolated.read_file("out.txt") == "from sandbox"


async def test_root_filesystem_is_read_only(isolated: Sandbox) -> None:
    r = await isolated.execute_shell("touch /usr/evil 2>&1; echo rc=$?")
    assert "rc=1" in r.stdout


@pytest.mark.parametrize("bad", [(0, 10), (100000, 0), "100000-165535", (100000,), (100000.0, 5), (True, 5)])
def test_uid_range_is_validated(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="uid_range"):
        IsolatedLocalBackend(sandbox_id="u", workspace_path=tmp_path, uid_range=bad)


@pytest.mark.skipif(os.geteuid() != 0, reason="host uids are leased only when the host process is root")
async def test_a_full_uid_range_is_a_clear_error_and_a_stopped_sandbox_frees_its_uid(tmp_path: Path) -> None:
    uid_range = (150000 + secrets.randbelow(10000), 1)
    first = Sandbox.create("isolated", base_path=tmp_path / "a", backend_options={"uid_range": uid_range})
    second = Sandbox.create("isolated", base_path=tmp_path / "b", backend_options={"uid_range": uid_range})
    async with first:
        assert (await first.execute_shell("id -u")).stdout.strip() == "1000"  # inside: 1000 either way
        with pytest.raises(BackendError, match="uid_range"):
            await second.start()
    async with second:  # the uid is free again
        r = await second.run("open('f', 'w').write('x'); print('ok')")
        assert r.stdout == "ok\n", r
    assert (tmp_path / "b").exists()
    await second.destroy()
    assert not any((tmp_path / "b").iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="staging happens only when the host process is root")
async def test_reachable_directories_need_no_staging(tmp_path: Path) -> None:
    """With a system interpreter under /usr and a workspace every uid can reach, no private mount
    namespace is needed: setpriv + bwrap alone, still as the leased uid and inside the pids cgroup."""
    system_python = "/usr/bin/python3"
    if not os.path.exists(system_python):
        pytest.skip("no system interpreter at /usr/bin/python3")
    base = Path(tempfile.mkdtemp(prefix="alphora-reachable-", dir="/var/tmp"))
    base.chmod(0o755)
    sandbox = Sandbox.create("isolated", base_path=base, backend_options={"python": system_python})
    try:
        async with sandbox:
            backend = sandbox.backend
            assert isinstance(backend, IsolatedLocalBackend)
            argv = backend._runner_argv()
            assert "--bounding-set=-all" in argv
            assert not any(arg.endswith("unshare") for arg in argv)
            r = await sandbox.run("import os; print(os.getuid())")
            assert r.stdout == "1000\n", r
            assert backend.pids_cgroup is None or len(backend.pids_cgroup.pids()) >= 3
    finally:
        await sandbox.destroy()
        base.rmdir()
