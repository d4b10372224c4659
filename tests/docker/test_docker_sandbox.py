"""A docker sandbox as the spec uses it: examples, hardening seen from inside and from the engine, files,
packages; on a foreign image (no sandbox user, no /workspace) and on ours."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alphora.sandbox import DockerBackend, PathTraversalError, Sandbox, is_docker_available
from alphora.sandbox import FileNotFoundError as SandboxFileNotFoundError
from alphora.sandbox_docker._setup import SETUP_CAPS

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_spec_docker_example(foreign_image: str) -> None:
    # the spec's 执行后端 / Docker 后端 example, verbatim but for the image name: ``foreign_image`` is
    # python:3.11-slim (the spec's) unless ALPHORA_TEST_FOREIGN_IMAGE names another image we did not build
    if is_docker_available():
        sandbox = Sandbox.create_docker(docker_image=foreign_image)
        async with sandbox:
            result = await sandbox.run("import sys; print(sys.version)")
            await sandbox.write_file("data.txt", "Hello, World!")
            content = await sandbox.read_file("data.txt")
            seen = await sandbox.run("print(open('data.txt').read())")
        assert result.success, result
        assert result.stdout.startswith("3.11")
        assert content == "Hello, World!"
        assert seen.stdout == "Hello, World!\n"
        assert isinstance(sandbox.backend, DockerBackend)
        await sandbox.destroy()
    else:  # pragma: no cover - the conftest skips or fails before this
        pytest.fail("is_docker_available() is False although the engine answered the conftest")


async def test_spec_execution_examples(shared_sandbox: Sandbox) -> None:
    sandbox = shared_sandbox
    result = await sandbox.execute_code(code="import time; time.sleep(0.2); print('done')", timeout=10)
    assert result.stdout == "done\n"
    await sandbox.write_file("script.py", 'import sys\nprint(f"Args: {sys.argv[1:]}")\nprint("Hello from file!")\n')
    result = await sandbox.execute_file("script.py", args=["arg1", "arg2"], timeout=30)
    assert result.stdout == "Args: ['arg1', 'arg2']\nHello from file!\n"
    result = await sandbox.execute_shell("echo 'Hello' | tr '[:lower:]' '[:upper:]'")
    assert result.stdout == "HELLO\n"
    result = await sandbox.run("import json\nprint(json.dumps({'name': 'Alice'}))")
    assert json.loads(result.stdout) == {"name": "Alice"}
    failed = await sandbox.run("raise ValueError('boom')")
    assert not failed.success
    assert failed.return_code == 1
    assert "ValueError: boom" in failed.error


async def test_hardening_seen_from_inside(shared_sandbox: Sandbox) -> None:
    code = r"""
import os, json, pwd
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
pid1 = dict(l.split(":\t", 1) for l in open("/proc/1/status").read().splitlines() if ":\t" in l)
def regain_root():
    try:
        os.setuid(0); return True
    except OSError:
        return False
