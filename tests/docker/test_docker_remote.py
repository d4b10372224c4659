"""A remote engine (``DOCKER_HOST=tcp://…``): no bind mount is possible, everything goes through the
engine API and the runner. The engine's unix socket is exposed on a loopback TCP port by a small
forwarder here, so the client really speaks HTTP over TCP to it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from alphora.sandbox import DockerBackend, ResourceLimits, Sandbox
from alphora.sandbox_docker import is_docker_available


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def tcp_engine() -> Iterator[str]:
    if not Path("/var/run/docker.sock").exists():
        pytest.skip("the forwarder needs the local engine's unix socket (a remote DOCKER_HOST is in use)")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect("/var/run/docker.sock")
            conns.extend((client, engine))
            threading.Thread(target=_pump, args=(client, engine), daemon=True).start()
            threading.Thread(target=_pump, args=(engine, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        listener.close()
        for c in conns:
            c.close()


async def test_sandbox_on_a_tcp_engine(tmp_path: Path, image: str, tcp_engine: str) -> None:
    assert is_docker_available(tcp_engine)
    sandbox = Sandbox.create_docker(
        base_path=tmp_path,
        docker_image=image,
        resource_limits=ResourceLimits(timeout_seconds=20),
        backend_options={"docker_host": tcp_engine},
    )
    async with sandbox:
        backend = sandbox.backend
        assert isinstance(backend, DockerBackend)
        assert backend.client.api.base_url.startswith("http://127.0.0.1")
        await sandbox.write_file_bytes("in.bin", b"\x00\x01" * 50_000)
        result = await sandbox.run(
            "d = open('in.bin','rb').read(); open('out.txt','w').write(str(len(d))); print('ok')"
        )
        assert result.stdout == "ok\n"
        assert await sandbox.read_file("out.txt") == "100000"
        timed = await sandbox.run("import time; time.sleep(30)", timeout=1)
        assert timed.timed_out
        results = await asyncio.gather(*(sandbox.run(f"print({i})") for i in range(10)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
        await sandbox.destroy()
