"""DockerBackend: one hardened container per sandbox, with the alphora runner as its main process.

The container's PID 1 is ``python3 -u -S -c BOOT`` (the runner bootstrap), reached through a short
setup step that starts as root, gives the sandbox's volumes to the sandbox user and drops every
privilege for good (see :mod:`._setup`): so any image with python3 works. The backend attaches to
its stdin/stdout before starting it and speaks the runner protocol over that one socket, so a
call costs a round trip on an open stream, never a ``docker exec``. Every primitive (processes,
files, sessions, usage) goes through the runner, which is why the backend works the same against
a remote engine (``DOCKER_HOST=tcp://…``): nothing is bind-mounted from the host.

Storage: two named volumes per sandbox, ``…-workspace`` at ``/workspace`` and ``…-home`` at
``/home/sandbox`` (pip ``--user`` installs land there). ``stop()`` removes the container and keeps
the volumes (``start()`` makes a new container on them, files and installed packages included);
``destroy()`` removes both. If the backend object is dropped without ``destroy()`` (a sandbox
used with ``async with`` and forgotten), a finalizer removes its container and volumes; a host
process that crashed leaves labelled orphans for :func:`~alphora.sandbox_docker.prune_orphans`.
The host-side ``workspace_path`` is not used by this backend (it only names the sandbox).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from alphora.sandbox.backend import OutputCallback, ProcessRequest, minimal_env
from alphora.sandbox.errors import BackendError, DockerError
from alphora.sandbox.packages import WHEELHOUSE_DIR, wheelhouse_env
from alphora.sandbox.runner import bootstrap_argv
from alphora.sandbox.runner.backend import RunnerBackend
from alphora.sandbox.runner.client import RunnerClient
from alphora.sandbox.runner.session import RunnerSession
from alphora.sandbox.runner.transport import RunnerConnection
from alphora.sandbox.session import PythonSession
from alphora.sandbox.types import ExecutionResult, ExecutionStatus

from ._client import in_thread, make_client
from ._errors import build_hint, engine_address, engine_is_local, map_docker_errors
from ._setup import MIN_PYTHON, SETUP_ERROR
from ._spec import HOME_DIR, L_ID, L_ROLE, WORKSPACE_DIR, ContainerSpec, container_spec, owner_labels
from ._stream import DockerConnection
from .options import DockerOptions

if TYPE_CHECKING:
    import docker

__all__ = ["DockerBackend"]

log = logging.getLogger(__name__)

#: prints the kernel's count of OOM kills in this container's memory cgroup (v1 or v2)
_OOM_COUNT = """
import re
n = 0
for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
    try:
        m = re.search(r"^oom_kill (\\d+)$", open(path).read(), re.M)
    except OSError:
        continue
    if m:
        n = int(m.group(1))
        break
print(n)
"""


def _cleanup(base_url: str | None, container: str, volumes: tuple[str, ...]) -> None:
    """Remove a sandbox's container and volumes (finalizer: the backend object is gone)."""
    try:
        import docker.errors

        client = make_client(base_url)
        try:
            client.api.remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        for vol in volumes:
            try:
                client.api.remove_volume(vol, force=True)
            except docker.errors.NotFound:
                pass
    except Exception:  # a finalizer must never raise; the reaper is the safety net
        log.warning("could not remove docker sandbox %s and its volumes", container, exc_info=True)