def can_write(p):
    try:
        open(p, "w").close(); os.unlink(p); return True
    except OSError:
        return False
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "uids": status["Uid"].split(), "gids": status["Gid"].split(), "pid1_uids": pid1["Uid"].split(),
    "caps": {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "pid1_caps": {k: int(pid1[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "nnp": status["NoNewPrivs"].strip(), "regain_root": regain_root(),
    "rootfs_writable": can_write("/usr/evil"), "etc_writable": can_write("/etc/evil"),
    "tmp_writable": can_write("/tmp/ok"), "ws_writable": can_write("/workspace/ok"),
    "home_writable": can_write(os.path.expanduser("~/ok")),
    "pids_max": open("/sys/fs/cgroup/pids/pids.max").read().strip(),
    "mem_limit": int(open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read()),
    "ifaces": sorted(os.listdir("/sys/class/net")),
    "cwd": os.getcwd(), "home": os.environ.get("HOME"), "expanduser": os.path.expanduser("~"),
    "ws_owner": os.stat("/workspace").st_uid, "home_owner": os.stat(os.path.expanduser("~")).st_uid,
}))
"""
    result = await shared_sandbox.run(code)
    assert result.success, result.stderr
    info = json.loads(result.stdout)
    # the setup step dropped root for good before the runner (PID 1) served anything
    assert info["uid"] == 1000
    assert info["gid"] == 1000
    assert info["groups"] == [1000]
    assert info["uids"] == info["gids"] == info["pid1_uids"] == ["1000"] * 4  # real, effective, saved, fs
    assert info["caps"] == info["pid1_caps"] == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0)
    assert info["nnp"] == "1"
    assert info["regain_root"] is False
    assert not info["rootfs_writable"]
    assert not info["etc_writable"]
    assert info["tmp_writable"]
    assert info["ws_writable"]
    assert info["home_writable"]
    assert info["pids_max"] == "66"
    assert info["mem_limit"] == 256 * 1024 * 1024
    assert info["ifaces"] == ["lo"]  # network off: loopback only
    assert info["cwd"] == "/workspace"
    assert info["home"] == info["expanduser"] == "/home/sandbox"  # also where /etc/passwd has no uid 1000
    assert info["ws_owner"] == info["home_owner"] == 1000


async def test_host_config_seen_from_the_engine(shared_sandbox: Sandbox, docker_client: Any) -> None:
    backend = shared_sandbox.backend
    assert isinstance(backend, DockerBackend)
    attrs = docker_client.api.inspect_container(backend.container_name)
    hc = attrs["HostConfig"]
    assert hc["CapDrop"] == ["ALL"]
    # the container starts as root with only what the setup step needs; none of it reaches the runner
    # (test_hardening_seen_from_inside)
    assert sorted(hc["CapAdd"]) == sorted(SETUP_CAPS)
    assert attrs["Config"]["User"] == "0:0"
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["LogConfig"] == {"Type": "none", "Config": {}}  # no engine log of the runner's traffic
    assert hc["ReadonlyRootfs"] is True
    assert hc["NetworkMode"] == "none"
    assert hc["PidsLimit"] == 66
    assert hc["Memory"] == hc["MemorySwap"] == 256 * 1024 * 1024
    assert hc["NanoCpus"] == 1_000_000_000
    assert hc["Privileged"] is False
    labels = attrs["Config"]["Labels"]
    assert labels["org.alphora.sandbox.id"] == shared_sandbox.sandbox_id
    assert labels["org.alphora.sandbox.pid"].isdigit()
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/workspace"]["Type"] == "volume"
    assert mounts["/home/sandbox"]["Type"] == "volume"
    assert not any(m["Type"] == "bind" for m in attrs["Mounts"])
    # the setup step, then the runner, is the main process: no docker exec per call
    assert attrs["Path"] == "python3"
    assert attrs["Args"][:3] == ["-I", "-S", "-c"]
    before = attrs["ExecIDs"]
    await shared_sandbox.run("print(1)")
    assert docker_client.api.inspect_container(backend.container_name)["ExecIDs"] == before


async def test_files_both_directions(shared_sandbox: Sandbox) -> None:
    sandbox = shared_sandbox
    await sandbox.write_file("data.txt", "Hello, World!")
    result = await sandbox.run(
        "import os; st = os.stat('data.txt'); print(open('data.txt').read(), st.st_uid, oct(st.st_mode & 0o777))"
    )
    assert result.stdout.split() == ["Hello,", "World!", "1000", "0o644"]
    payload = bytes(range(256)) * 64
    await sandbox.write_file_bytes("bin/blob.bin", payload)
    check = await sandbox.run("import hashlib; print(hashlib.sha256(open('bin/blob.bin','rb').read()).hexdigest())")
    import hashlib

    assert check.stdout.strip() == hashlib.sha256(payload).hexdigest()
    made = await sandbox.run("open('made_inside.csv', 'w').write('a,b\\n1,2\\n'); import os; os.makedirs('out/deep')")
    assert made.success, made.stderr
    assert await sandbox.read_file("made_inside.csv") == "a,b\n1,2\n"
    names = {f.path for f in await sandbox.list_files("", recursive=True)}
    assert {"data.txt", "bin/blob.bin", "made_inside.csv", "out/deep"} <= names
    assert [f.name for f in await sandbox.list_files("", pattern="*.csv")] == ["made_inside.csv"]
    await sandbox.copy_file("data.txt", "copy.txt")
    await sandbox.move_file("copy.txt", "moved.txt")
    assert await sandbox.file_exists("moved.txt")
    assert not await sandbox.file_exists("copy.txt")
    info = await sandbox.save_file("config.json", '{"key": "value"}')
    assert info.size == 16
    assert info.file_type.value == "json"
    assert await sandbox.download_file("moved.txt") == b"Hello, World!"
    assert await sandbox.delete_file("moved.txt") is True
    assert await sandbox.delete_file("moved.txt") is False
    with pytest.raises(SandboxFileNotFoundError):
        await sandbox.read_file("missing.txt")
    # absolute container paths are the workspace's own name
    assert await sandbox.read_file("/workspace/data.txt") == "Hello, World!"


async def test_planted_links_do_not_leak_host_or_container_files(shared_sandbox: Sandbox) -> None:
    planted = await shared_sandbox.run(
        "import os\nos.symlink('/etc/passwd', 'link_passwd')\nos.symlink('/', 'rootdir')\n"
    )
    assert planted.success, planted.stderr
    with pytest.raises(PathTraversalError):
        await shared_sandbox.read_file("link_passwd")
    with pytest.raises(PathTraversalError):
        await shared_sandbox.write_file("rootdir/tmp/x", "no")
    with pytest.raises(PathTraversalError):
        await shared_sandbox.read_file("../etc/passwd")


async def test_usage_and_stateful_session(shared_sandbox: Sandbox) -> None:
    usage = await shared_sandbox.get_resource_usage()
    assert usage.process_count >= 1
    assert 0 < usage.memory_mb < 256
    assert 0 < usage.memory_percent < 100
    async with shared_sandbox.session() as py:
        await py.run("x = 41")
        r = await py.run("x + 1")
    assert r.value == "42"


async def test_env_vars_and_clean_environment(shared_sandbox: Sandbox) -> None:
    await shared_sandbox.set_env("GREETING", "hi")
    result = await shared_sandbox.run("import os; print(os.environ.get('GREETING'), 'VIRTUAL_ENV' in os.environ)")
    assert result.stdout.split() == ["hi", "False"]
    leaked = await shared_sandbox.run("import os; print(sorted(os.environ))")
    assert "PYTEST_CURRENT_TEST" not in leaked.stdout


WHEEL = r"""
import base64, hashlib, os, zipfile
files = {
    "alphora_demo/__init__.py": b"VALUE = 42\n",
    "alphora_demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: alphora-demo\nVersion: 1.0\n",
    "alphora_demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in files.items())
os.makedirs("wheels", exist_ok=True)
with zipfile.ZipFile("wheels/alphora_demo-1.0-py3-none-any.whl", "w") as whl:
    for name, data in files.items():
        whl.writestr(name, data)
    whl.writestr("alphora_demo-1.0.dist-info/RECORD", record + "alphora_demo-1.0.dist-info/RECORD,,\n")
# pip's user configuration: this wheel directory instead of an index (the sandbox has no network)
os.makedirs(os.path.expanduser("~/.config/pip"), exist_ok=True)
with open(os.path.expanduser("~/.config/pip/pip.conf"), "w") as fh:
    fh.write("[global]\nno-index = true\nfind-links = /workspace/wheels\n")
"""


async def test_pip_user_installs_land_in_the_home_volume(shared_sandbox: Sandbox) -> None:
    made = await shared_sandbox.run(WHEEL)
    assert made.success, made.stderr
    assert not await shared_sandbox.package_installed("alphora-demo")
    installed = await shared_sandbox.install_package("alphora-demo")
    assert installed.success, installed.stderr[-2000:]
    used = await shared_sandbox.run("import alphora_demo; print(alphora_demo.VALUE, alphora_demo.__file__)")
    assert used.stdout.split()[0] == "42", used
    assert used.stdout.split()[1].startswith("/home/sandbox/.local/lib/python3"), used.stdout
    assert await shared_sandbox.package_installed("alphora-demo")
    removed = await shared_sandbox.uninstall_package("alphora-demo")
    assert removed.success, removed.stderr
    assert not await shared_sandbox.package_installed("alphora-demo")
    await shared_sandbox.run("import os; os.remove(os.path.expanduser('~/.config/pip/pip.conf'))")
