"""Which engine addresses are on this machine (no engine needed): an egress policy binds the
proxy's unix socket from the host into the container, which only a local engine can do."""

from __future__ import annotations

import pytest

from alphora.sandbox_docker._errors import engine_is_local


@pytest.mark.parametrize(
    "address",
    [
        "unix:///var/run/docker.sock",
        "/var/run/docker.sock",
        "http+unix://%2Fvar%2Frun%2Fdocker.sock",
        "tcp://127.0.0.1:2375",
        "tcp://127.0.0.2:2375",
        "tcp://localhost:2376",
        "tcp://[::1]:2375",
        "https://127.0.0.1:2376",
    ],
)
def test_local_engines(address: str) -> None:
    assert engine_is_local(address)


@pytest.mark.parametrize(
    "address",
    [
        "tcp://docker.example.test:2375",
        "tcp://[2001:db8::1]:2375",
        "ssh://builder@docker.example.test",
        "https://engine.example.test:2376",
        "tcp://localhost.example.test:2375",
    ],
)
def test_remote_engines(address: str) -> None:
    assert not engine_is_local(address)
