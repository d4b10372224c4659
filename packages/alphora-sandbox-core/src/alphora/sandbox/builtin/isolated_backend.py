"""Built-in plugin: the isolated local tier (``"isolated"``): the local backend inside bubblewrap.

The runner runs under ``bwrap`` in new user, PID, IPC, UTS and network namespaces, as an
unprivileged user with no capabilities, and sees only what it needs: ``/usr`` (and its ``/bin``,
``/lib`` links), a few files of ``/etc`` (CA certificates, the loader cache), the base Python
installation read-only (not the agent's virtualenv: sandbox code runs on the workspace's ``.venv``), a private ``/tmp``, and the workspace read-write. The host's home, other
projects, other sandboxes, its processes and its network are invisible. When the host process
dies, bubblewrap takes every process of the sandbox with it (``--die-with-parent`` and the PID
namespace).

Needs ``bwrap`` (Debian: ``apt install bubblewrap``) and either root or unprivileged user
namespaces. Starting costs a few milliseconds more than ``local``; calls cost the same.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ..errors import BackendError
from ..hookspecs import RegisterBackend
from ..plugins import hookimpl
from ..rules import network_allowed
from ._python_env import base_prefixes, host_pip_root
from .local_backend import LocalBackend

__all__ = ["IsolatedLocalBackend", "bwrap_available"]

#: files and directories of the host's /etc the sandbox may read (when they exist)
ETC_ALLOW: tuple[str, ...] = (
    "/etc/ssl", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/alternatives", "/etc/ld.so.cache",
    "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/mime.types", "/etc/nsswitch.conf",
    "/etc/protocols", "/etc/services", "/etc/pip.conf", "/etc/xdg/pip",
)
#: where the pip package that manages the sandbox's venv appears inside the sandbox
PIP_MOUNT = "/run/alphora-sandbox/pip"
#: extra /etc files only when the network is enabled
ETC_NETWORK: tuple[str, ...] = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf")


def bwrap_available() -> bool:
    """True when the ``bwrap`` binary is on PATH."""
    return shutil.which("bwrap") is not None


class IsolatedLocalBackend(LocalBackend):
    """The local backend in a bubblewrap sandbox: no network unless enabled, no host files outside
    the workspace and the Python installation, no host processes, an unprivileged user."""

    name = "isolated"
    #: pip runs inside bubblewrap, where the host's certificate and config paths may not exist
    pip_host_env = False

    def __init__(self, sandbox_id: str, workspace_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(sandbox_id, workspace_path, **kwargs)
        #: uid/gid inside the sandbox (as root on the host: 1000; otherwise your own)
        default_id = 1000 if os.geteuid() == 0 else os.geteuid()
        self.uid = int(self.options.get("uid", default_id))
        self.gid = int(self.options.get("gid", default_id if os.geteuid() == 0 else os.getegid()))

    @property
    def network_enabled(self) -> bool:
        """Both the limits and the policy must enable the network (fails closed, like Docker)."""
        return network_allowed(self.resource_limits, self.security_policy)

    def bwrap_argv(self) -> list[str]:
        """The bubblewrap command line that wraps the runner."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise BackendError("the 'isolated' backend needs bubblewrap: apt install bubblewrap",
                               sandbox_id=self.sandbox_id)
        argv = [bwrap, "--die-with-parent", "--unshare-user", "--uid", str(self.uid), "--gid", str(self.gid),
                "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "sandbox"]
        if not self.network_enabled:
            argv.append("--unshare-net")
        argv += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for path in (*ETC_ALLOW, *(ETC_NETWORK if self.network_enabled else ())):
            if os.path.exists(path):
                argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        # the base interpreter's installation and the host's pip package (alone), read-only
        for path in self._python_paths():
            argv += ["--ro-bind", path, path]
        pip = host_pip_root()
        if pip is not None:
            argv += ["--ro-bind", os.path.join(pip, "pip"), f"{PIP_MOUNT}/pip"]
        ws = str(self.workspace_path)
        argv += ["--bind", ws, ws, "--chdir", ws, "--"]
        return argv

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

    def _pip_root(self) -> str:
        root = super()._pip_root()
        # the agent's pip is mounted alone at PIP_MOUNT (its site-packages stay outside)
        return PIP_MOUNT if root == host_pip_root() else root

    def _runner_argv(self) -> list[str]:
        return [*self.bwrap_argv(), *super()._runner_argv()]


@hookimpl
def sandbox_register_backends(register: RegisterBackend) -> None:
    register("isolated", IsolatedLocalBackend)