class DockerBackend(RunnerBackend):
    """Runs each sandbox in its own hardened container (see :mod:`alphora.sandbox_docker`)."""

    name = "docker"
    options_class = DockerOptions
    python = "python3"
    #: absolute names of the workspace that the path guard maps back to relative paths
    workspace_aliases: tuple[str, ...] = (WORKSPACE_DIR,)
    #: an egress policy: network "none", the proxy's socket directory bound in (docs/egress.md)
    enforces_egress = True

    def __init__(
        self,
        sandbox_id: str,
        workspace_path: Any = None,
        *,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(sandbox_id, workspace_path, options=options, **kwargs)
        self.docker_options = DockerOptions.from_mapping(self.options)
        self.image = self.docker_options.image
        self._instance = secrets.token_hex(3)
        self._oom_count = 0
        self._oom_seen_at: float | None = None
        self._container_id: str | None = None
        self._conn: DockerConnection | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        #: the runtime is gVisor's runsc (by name until the engine's runtimes are read at initialize)
        self.gvisor = "runsc" in (self.docker_options.runtime or "")
        self._image_env: list[str] | None = None
        self.spec: ContainerSpec = self._make_spec(None)

    def _make_spec(self, image_env: list[str] | None) -> ContainerSpec:
        self._image_env = image_env
        return container_spec(
            sandbox_id=self.sandbox_id,
            instance=self._instance,
            command=bootstrap_argv(self.python),
            limits=self.resource_limits,
            policy=self.security_policy,
            opts=self.docker_options,
            image_env=image_env,
            gvisor=self.gvisor,
            egress_dir=str(self.egress.host_dir) if self.egress is not None and self.egress.host_dir else None,
        )

    # -- engine access ---------------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        return make_client(self.docker_options.docker_host, timeout=self.docker_options.api_timeout)

    @property
    def container_name(self) -> str:
        return self.spec.name

    @property
    def volume_names(self) -> tuple[str, ...]:
        return tuple(self.spec.volumes)

    @property
    def network_enabled(self) -> bool:
        return not self.spec.network_disabled

    # -- lifecycle -------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Check the engine and the image (no host directory is created)."""
        if self._initialized:
            return
        await in_thread(self._check_image)
        self._initialized = True

    def _check_image(self) -> None:
        """The image exists; the container's PATH is built on the image's own."""
        import docker.errors

        with map_docker_errors("checking the sandbox image", sandbox_id=self.sandbox_id, image=self.image):
            try:
                info = self.client.api.inspect_image(self.image)
            except docker.errors.ImageNotFound:
                raise DockerError(
                    f"docker image {self.image!r} is not on the engine. {build_hint(self.image)}",
                    sandbox_id=self.sandbox_id,
                    image=self.image,
                ) from None
        if self.docker_options.runtime:
            self._check_runtime(self.docker_options.runtime)
        if self.egress_wanted and not engine_is_local(address := engine_address(self.docker_options.docker_host)):
            raise DockerError(
                f"an egress policy binds the egress proxy's unix socket from this machine into the container, "
                f"and the Docker engine at {address} is not on this machine; run the sandbox on a local engine "
                f"(unix socket or TCP to loopback), or use the isolated backend (see docs/egress.md)",
                sandbox_id=self.sandbox_id,
                image=self.image,
            )
        self.spec = self._make_spec(list((info.get("Config") or {}).get("Env") or []))

    def _check_runtime(self, runtime: str) -> None:
        """The runtime option names a runtime the engine has, and one that gives the network the
        sandbox asks for: a runtime registered with ``--network=none`` (gVisor's ``runsc`` on hosts
        where its own network stack cannot start, see docs/docker.md) would silently run without it."""
        with map_docker_errors("checking the container runtime", sandbox_id=self.sandbox_id, image=self.image):
            runtimes = self.client.info().get("Runtimes") or {}
        if runtime not in runtimes:
            raise DockerError(
                f"container runtime {runtime!r} is not registered with the Docker engine (it has: "
                f"{', '.join(sorted(runtimes)) or 'none'}); for gVisor install runsc and add it to "
                f'/etc/docker/daemon.json "runtimes" (see the gVisor section of docs/docker.md)',
                sandbox_id=self.sandbox_id,
                image=self.image,
            )
        entry = runtimes[runtime] or {}
        self.gvisor = os.path.basename(str(entry.get("path") or runtime)) == "runsc"
        args = [str(a) for a in entry.get("runtimeArgs") or []]
        flags = [a.lstrip("-") for a in args]  # runsc takes -flag and --flag, "=value" or a separate value
        no_net = any(
            f == "network=none" or (f == "network" and args[i + 1 : i + 2] == ["none"]) for i, f in enumerate(flags)
        )
        host_uds = any(
            f in ("host-uds=open", "host-uds=all") or (f == "host-uds" and args[i + 1 : i + 2] in (["open"], ["all"]))
            for i, f in enumerate(flags)
        )
        if self.gvisor and self.egress_wanted and not host_uds:
            raise DockerError(
                f"an egress policy needs the sandbox to reach the egress proxy's unix socket, bound in from the "
                f"host, and gVisor refuses host sockets unless runsc runs with --host-uds=open; container runtime "
                f"{runtime!r} is registered with {' '.join(args) or 'no arguments'}. Register a runtime with "
                f'"runtimeArgs": ["--network=none", "--host-uds=open"] (.ci/docker-setup.sh registers one as '
                f'"runsc-egress") and use it, or use the default runtime (see the runsc row of docs/egress.md)',
                sandbox_id=self.sandbox_id,
                image=self.image,
            )
        if self.network_enabled and no_net:
            raise DockerError(
                f"network access was asked for, but container runtime {runtime!r} is registered with "
                f"--network=none, so its containers have no network; run without network, or register "
                f"a runtime that has one (see the gVisor section of docs/docker.md)",
                sandbox_id=self.sandbox_id,
                image=self.image,
            )

    def _no_python(self, explanation: str) -> DockerError | None:
        """The engine could not start the entrypoint because the image has no python3 (runc: ``exec:
        "python3": executable file not found in $PATH``, or ``…: no such file or directory``)."""
        missing = "executable file not found" in explanation or "no such file or directory" in explanation
        if missing and f'exec: "{self.spec.command[0]}"' in explanation:
            path = self.spec.environment.get("PATH", "")
            floor = ".".join(map(str, MIN_PYTHON))
            return DockerError(
                f"image {self.image!r} has no python3 (looked in PATH={path}): the sandbox runs a small "
                f"stdlib-only Python program in the container, so the image needs python3 ({floor} or newer) on "
                f"its PATH. Use an image that has it, e.g. python:3.11-slim, or alphora/sandbox:base "
                f"(alphora-sandbox docker build base)",
                sandbox_id=self.sandbox_id,
                image=self.image,
            )
        return None

    def _create_and_attach(self) -> tuple[str, Any]:
        """(Re)create the container on the sandbox's volumes, attach to it, start it."""
        import docker.errors
        import docker.types

        spec = self.spec
        api = self.client.api
        with map_docker_errors("starting the sandbox container", sandbox_id=self.sandbox_id, image=spec.image):
            try:
                api.remove_container(spec.name, force=True)
            except docker.errors.NotFound:
                pass
            vol_labels = {**owner_labels(), L_ID: self.sandbox_id, L_ROLE: "volume"}
            for vol in spec.volumes:
                api.create_volume(name=vol, labels=vol_labels)
            self._arm_finalizer()
            hc = dict(spec.host_config)
            hc["ulimits"] = [docker.types.Ulimit(name=u["Name"], soft=u["Soft"], hard=u["Hard"]) for u in hc["ulimits"]]
            host_config = api.create_host_config(**hc)
            created = api.create_container(
                spec.image,
                entrypoint=list(spec.command),
                user=spec.user,
                stdin_open=True,
                tty=False,
                labels=spec.labels,
                environment=spec.environment,
                working_dir=WORKSPACE_DIR,
                hostname="sandbox",
                name=spec.name,
                network_disabled=spec.network_disabled,
                host_config=host_config,
            )
            cid = str(created["Id"])
            sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            try:
                api.start(cid)
            except BaseException as exc:
                sock.close()
                no_python = self._no_python(str(getattr(exc, "explanation", "") or ""))
                if no_python is not None:
                    api.remove_container(cid, force=True)
                    raise no_python from None
                raise
            return cid, sock

    def _arm_finalizer(self) -> None:
        if self._finalizer is None or not self._finalizer.alive:
            self._finalizer = weakref.finalize(
                self, _cleanup, self.docker_options.docker_host, self.spec.name, tuple(self.spec.volumes)
            )

    def _egress_owner(self) -> tuple[int | None, bool]:
        """Who gets the egress socket: the container user's uid, or shared when it is a name."""
        uid = self.docker_options.user.partition(":")[0]
        return (int(uid), False) if uid.isdigit() else (None, True)

    async def spawn_runner(self) -> RunnerConnection:
        if self.egress_wanted and self.egress is None:
            owner, shared = self._egress_owner()
            await self.start_egress(owner=owner, shared=shared)
            self.spec = self._make_spec(self._image_env)  # now with the proxy's directory bound in
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._create_and_attach)
        try:
            cid, sock = await asyncio.wait_for(asyncio.shield(fut), self.docker_options.start_timeout)
        except asyncio.TimeoutError:
            raise DockerError(
                f"the sandbox container did not start within {self.docker_options.start_timeout:g}s",
                sandbox_id=self.sandbox_id,
            ) from None
        except asyncio.CancelledError:
            # the engine call keeps going in its thread; remove what it makes once it is done
            fut.add_done_callback(lambda _f: loop.run_in_executor(None, self._remove_container_sync))
            raise
        self._container_id = cid
        self._oom_count = 0  # a new container is a new memory cgroup
        self._oom_seen_at = None
        self._conn = DockerConnection(sock)
        return self._conn

    async def _connect(self) -> RunnerClient:
        """Start the container and handshake with its runner; a setup step that refused (old
        python3, unknown user, a privilege drop that did not hold) is one DockerError naming the image."""
        try:
            return await super()._connect()
        except BackendError as exc:
            lines = self._conn.stderr_lines() if self._conn is not None else []
            refusal = next((line for line in lines if line.startswith(SETUP_ERROR)), None)
            if refusal is None:
                raise
            raise DockerError(
                f"the sandbox cannot start in image {self.image!r}: {refusal[len(SETUP_ERROR) :].strip()}",
                sandbox_id=self.sandbox_id,
                image=self.image,
            ) from exc

    def _remove_container_sync(self) -> None:
        import docker.errors

        with map_docker_errors("removing the sandbox container", sandbox_id=self.sandbox_id):
            try:
                self.client.api.remove_container(self.spec.name, force=True)
            except docker.errors.NotFound:
                pass
        self._container_id = None

    def _remove_volumes_sync(self) -> None:
        import docker.errors

        with map_docker_errors("removing the sandbox volumes", sandbox_id=self.sandbox_id):
            for vol in self.spec.volumes:
                try:
                    self.client.api.remove_volume(vol, force=True)
                except docker.errors.NotFound:
                    pass

    async def stop_environment(self) -> None:
        await in_thread(self._remove_container_sync)

    async def destroy(self) -> None:
        """Stop, then remove the container and the sandbox's volumes."""
        try:
            await self.stop()
        finally:
            await in_thread(self._remove_container_sync)
            await in_thread(self._remove_volumes_sync)
            if self._finalizer is not None:
                self._finalizer.detach()

    async def container_state(self) -> dict[str, Any] | None:
        """The engine's ``State`` of the container, or None when there is none."""
        import docker.errors

        def inspect() -> dict[str, Any] | None:
            with map_docker_errors("inspecting the sandbox container", sandbox_id=self.sandbox_id):
                try:
                    return dict(self.client.api.inspect_container(self.spec.name)["State"])
                except docker.errors.NotFound:
                    return None

        return await in_thread(inspect)

    # -- the runner's environment ----------------------------------------------------------------

    def runner_workspace(self) -> str | None:
        return WORKSPACE_DIR

    def runner_env(self) -> dict[str, str]:
        bridge = self.egress
        ca_bundle = bridge.ca_bundle if bridge is not None else None
        env = minimal_env(
            WORKSPACE_DIR,
            home=HOME_DIR,
            tmpdir="/tmp",
            path=self.spec.environment["PATH"],
            proxy=bridge.proxy_url if bridge is not None else None,
            ca_bundle=ca_bundle,
        )
        if ca_bundle is None:
            system = "/etc/ssl/certs/ca-certificates.crt"
            env.update(SSL_CERT_FILE=system, PIP_CERT=system, REQUESTS_CA_BUNDLE=system)
        return env

    def runner_limits(self) -> dict[str, int]:
        # memory and process counts are the container's cgroup limits (an RLIMIT_NPROC would count
        # every uid-1000 process on the host); per-file size and open files are rlimits as well.
        # Under gVisor the kernel is the sandbox's own, so RLIMIT_NPROC counts only this sandbox's
        # processes: it holds max_processes, as the pids cgroup must leave room for gVisor's threads.
        rl = self.resource_limits
        limits = {"fsize_bytes": rl.disk_mb * 1024 * 1024, "nofile": rl.max_open_files}
        if self.gvisor:
            limits["nproc"] = rl.max_processes
        return limits

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        # the image's site-packages is read-only: pip installs into ~/.local (the home volume)
        return [self.python, "-m", "pip"], {
            "PIP_USER": "1",
            "PIP_NO_CACHE_DIR": "1",
            "PIP_NO_WARN_SCRIPT_LOCATION": "1",
            **wheelhouse_env(WHEELHOUSE_DIR if self.docker_options.wheelhouse else None),
        }

    # -- processes -------------------------------------------------------------------------------

    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        started = time.monotonic()
        result = await super().run(request, on_output)
        if result.status is ExecutionStatus.FAILED and result.return_code == -9:
            if await self._oom_happened(since=started):
                return self._oom_result(result)
        elif result.status is ExecutionStatus.FAILED and result.return_code is None:
            state = await self.container_state()
            if state is not None and state.get("OOMKilled"):
                return attrs.evolve(
                    result,
                    oom_killed=True,
                    error=f"out of memory: the sandbox's container was OOM-killed (memory limit "
                    f"{self.resource_limits.memory_mb} MB); it is restarted on the next call",
                )
        return result

    async def open_session(
        self, name: str = "default", *, env: Mapping[str, str] | None = None, cwd: str = ""
    ) -> PythonSession:
        session = _DockerSession(self, name, env=env, cwd=cwd)
        await session.open()
        return session

    def _oom_result(self, result: ExecutionResult) -> ExecutionResult:
        return attrs.evolve(
            result,
            oom_killed=True,
            error=f"out of memory: killed by the kernel's OOM killer (memory limit {self.resource_limits.memory_mb} MB)"
            + ("; the session's state was lost" if result.state_lost else ""),
        )

    async def _oom_happened(self, since: float) -> bool:
        """Did the container's memory cgroup OOM-kill something since ``since`` (monotonic)?

        The kernel counts OOM kills per cgroup; the count going up since we last looked means one
        happened. Several calls killed in one OOM episode each ask: the first sees the count go up,
        the others see that an increase was seen after they started."""
        probe = await super().run(ProcessRequest(kind="python", code=_OOM_COUNT, timeout=15.0, max_output=4096))
        try:
            count = int(probe.stdout.strip() or "0")
        except ValueError:
            return False
        if count > self._oom_count:
            self._oom_count = count
            self._oom_seen_at = time.monotonic()
            return True
        return self._oom_seen_at is not None and self._oom_seen_at >= since

    #: get_resource_usage() reports the container's memory cgroup (usage and limit), computed by the runner
    memory_cgroup = True

    def __repr__(self) -> str:
        return f"<DockerBackend {self.sandbox_id!r} image={self.image!r} container={self.spec.name!r}>"


class _DockerSession(RunnerSession):
    """A runner session that reports an OOM-killed interpreter as ``oom_killed``."""

    backend: DockerBackend

    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        started = time.monotonic()
        result = await super().run(code, timeout, on_output=on_output)
        if (
            result.status is ExecutionStatus.FAILED
            and result.state_lost
            and not result.oom_killed
            and await self.backend._oom_happened(since=started)
        ):
            return self.backend._oom_result(result)
        return result
