"""The container spec, options, image recipes and stream demultiplexing: no engine needed."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from alphora.sandbox import ConfigurationError, ResourceLimits, SecurityPolicy
from alphora.sandbox_docker import DockerOptions
from alphora.sandbox_docker._setup import SETUP_CAPS
from alphora.sandbox_docker._spec import LABEL, container_spec, search_path
from alphora.sandbox_docker._stream import Demux
from alphora.sandbox_docker.images import RECIPES, UPSTREAM_TAGS, _order, recipe_for_tag, split_pem_bundle

BOOT = ["python3", "-u", "-c", "pass"]


def _spec(
    limits: ResourceLimits | None = None,
    policy: SecurityPolicy | None = None,  # type: ignore[no-untyped-def]
    image_env: list[str] | None = None,
    **opts: object,
):
    return container_spec(
        sandbox_id="sb1",
        instance="abc123",
        command=BOOT,
        image_env=image_env,
        limits=limits or ResourceLimits(),
        policy=policy or SecurityPolicy(),
        opts=DockerOptions.from_mapping(opts),
    )


def test_defaults_are_hardened() -> None:
    spec = _spec(ResourceLimits(memory_mb=300, cpu_cores=1.5, max_processes=10, disk_mb=50, max_open_files=100))
    hc = spec.host_config
    assert hc["network_mode"] == "none"
    assert spec.network_disabled
    assert hc["cap_drop"] == ["ALL"]
    assert hc["security_opt"] == ["no-new-privileges:true"]
    assert hc["read_only"] is True
    assert hc["log_config"] == {"type": "none"}
    # starts as root with the setup step's capabilities only; the setup step drops to the sandbox user
    assert spec.user == "0:0"
    assert spec.sandbox_user == "1000:1000"
    assert spec.setup is True
    assert hc["cap_add"] == list(SETUP_CAPS)
    assert spec.command[:4] == ("python3", "-I", "-S", "-c")
    assert "_USER = '1000:1000'" in spec.command[4]
    assert repr(BOOT) in spec.command[4]
    assert hc["mem_limit"] == hc["memswap_limit"] == 300 * 1024 * 1024
    assert hc["nano_cpus"] == 1_500_000_000
    assert hc["pids_limit"] == 12  # max_processes + the runner and its spare
    assert {"Name": "fsize", "Soft": 50 * 1024 * 1024, "Hard": 50 * 1024 * 1024} in hc["ulimits"]
    assert {"Name": "nofile", "Soft": 100, "Hard": 100} in hc["ulimits"]
    assert "size=50m" in hc["tmpfs"]["/tmp"]
    assert set(spec.volumes.values()) == {"/workspace", "/home/sandbox"}
    assert all(name.startswith("alphora-sb1-abc123-") for name in spec.volumes)
    assert spec.labels[LABEL] == "1"
    assert spec.labels[f"{LABEL}.id"] == "sb1"
    assert spec.labels[f"{LABEL}.pid"].isdigit()


@pytest.mark.parametrize(
    ("limits", "policy", "mode", "expected"),
    [
        (ResourceLimits(), SecurityPolicy(), None, False),
        (ResourceLimits(network_enabled=True), SecurityPolicy(), None, False),
        (ResourceLimits(), SecurityPolicy(allow_network=True), None, False),
        (ResourceLimits(network_enabled=True), SecurityPolicy(allow_network=True), None, True),
        # an explicit network mode picks which network; it never turns the network on
        (ResourceLimits(), SecurityPolicy(), "bridge", False),
        (ResourceLimits(network_enabled=True), SecurityPolicy(), "bridge", False),
        (ResourceLimits(network_enabled=True), SecurityPolicy(allow_network=True), "none", True),
        (ResourceLimits(network_enabled=True), SecurityPolicy(allow_network=True), "bridge", True),
    ],
)
def test_network_switches(limits: ResourceLimits, policy: SecurityPolicy, mode: str | None, expected: bool) -> None:
    spec = _spec(limits, policy, network_mode=mode)
    assert (spec.host_config["network_mode"] != "none") is expected


@pytest.mark.parametrize("user", ["0:0", "root", "0"])
def test_root_on_purpose_has_no_setup_step_and_no_capability(user: str) -> None:
    spec = _spec(user=user)
    assert spec.setup is False
    assert spec.user == user
    assert spec.host_config["cap_add"] == []
    assert spec.command == tuple(BOOT)


def test_path_is_the_images_own_plus_the_users_local_bin() -> None:
    default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert search_path(None) == f"/home/sandbox/.local/bin:{default}"
    assert search_path(["LANG=C", "PATH=/opt/conda/bin:/usr/bin"]) == "/home/sandbox/.local/bin:/opt/conda/bin:/usr/bin"
    assert search_path(["PATH=/home/sandbox/.local/bin:/bin"]) == "/home/sandbox/.local/bin:/bin"
    assert _spec(image_env=["PATH=/opt/py/bin"]).environment["PATH"] == "/home/sandbox/.local/bin:/opt/py/bin"
    assert _spec(image_env=["PATH=/opt/py/bin"], environment={"PATH": "/mine"}).environment["PATH"] == "/mine"


def test_options_reject_unknown_keys_by_name() -> None:
    with pytest.raises(ConfigurationError) as err:
        DockerOptions.from_mapping({"imgae": "x"})
    assert err.value.field == "docker.imgae"
    with pytest.raises(ConfigurationError, match="image"):
        DockerOptions.from_mapping({"image": ""})
    assert DockerOptions.from_mapping({"docker_image": "a:b", "user": None}).image == "a:b"


def test_pem_bundle_split_dedupes() -> None:
    cert = b"-----BEGIN CERTIFICATE-----\nMIIBxx\n-----END CERTIFICATE-----\n"
    other = cert.replace(b"xx", b"yy")
    assert split_pem_bundle(b"junk\n" + cert + cert + other) == [cert, other]
    assert split_pem_bundle(b"no certs") == []


def test_builder_never_takes_the_upstream_tags() -> None:
    for recipe in RECIPES.values():
        assert not set(UPSTREAM_TAGS) & {recipe.tag, *recipe.aliases}, recipe
    for tag in UPSTREAM_TAGS:
        assert recipe_for_tag(tag) is None
        with pytest.raises(ConfigurationError, match="upstream image's tag: the builder does not make it"):
            _order([tag])


def test_recipes_resolve_names_tags_and_parents() -> None:
    assert recipe_for_tag("alphora/sandbox:minimal").name == "base"  # type: ignore[union-attr]
    assert recipe_for_tag("minimal").name == "base"  # type: ignore[union-attr]
    assert recipe_for_tag("alphora/sandbox:datascience").pip_packages == (  # type: ignore[union-attr]
        "numpy",
        "pandas",
        "scikit-learn",
    )
    assert recipe_for_tag("nope:1") is None
    assert [r.name for r in _order(["datascience"])] == ["base", "datascience"]
    assert [r.name for r in _order(["all"])] == ["base", "datascience", "ml"]
    with pytest.raises(ConfigurationError, match="unknown image"):
        _order(["gpu"])


def test_demux_handles_split_and_interleaved_frames() -> None:
    out: list[bytes] = []
    err: list[bytes] = []
    demux = Demux(out.append, err.append)
    frames = b"".join(
        bytes([s, 0, 0, 0]) + len(p).to_bytes(4, "big") + p for s, p in [(1, b"hello "), (2, b"oops"), (1, b"world")]
    )
    for i in range(len(frames)):  # one byte at a time
        demux.feed(frames[i : i + 1])
    assert b"".join(out) == b"hello world"
    assert err == [b"oops"]


def test_unreachable_engine_is_not_available() -> None:
    from alphora.sandbox_docker import is_docker_available

    assert is_docker_available("tcp://127.0.0.1:9", timeout=1.0) is False


def test_missing_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import alphora.sandbox as sb

    monkeypatch.setitem(sys.modules, "alphora.sandbox_docker", None)
    assert sb.is_docker_available() is False
    with pytest.raises(ImportError, match=r"alphora-sandbox\[docker\]"):
        from alphora.sandbox import DockerBackend  # noqa: F401


class _WrappedSocket:
    """Not a socket.socket (like an SSL socket): makes DockerConnection use its thread path."""

    def __init__(self, sock: socket.socket) -> None:
        self._s = sock

    def recv(self, n: int) -> bytes:
        return self._s.recv(n)

    def sendall(self, data: bytes) -> None:
        self._s.sendall(data)

    def settimeout(self, t: float | None) -> None:
        self._s.settimeout(t)

    def shutdown(self, how: int) -> None:
        self._s.shutdown(how)

    def close(self) -> None:
        self._s.close()


@pytest.mark.parametrize("wrapped", [False, True], ids=["event-loop", "thread"])
async def test_docker_connection_demuxes_and_writes(wrapped: bool) -> None:
    from alphora.sandbox_docker._stream import DockerConnection

    ours, engine = socket.socketpair()
    conn = DockerConnection(_WrappedSocket(ours) if wrapped else ours)
    assert conn._native is not wrapped
    frame = b"\x00\x00\x00\x05hello"
    engine.sendall(
        b"\x02\x00\x00\x00\x00\x00\x00\x04oops" + b"\x01\x00\x00\x00" + len(frame).to_bytes(4, "big") + frame
    )
    assert await asyncio.wait_for(conn.reader.readexactly(len(frame)), 5) == frame
    conn.write(b"ping")
    conn.write(b"!")
    await conn.drain()
    assert await asyncio.to_thread(engine.recv, 100) == b"ping!"
    assert "oops" in conn.diagnostics()
    engine.close()
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # EOF reaches the reader
    await conn.close()
