"""RayBackend: a sandbox placed on a Ray cluster node as an actor that owns a real inner sandbox.

The driver side (this module) holds an actor handle; every primitive is one actor call, bounded
by a timeout (``RayOptions.call_timeout``; a run: its own timeout plus ``run_slack``), and an actor
or node that is gone turns into :class:`SandboxNodeLostError` — a call never hangs on a dead node.
Streaming output and session cells with an ``on_output`` callback use Ray streaming generators:
the node yields each chunk as it arrives and the driver hands it on at once.

``stop()`` stops the inner sandbox and keeps the actor, so the workspace stays on its node for the
next ``start()`` (a pool's reset); ``destroy()`` ends the actor too.

The actor is owned by this process (not detached): when the driver exits or crashes, Ray kills
it, and the inner sandbox goes with it (its runner or container stops when the actor's end of the
connection closes; docs/cluster.md says what is left to the Docker reaper).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from alphora.sandbox.backend import Backend, OutputCallback, OutputChunk, ProcessRequest, emit
from alphora.sandbox.errors import BackendError, ConfigurationError, SandboxNotRunningError
from alphora.sandbox.plugins import get_registry
from alphora.sandbox.rules import resolve_timeout
from alphora.sandbox.session import PythonSession
from alphora.sandbox.storage.base import StorageConfig
from alphora.sandbox.types import ExecutionResult, FileInfo, ResourceUsage

from ._actor import SandboxActor, raise_remote
from .options import RayOptions

__all__ = ["NAMESPACE", "RayBackend", "RaySession", "SandboxNodeLostError"]

log = logging.getLogger("alphora.sandbox_ray")

#: the Ray namespace of every sandbox actor (named ``alphora-sandbox-<id>-<random>``), so a
#: cluster-wide listing finds them (:func:`alphora.sandbox_ray.cluster.list_sandbox_actors`)
NAMESPACE = "alphora-sandbox"


class SandboxNodeLostError(BackendError):
    """The sandbox's actor is gone: its node died, its worker was killed, or it stopped answering.

    Processes, sessions and files written since the last checkpoint on that node are lost. With
    ``recover=True`` and a storage the sandbox was re-created on another node (``recovered_on``
    names it); the failing call itself is not retried."""

    def __init__(self, message: str = "", *, recovered_on: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.recovered_on = recovered_on


_remote_cls: Any = None


def _actor_class() -> Any:
    global _remote_cls
    if _remote_cls is None:
        import ray

        _remote_cls = ray.remote(SandboxActor)
    return _remote_cls


async def _await(ref: Any) -> Any:
    return await ref


class RayBackend(Backend):
    """A sandbox on a Ray cluster: ``Sandbox.create("ray", inner="docker", resources={"sandbox_docker": 1})``.

    The workspace lives on the actor's node (:attr:`workspace_path` names it there once started);
    the driver keeps nothing on its own disk."""

    name = "ray"
    options_class = RayOptions

    def __init__(self, sandbox_id: str, workspace_path: Any = None, **kw: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kw)
        self.ray_options = RayOptions.from_mapping(self.options)
        # the inner backend must be known here too: a typo fails now, naming the extra to install
        inner_cls = get_registry().backend(self.ray_options.inner)
        self.python = inner_cls.python
        self.internal_paths = inner_cls.internal_paths
        self.scratch_paths = inner_cls.scratch_paths
        self.workspace_aliases = inner_cls.workspace_aliases
        self.pip_host_env = inner_cls.pip_host_env
        storage = self.ray_options.storage
        if storage is not None and not isinstance(storage, StorageConfig):
            if not isinstance(storage, Mapping):
                raise ConfigurationError(
                    f"ray.storage must be a StorageConfig or a mapping of its fields, got {storage!r}",
                    field="ray.storage",
                    value=storage,
                )
            storage = StorageConfig(**storage)
        if self.ray_options.recover and storage is None:
            raise ConfigurationError(
                "ray.recover needs ray.storage: a sandbox is re-created from its saved workspace",
                field="ray.recover",
                value=True,
            )
        self._storage: StorageConfig | None = storage
        self._actor: Any = None
        self._lost: str | None = None
        self._running = False
        #: the hex id of the node the actor runs on (None until started)
        self.node_id: str | None = None
        #: the process id of the actor's Ray worker on its node (None until started)
        self.actor_pid: int | None = None
        #: the workspace files restored from the storage when the actor last started
        self.restored: list[str] = []

    # -- Ray plumbing ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            await asyncio.to_thread(ray.init, address=self.ray_options.address, ignore_reinit_error=True)

    def _actor_options(self) -> dict[str, Any]:
        o = self.ray_options
        opts: dict[str, Any] = {
            "name": f"alphora-sandbox-{self.sandbox_id}-{uuid.uuid4().hex[:8]}",
            "namespace": NAMESPACE,
            "max_restarts": 0,  # a restarted actor would hold an empty sandbox: fail loudly instead
            "max_task_retries": 0,  # runs are not idempotent
            "max_concurrency": 1000,
        }
        if o.num_cpus is not None:
            opts["num_cpus"] = o.num_cpus
        if o.memory is not None:
            opts["memory"] = o.memory
        if o.resources:
            opts["resources"] = dict(o.resources)
        if o.node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=o.node_id, soft=False)
        elif o.scheduling_strategy is not None:
            opts["scheduling_strategy"] = o.scheduling_strategy
        opts.update(o.actor_options)
        return opts

    def _spec(self) -> dict[str, Any]:
        o = self.ray_options
        return {
            "sandbox_id": self.sandbox_id,
            "inner": o.inner,
            "inner_options": dict(o.inner_options),
            "resource_limits": self.resource_limits,
            "security_policy": self.security_policy,
            "node_base_path": o.node_base_path,
            "storage": self._storage,
            "storage_prefix": o.storage_prefix,
            "checkpoint_every_call": o.checkpoint_every_call,
        }

    def _where(self) -> str:
        return f"node {self.node_id[:12]}" if self.node_id else "its node"

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Ray's failures as alphora errors: a dead actor or node → SandboxNodeLostError."""
        import ray.exceptions as rex

        try:
            yield
        except (rex.RayActorError, rex.NodeDiedError, rex.OwnerDiedError, rex.LocalRayletDiedError) as exc:
            raise SandboxNodeLostError(
                f"{what}: the sandbox's actor on {self._where()} is gone ({type(exc).__name__}): its node died "
                "or its worker was killed; processes, sessions and unsaved files there are lost",
                sandbox_id=self.sandbox_id,
            ) from exc
        except rex.RayError as exc:
            raise BackendError(f"{what}: Ray failed: {type(exc).__name__}: {exc}", sandbox_id=self.sandbox_id) from exc

    async def _bounded(self, ref: Any, timeout: float, what: str) -> Any:
        import ray

        with self._guard(what):
            try:
                return await asyncio.wait_for(_await(ref), timeout)
            except asyncio.CancelledError:
                # the caller gave up (e.g. left a stream() loop early): so does the actor's call,
                # which kills what it runs like a timeout would
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
                raise
            except asyncio.TimeoutError:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
                raise SandboxNodeLostError(
                    f"{what}: no answer from the sandbox's actor on {self._where()} within {timeout:g}s "
                    "(its node may be unreachable)",
                    sandbox_id=self.sandbox_id,
                ) from None

    async def _lost_and_maybe_recover(self, exc: SandboxNodeLostError) -> SandboxNodeLostError:
        """Forget the dead actor; with ``recover`` place a new one (workspace restored) and say so."""
        old = self.node_id
        self._drop_actor()
        self._lost = str(exc)
        if not self.ray_options.recover:
            return exc
        try:
            await self._start_actor()
            self._running = True
        except Exception as again:  # noqa: BLE001 - reported in the error the caller gets
            return SandboxNodeLostError(
                f"{exc.message}; re-creating it on another node failed too: {again}", sandbox_id=self.sandbox_id
            )
        self._lost = None
        return SandboxNodeLostError(
            f"{exc.message}. It was re-created on node {(self.node_id or '?')[:12]} (was {(old or '?')[:12]}) with "
            f"the workspace of its last checkpoint ({len(self.restored)} files); this call was not retried",
            sandbox_id=self.sandbox_id,
            recovered_on=self.node_id,
        )

    def _drop_actor(self) -> None:
        actor, self._actor = self._actor, None
        self._running = False
        if actor is not None:
            import ray

            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    def _require_actor(self) -> Any:
        if self._actor is None:
            if self._lost:
                raise SandboxNodeLostError(
                    f"{self._lost} (call restart() to place the sandbox again)", sandbox_id=self.sandbox_id
                )
            raise SandboxNotRunningError(f"sandbox {self.sandbox_id} is not started", sandbox_id=self.sandbox_id)
        return self._actor

    async def _call(self, ref_of: Any, timeout: float, what: str) -> Any:
        """Run ``ref_of(actor)`` bounded; a lost actor is forgotten (and re-created when asked)."""
        actor = self._require_actor()
        try:
            tagged = await self._bounded(ref_of(actor), timeout, what)
        except SandboxNodeLostError as exc:
            if self._actor is actor:
                raise await self._lost_and_maybe_recover(exc) from exc.__cause__
            raise
        return raise_remote(tagged, self.sandbox_id)

    async def _prim(self, method: str, *args: Any) -> Any:
        return await self._call(lambda a: a.call.remote(method, *args), self.ray_options.call_timeout, method)

    # -- lifecycle -------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Nothing on the driver's disk: the workspace is made on the node when the actor starts."""
        self._initialized = True

    async def _start_actor(self) -> None:
        await self._connect()
        actor = _actor_class().options(**self._actor_options()).remote(self._spec())
        self._actor = actor
        try:
            info = raise_remote(
                await self._bounded(actor.start.remote(True), self.ray_options.start_timeout, "start"),
                self.sandbox_id,
            )
        except SandboxNodeLostError as exc:
            self._drop_actor()
            if "no answer" not in exc.message:
                raise
            wanted = {k: v for k, v in self._actor_options().items() if k in ("num_cpus", "memory", "resources")}
            raise BackendError(
                f"start: the sandbox's actor was not placed and started within {self.ray_options.start_timeout:g}s: "
                f"no live node may offer what it asks for ({wanted or 'Ray defaults'}"
                f"{', node ' + self.ray_options.node_id if self.ray_options.node_id else ''}), the cluster may be "
                "full, or the inner sandbox was slow to start (raise ray.start_timeout)",
                sandbox_id=self.sandbox_id,
            ) from None
        except BaseException:
            self._drop_actor()
            raise
        self.node_id = info["node_id"]
        self.actor_pid = int(info["pid"])
        self.workspace_path = Path(info["workspace"])
        self.probe_python = info.get("probe_python")  # the inner backend's, on its node
        self.restored = list(info["restored"])
        log.debug("sandbox %s runs on node %s (%s)", self.sandbox_id, self.node_id, self.workspace_path)

    async def start(self) -> None:
        """Place the actor and start its inner sandbox; after stop(), start the same inner sandbox
        again on the same node (its workspace is there)."""
        if self._actor is None:
            self._lost = None
            await self._start_actor()
        elif not self._running:
            await self._call(lambda a: a.resume.remote(), self.ray_options.start_timeout, "start")
        self._running = True

    async def stop(self) -> None:
        """Save the workspace (with a storage) and stop the inner sandbox; the actor stays, holding
        the workspace on its node for a later start(). Idempotent."""
        actor = self._actor
        if actor is None:
            self._lost = None
            return
        if not self._running:
            return
        try:
            tagged = await self._bounded(actor.shutdown.remote(False), self.ray_options.call_timeout, "stop")
        except SandboxNodeLostError:
            self._drop_actor()  # nothing left to stop there
            return
        self._running = False
        raise_remote(tagged, self.sandbox_id)

    async def destroy(self) -> None:
        """Remove the inner sandbox and its workspace on the node, the saved copy in the storage, and
        the actor."""
        actor = self._actor
        if actor is None:
            self._lost = None
            return
        try:
            tagged = await self._bounded(actor.shutdown.remote(True), self.ray_options.call_timeout, "destroy")
        except SandboxNodeLostError:
            tagged = ("ok", None)  # nothing left to remove there
        finally:
            self._drop_actor()
        raise_remote(tagged, self.sandbox_id)

    async def health_check(self) -> bool:
        if self._actor is None or not self._running:
            return False
        try:
            return bool(
                await self._call(
                    lambda a: a.call.remote("health_check"), min(self.ray_options.call_timeout, 10.0), "health"
                )
            )
        except BackendError:
            return False

    async def checkpoint(self) -> list[str]:
        """Save the workspace to the storage now; the paths saved ([] without a storage)."""
        saved = await self._call(lambda a: a.checkpoint.remote(), self.ray_options.call_timeout, "checkpoint")
        return list(saved or [])

    # -- processes -------------------------------------------------------------------------------

    async def run(self, request: ProcessRequest, on_output: OutputCallback | None = None) -> ExecutionResult:
        bound = request.timeout + self.ray_options.run_slack
        if on_output is None:
            result: ExecutionResult = await self._call(lambda a: a.call.remote("run", request), bound, "run")
            return result
        return await self._stream(lambda a: a.run_stream.remote(request), bound, on_output, "run")

    async def _stream(self, gen_of: Any, bound: float, on_output: OutputCallback, what: str) -> ExecutionResult:
        actor = self._require_actor()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        result: ExecutionResult | None = None
        gen = gen_of(actor)
        try:
            while True:
                remaining = max(deadline - loop.time(), 0.001)
                try:
                    ref = await self._bounded(gen.__anext__(), remaining, what)
                except StopAsyncIteration:
                    break
                item = raise_remote(await self._bounded(ref, max(deadline - loop.time(), 0.001), what), self.sandbox_id)
                if isinstance(item, OutputChunk):
                    await emit(on_output, item)
                else:
                    result = item
        except SandboxNodeLostError as exc:
            if self._actor is actor:
                raise await self._lost_and_maybe_recover(exc) from exc.__cause__
            raise
        except asyncio.CancelledError:
            import ray

            with contextlib.suppress(Exception):
                ray.cancel(gen)
            raise
        if result is None:
            raise BackendError(
                f"{what}: the sandbox's actor ended the stream without a result", sandbox_id=self.sandbox_id
            )
        return result

    async def open_session(
        self, name: str = "default", *, env: Mapping[str, str] | None = None, cwd: str = ""
    ) -> PythonSession:
        sid = await self._call(
            lambda a: a.session_open.remote(name, dict(env or {}), cwd), self.ray_options.call_timeout, "session"
        )
        return RaySession(self, self._require_actor(), int(sid), name)

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = await self._prim("pip_command")
        return list(argv), dict(env)

    # -- files -----------------------------------------------------------------------------------

    async def read_bytes(self, path: str) -> bytes:
        data: bytes = await self._prim("read_bytes", path)
        return data

    async def write_bytes(self, path: str, data: bytes) -> None:
        await self._prim("write_bytes", path, data)

    async def stat(self, path: str) -> FileInfo | None:
        info: FileInfo | None = await self._prim("stat", path)
        return info

    async def list_dir(self, path: str, recursive: bool = False) -> list[FileInfo]:
        entries: list[FileInfo] = await self._prim("list_dir", path, recursive)
        return entries

    async def remove(self, path: str) -> bool:
        return bool(await self._prim("remove", path))

    async def copy(self, source: str, dest: str) -> None:
        await self._prim("copy", source, dest)

    async def move(self, source: str, dest: str) -> None:
        await self._prim("move", source, dest)

    async def mkdir(self, path: str) -> None:
        await self._prim("mkdir", path)

    async def get_resource_usage(self) -> ResourceUsage:
        usage: ResourceUsage = await self._prim("get_resource_usage")
        return usage

    def __repr__(self) -> str:
        return f"<RayBackend {self.sandbox_id!r} inner={self.ray_options.inner!r} on {self._where()}>"


