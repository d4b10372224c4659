"""No Docker engine at the configured address is ONE error that names it first: through the API,
the shared client and the error mapping. No engine is needed: DOCKER_HOST points at a loopback
port where nothing listens."""

from __future__ import annotations

import logging
from pathlib import Path

import docker
import pytest

from alphora.sandbox import DockerError, Sandbox, SandboxStatus
from alphora.sandbox_docker._client import make_client
from alphora.sandbox_docker._errors import map_docker_errors

DEAD = "tcp://127.0.0.1:1"
REFUSED = f"cannot reach the Docker engine at {DEAD}: Connection refused. Is the engine running?"


@pytest.fixture
def dead_engine(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCKER_HOST", DEAD)
    for var in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(var, raising=False)
    return DEAD


def _loud(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records a user sees by default: WARNING and above, or anything carrying a traceback."""
    return [r for r in caplog.records if r.levelno >= logging.WARNING or (r.exc_info and r.levelno > logging.DEBUG)]


async def test_api_start_names_the_engine_not_the_cleanup(
    dead_engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox = Sandbox.create_docker(base_path=tmp_path)
    with pytest.raises(DockerError) as info:
        async with sandbox:
            pytest.fail("the sandbox must not start")
    message = str(info.value)
    assert message.startswith(REFUSED), message
    assert "removing" not in message
    assert "checking" not in message
    assert "DOCKER_HOST" in message  # the fix is part of the message
    assert isinstance(info.value.__cause__, ConnectionRefusedError)  # the real cause, kept
    assert getattr(info.value, "__notes__", []) == []  # the cleanup failed the same way: nothing to add
    assert sandbox.status is SandboxStatus.ERROR
    assert _loud(caplog) == [], [(r.levelname, r.getMessage()) for r in _loud(caplog)]


async def test_api_explicit_start_same_error(
    dead_engine: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox = Sandbox.create_docker(base_path=tmp_path, backend_options={"docker_host": DEAD})
    with pytest.raises(DockerError, match=r"^cannot reach the Docker engine at tcp://127\.0\.0\.1:1: "):
        await sandbox.start()
    assert _loud(caplog) == []


def test_shared_client_names_address_reason_and_fix() -> None:
    with pytest.raises(DockerError) as info:
        make_client(DEAD)
    assert str(info.value).startswith(REFUSED)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert info.value.__suppress_context__  # the SDK's five wrappers are not printed again


def test_missing_socket_says_so(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(DockerError) as info:
        make_client(address)
    assert str(info.value).startswith(
        f"cannot reach the Docker engine at {address}: No such file or directory. Is the engine running?"
    )


def test_engine_lost_mid_operation_is_named_too() -> None:
    # a client that never negotiated (explicit API version), so the first contact is the call itself
    api = docker.APIClient(base_url=DEAD, version="1.41", timeout=5)
    try:
        with pytest.raises(DockerError) as info, map_docker_errors("removing the sandbox container", sandbox_id="sb1"):
            api.remove_container("alphora-nothing-here", force=True)
    finally:
        api.close()
    assert str(info.value).startswith(
        "cannot reach the Docker engine while removing the sandbox container: Connection refused."
    )
    assert info.value.sandbox_id == "sb1"
