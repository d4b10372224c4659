"""Built-in plugin: the isolated local tier (``"isolated"``): the local backend inside bubblewrap.

The runner runs under ``bwrap`` in new user, PID, IPC, UTS and network namespaces, as an
unprivileged user with no capabilities — as root, a host uid leased for this sandbox alone
(:mod:`._host_uid`; never host root, so ``/proc/sys`` stays unwritable, and it is mounted read-only
too), otherwise your own — in a pids cgroup of its own where one can be made (:mod:`._cgroup`), and
sees only what it needs: ``/usr`` (and its ``/bin``, ``/lib`` links), a few files of ``/etc`` (CA
certificates, the loader cache), the base Python installation read-only (not the agent's
virtualenv, script directory or cwd: sandbox code runs on the workspace's ``.venv``), a private
``/tmp``, and the workspace read-write. The host's home, other
projects, other sandboxes, its processes and its network are invisible. When the host process
dies, bubblewrap takes every process of the sandbox with it (``--die-with-parent`` and the PID
namespace).

Needs ``bwrap`` (Debian: ``apt install bubblewrap``) and either root (then also ``unshare``,
``setpriv`` and ``mount`` from util-linux) or unprivileged user namespaces. Starting costs a few
exec()s more than ``local``; calls cost the same.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterable
from typing import Any

from ..egress_bridge import INSIDE_DIR as EGRESS_DIR
from ..errors import BackendError
from ..hookspecs import RegisterBackend
from ..packages import WHEELHOUSE_DIR, wheelhouse_dir, wheelhouse_env
from ..plugins import hookimpl
from ..rules import network_allowed
from ..runner.backend import RunnerBackend
from ._cgroup import wrap_argv
from ._host_uid import RUN_DIR, UidLease, chown_tree, parse_uid_range
from ._python_env import base_prefixes, host_pip_root
from .local_backend import LocalBackend

__all__ = ["IsolatedLocalBackend", "bwrap_available"]

#: files and directories of the host's /etc the sandbox may read (when they exist)
ETC_ALLOW: tuple[str, ...] = (
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/pip.conf",
    "/etc/xdg/pip",
)
#: where the pip package that manages the sandbox's venv appears inside the sandbox
PIP_MOUNT = "/run/alphora-sandbox/pip"
#: as root, mount points (empty directories of the host) where the runner's wrapper, in a private
#: mount namespace of its own, binds the directories bwrap (then unprivileged) cannot reach
STAGE = RUN_DIR / "stage"
#: ``sh -c STAGE_SCRIPT sh <cgroup.procs or /dev/null> <mount point> <dir> … -- <command>``: enter the
#: pids cgroup, bind each <dir> at its mount point, exec the rest
STAGE_SCRIPT = (
    'echo $$ > "$1" || exit 126; shift; '
    'while [ "$1" != -- ]; do mount --bind "$2" "$1" || exit 126; shift 2; done; shift; exec "$@"'
)
#: extra /etc files only when the network is enabled
ETC_NETWORK: tuple[str, ...] = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf")


def _reachable(path: str, uid: int) -> bool:
    """True if ``uid`` (not root, in no group) can reach directory ``path`` (every ancestor searchable
    by others) and list it (as its owner or as others)."""
    try:
        st = os.stat(path)
        if st.st_mode & (0o500 if st.st_uid == uid else 0o005) not in (0o500, 0o005):
            return False
        parent = os.path.dirname(path)
        while parent != path:
            if not os.stat(parent).st_mode & 0o001:
                return False
            path, parent = parent, os.path.dirname(parent)
    except OSError:
        return False
    return True


def bwrap_available() -> bool:
    """True when the ``bwrap`` binary is on PATH."""
    return shutil.which("bwrap") is not None


class IsolatedLocalBackend(LocalBackend):
    """The local backend in a bubblewrap sandbox: no network unless enabled, no host files outside
    the workspace and the Python installation, no host processes, an unprivileged user.

    As root, each sandbox runs as a host uid of its own (backend option ``uid_range=(start, count)``,
    default 100000–165535; see :mod:`._host_uid`), so sandbox code never runs as host root,
    ``RLIMIT_NPROC`` counts this sandbox alone and its files are its own. Not as root, it runs as
    you (already unprivileged)."""

    name = "isolated"
    #: pip runs inside bubblewrap, where the host's certificate and config paths may not exist
    pip_host_env = False
    #: the runner and its spare, plus bubblewrap's monitor and its PID 1
    runner_tasks = 4
    #: bubblewrap forks at once: a shell enters the cgroup before it starts (see runner_argv)
    argv_enters_cgroup = True
    #: an egress policy: no network namespace but loopback, the proxy's socket bound in (docs/egress.md)
    enforces_egress = True

    def __init__(self, sandbox_id: str, workspace_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kwargs)
        #: root on the host: drop to a leased unprivileged host uid before bubblewrap
        self.drop_root = os.geteuid() == 0
        self.uid_range = parse_uid_range(self.options.get("uid_range"))
        #: uid/gid inside the sandbox (as root on the host: 1000; otherwise your own)
        default_id = 1000 if self.drop_root else os.geteuid()
        self.uid = int(self.options.get("uid", default_id))
        self.gid = int(self.options.get("gid", default_id if self.drop_root else os.getegid()))
        self._lease: UidLease | None = None
        #: a host directory of wheels, mounted read-only: pip's only package source (docs/egress.md)
        self.wheelhouse = wheelhouse_dir(self.options.get("wheelhouse"))
        if self.egress_wanted:
            self.runner_tasks += 1  # the runner's egress forwarder

    @property
    def host_uid(self) -> int:
        """The host uid sandbox code runs as (the leased uid as root, else yours)."""
        return self._lease.uid if self._lease is not None else os.geteuid()

    @property
    def network_enabled(self) -> bool:
        """Both the limits and the policy must enable the network (fails closed, like Docker)."""
        return network_allowed(self.resource_limits, self.security_policy)

    async def spawn_runner(self) -> Any:
        # the egress proxy first: the runner's forwarder connects to its socket (given to the
        # sandbox's uid in _prepare_spawn, once that uid is leased)
        await self.start_egress()
        return await super().spawn_runner()

    def _prepare_spawn(self) -> None:
        super()._prepare_spawn()
        if not self.drop_root:
            return
        if self._lease is None:
            self._lease = UidLease.acquire(self.sandbox_id, self.uid_range)
        # the workspace (venv included) belongs to the sandbox's uid; the host side, root, still manages it
        chown_tree(self.workspace_path, self._lease.uid, self._lease.uid)
        if self.egress is not None:
            self.egress.grant(self._lease.uid)

    def _release_environment(self) -> None:
        super()._release_environment()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    def _binds(self) -> list[tuple[str, str]]:
        """(host dir, path inside) of the read-only Python binds: the base installation and pip alone."""
        out = [(path, path) for path in self._python_paths()]
        pip = host_pip_root()
        if pip is not None:
            out.append((os.path.join(pip, "pip"), f"{PIP_MOUNT}/pip"))
        if self.wheelhouse is not None:
            out.append((self.wheelhouse, WHEELHOUSE_DIR))
        return out

    def bwrap_argv(self, sources: dict[str, str] | None = None) -> list[str]:
        """The bubblewrap command line that wraps the runner; ``sources`` maps host directories to where
        the root wrapper staged them (as root: bwrap, unprivileged, may not reach the originals)."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise BackendError(
                "the 'isolated' backend needs bubblewrap: apt install bubblewrap", sandbox_id=self.sandbox_id
            )
        src = sources or {}
        argv = [
            bwrap,
            "--die-with-parent",
            "--unshare-user",
            "--uid",
            str(self.uid),
            "--gid",
            str(self.gid),
            "--cap-drop",
            "ALL",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
        ]
        if not self.network_enabled:
            argv.append("--unshare-net")  # an egress policy too: its only way out is the proxy's socket
        argv += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for path in (*ETC_ALLOW, *(ETC_NETWORK if self.network_enabled else ())):
            if os.path.exists(path):
                argv += ["--ro-bind", path, path]
        # /proc/sys read-only: no sysctl (core_pattern, drop_caches …) is writable whatever the uid
        argv += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev", "--tmpfs", "/tmp"]
        for host, inside in self._binds():
            argv += ["--ro-bind", src.get(host, host), inside]
        if self.egress is not None and self.egress.host_dir is not None:
            argv += ["--ro-bind", str(self.egress.host_dir), EGRESS_DIR]
        ws = str(self.workspace_path)
        argv += ["--bind", src.get(ws, ws), ws, "--chdir", ws, "--"]
        return argv

    def _drop_root_argv(self, runner: list[str]) -> list[str]:
        """As root: a private mount namespace that stages the binds at STAGE, then ``setpriv`` to the
        leased uid (no groups, no capabilities), then bubblewrap, then ``runner``."""
        assert self._lease is not None
        tools = {name: shutil.which(name) for name in ("unshare", "setpriv", "mount")}
        missing = [name for name, path in tools.items() if path is None]
        if missing:
            raise BackendError(
                f"the 'isolated' backend as root needs {', '.join(missing)} (util-linux)", sandbox_id=self.sandbox_id
            )
        uid = str(self._lease.uid)
        ws = str(self.workspace_path)
        hidden = [
            d for d in dict.fromkeys([host for host, _ in self._binds()] + [ws]) if not _reachable(d, self._lease.uid)
        ]
        sources, pairs = {}, []
        for i, host in enumerate(hidden):
            point = STAGE / str(i)
            point.mkdir(parents=True, exist_ok=True, mode=0o755)
            sources[host] = str(point)
            pairs += [str(point), host]
        setpriv = [
            str(tools["setpriv"]),
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            *self.bwrap_argv(sources),
            *runner,
        ]
        if not pairs:
            return self._in_cgroup(setpriv)
        procs = self.pids_cgroup.procs_file if self.pids_cgroup is not None else "/dev/null"
        # unshare execs the shell in the same process, which enters the cgroup before anything forks
        return [
            str(tools["unshare"]),
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            STAGE_SCRIPT,
            "sh",
            procs,
            *pairs,
            "--",
            *setpriv,
        ]

    def _in_cgroup(self, argv: list[str]) -> list[str]:
        return wrap_argv(self.pids_cgroup, argv) if self.pids_cgroup is not None else argv

    def _python_paths(self) -> list[str]:
        """The base interpreter's installation, which the venv's ``bin/python`` points to; never the
        agent's virtualenv, its site-packages or the directories on the agent's ``sys.path``."""
        ws = str(self.workspace_path)
        out: list[str] = []
        for path in sorted(base_prefixes(self.base_python), key=len):
            real = os.path.realpath(path)
            if not os.path.isdir(real) or real.startswith(("/usr/", ws)) or real in ("/", "/usr", "/tmp"):
                continue
            if any(real == p or real.startswith(p + "/") for p in out):
                continue  # already inside a bound parent
            out.append(real)
        return out

    async def pip_command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = await super().pip_command()
        return argv, {**env, **wheelhouse_env(WHEELHOUSE_DIR if self.wheelhouse else None)}

    def _pip_root(self) -> str:
        root = super()._pip_root()
        # the agent's pip is mounted alone at PIP_MOUNT (its site-packages stay outside)
        return PIP_MOUNT if root == host_pip_root() else root

    def runner_argv(self) -> list[str]:
        runner = super().runner_argv()
        if self._lease is not None:
            return self._drop_root_argv(runner)
        return self._in_cgroup([*self.bwrap_argv(), *runner])

    # -- files: written by the sandbox's own uid while it runs ------------------------------------
    # (as root, files the host side creates in-process would belong to root and stay read-only for
    # sandbox code; through the runner they are the sandbox's. Before start they are re-owned by
    # the chown at the next start.)

    def _as_sandbox(self) -> bool:
        return self._lease is not None and self._started

    async def write_bytes(self, path: str, data: bytes) -> None:
        if self._as_sandbox():
            await RunnerBackend.write_bytes(self, path, data)
        else:
            await super().write_bytes(path, data)

    async def write_stream(self, path: str, chunks: AsyncIterable[bytes]) -> None:
        if self._as_sandbox():
            await RunnerBackend.write_stream(self, path, chunks)
        else:
            await super().write_stream(path, chunks)

    async def copy(self, source: str, dest: str) -> None:
        if self._as_sandbox():
            await RunnerBackend.copy(self, source, dest)
        else:
            await super().copy(source, dest)

    async def mkdir(self, path: str) -> None:
        if self._as_sandbox():
            await RunnerBackend.mkdir(self, path)
        else:
            await super().mkdir(path)


@hookimpl
def sandbox_register_backends(register: RegisterBackend) -> None:
    register("isolated", IsolatedLocalBackend)