class RaySession(PythonSession):
    """A session of the inner sandbox, driven through the actor (state lives on the node)."""

    def __init__(self, backend: RayBackend, actor: Any, sid: int, name: str) -> None:
        self._backend = backend
        self._actor = actor
        self._sid = sid
        self.name = name
        self._closed = False

    def _check(self) -> None:
        if self._backend._actor is not self._actor:
            raise SandboxNodeLostError(
                "the session's sandbox actor was replaced or stopped: its interpreter state is gone",
                sandbox_id=self._backend.sandbox_id,
            )

    async def run(
        self, code: str, timeout: float | None = None, *, on_output: OutputCallback | None = None
    ) -> ExecutionResult:
        self._check()
        b = self._backend
        bound = resolve_timeout(timeout, b.resource_limits) + b.ray_options.run_slack
        if on_output is None:
            result: ExecutionResult = await b._call(
                lambda a: a.session_call.remote(self._sid, "run", code, timeout), bound, "session run"
            )
            return result
        return await b._stream(
            lambda a: a.session_stream.remote(self._sid, code, timeout), bound, on_output, "session run"
        )

    async def fork(self, name: str | None = None, *, copy_workspace: bool = False) -> PythonSession:
        """A copy-on-write fork of this session's interpreter, on the same node (docs/fork.md)."""
        self._check()
        b = self._backend
        sid, fork_name = await b._call(
            lambda a: a.session_fork.remote(self._sid, name, copy_workspace), b.ray_options.call_timeout, "session fork"
        )
        return RaySession(b, self._actor, int(sid), str(fork_name))

    async def reset(self) -> None:
        self._check()
        b = self._backend
        await b._call(lambda a: a.session_call.remote(self._sid, "reset"), b.ray_options.call_timeout, "session reset")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._backend._actor is not self._actor:
            return  # the actor and the session with it are gone
        b = self._backend
        await b._call(lambda a: a.session_call.remote(self._sid, "close"), b.ray_options.call_timeout, "session close")
