"""What each tool does once its arguments are validated: calls on the Sandbox facade, shaped
into the tools' result dicts. :class:`~alphora.sandbox.tools.SandboxTools` adds definitions,
validation and error handling on top; nothing here is called with unchecked arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..rules import resolve_timeout
from ..types import ExecutionResult, FileInfo
from .results import error_result, execution_result, truncate_middle

if TYPE_CHECKING:
    from ..sandbox import Sandbox
    from ..session import PythonSession

__all__ = ["MAX_LISTED_FILES", "ToolImplementations"]

#: list_files returns at most this many entries
MAX_LISTED_FILES = 500


def _file_entry(info: FileInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "path": info.path,
        "size": info.size,
        "is_directory": info.is_directory,
        "file_type": info.file_type.value,
    }


class ToolImplementations:
    """The ``_tool_<name>`` coroutines, one per spec; SandboxTools provides the attributes below."""

    sandbox: Sandbox
    use_session: bool
    max_output_chars: int | None
    max_images: int
    max_image_bytes: int

    @property
    def max_timeout(self) -> float:
        raise NotImplementedError

    async def _python_session(self) -> PythonSession:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def _code(self, result: ExecutionResult, timeout: float | None) -> dict[str, Any]:
        limit = resolve_timeout(timeout, self.sandbox.resource_limits)
        return execution_result(
            result,
            self.max_output_chars,
            timeout=limit,
            max_images=self.max_images,
            max_image_bytes=self.max_image_bytes,
        )

    async def _tool_run_python_code(self, code: str, timeout: float | None = None) -> dict[str, Any]:
        if self.use_session:
            session = await self._python_session()
            return self._code(await session.run(code, timeout), timeout)
        return self._code(await self.sandbox.execute_code(code, timeout), timeout)

    async def _tool_run_python_file(
        self, file_path: str, args: list[str], timeout: float | None = None
    ) -> dict[str, Any]:
        return self._code(await self.sandbox.execute_file(file_path, args, timeout), timeout)

    async def _tool_run_shell_command(self, command: str, timeout: float | None = None) -> dict[str, Any]:
        return self._code(await self.sandbox.execute_shell(command, timeout), timeout)

    async def _tool_save_file(self, path: str, content: str) -> dict[str, Any]:
        info = await self.sandbox.save_file(path, content)
        return {"success": True, "path": info.path, "size": info.size, "file_type": info.file_type.value}

    async def _tool_read_file(self, path: str) -> dict[str, Any]:
        data = await self.sandbox.read_file_bytes(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return error_result(
                "tool_error",
                f"'{path}' is not UTF-8 text (a binary file of {len(data):,} bytes); "
                "inspect it with run_python_code instead (e.g. open it in 'rb' mode).",
                path=path,
                size=len(data),
            )
        content, cut = truncate_middle(text, self.max_output_chars)
        out: dict[str, Any] = {"success": True, "path": path, "content": content, "size": len(data)}
        if cut:
            out.update(truncated=True, truncated_chars=cut)
        return out

    async def _tool_delete_file(self, path: str) -> dict[str, Any]:
        if await self.sandbox.delete_file(path):
            return {"success": True, "path": path, "deleted": True}
        return error_result(
            "not_found",
            f"nothing to delete: '{path}' does not exist. Check the name with list_files.",
            path=path,
            deleted=False,
        )

    async def _tool_list_files(self, path: str = "", recursive: bool = False) -> dict[str, Any]:
        entries = await self.sandbox.list_files(path, recursive)
        if path.strip("./") == "":  # the root: leave out the sandbox's own folders (a venv is thousands of files)
            internal = set(self.sandbox.backend.internal_paths)
            entries = [e for e in entries if e.path.split("/", 1)[0] not in internal]
        out: dict[str, Any] = {
            "success": True,
            "path": path,
            "files": [_file_entry(e) for e in entries[:MAX_LISTED_FILES]],
            "count": len(entries),
        }
        if len(entries) > MAX_LISTED_FILES:
            out["truncated"] = True
        return out

    async def _tool_file_exists(self, path: str) -> dict[str, Any]:
        return {"success": True, "path": path, "exists": await self.sandbox.file_exists(path)}

    async def _tool_copy_file(self, source: str, dest: str) -> dict[str, Any]:
        info = await self.sandbox.copy_file(source, dest)
        return {"success": True, "source": source, "dest": info.path}

    async def _tool_move_file(self, source: str, dest: str) -> dict[str, Any]:
        info = await self.sandbox.move_file(source, dest)
        return {"success": True, "source": source, "dest": info.path}

    def _pip_result(self, result: ExecutionResult, **extra: Any) -> dict[str, Any]:
        out = execution_result(result, self.max_output_chars)
        out.pop("value", None)
        return {**out, **extra}

    async def _tool_install_pip_package(self, package: str, version: str | None = None) -> dict[str, Any]:
        result = await self.sandbox.install_package(package, version)
        return self._pip_result(result, package=package, version=version)

    async def _tool_install_pip_packages(self, packages: list[str]) -> dict[str, Any]:
        return self._pip_result(await self.sandbox.install_packages(packages), packages=packages)

    async def _tool_uninstall_pip_package(self, package: str) -> dict[str, Any]:
        return self._pip_result(await self.sandbox.uninstall_package(package), package=package)

    async def _tool_list_installed_packages(self) -> dict[str, Any]:
        packages = await self.sandbox.list_packages()
        return {
            "success": True,
            "packages": [{"name": p.name, "version": p.version} for p in packages],
            "count": len(packages),
        }

    async def _tool_check_package_installed(self, package: str) -> dict[str, Any]:
        return {"success": True, "package": package, "installed": await self.sandbox.package_installed(package)}

    async def _tool_set_environment_variable(self, key: str, value: str) -> dict[str, Any]:
        await self.sandbox.set_env(key, value)
        return {"success": True, "key": key}

    async def _tool_get_environment_variable(self, key: str) -> dict[str, Any]:
        value = await self.sandbox.get_env(key)
        return {"success": True, "key": key, "value": value, "is_set": value is not None}

    async def _tool_get_sandbox_status(self) -> dict[str, Any]:
        limits, policy = self.sandbox.resource_limits, self.sandbox.security_policy
        return {
            "success": True,
            **(await self.sandbox.get_status()),
            "limits": {
                "timeout_seconds": self.max_timeout,
                "memory_mb": limits.memory_mb,
                "cpu_cores": limits.cpu_cores,
                "max_output_size": limits.max_output_size,
                "network_enabled": limits.network_enabled,
            },
            "policy": {
                "allow_shell": policy.allow_shell,
                "allow_file_write": policy.allow_file_write,
                "allow_network": policy.allow_network,
                "max_file_size_mb": policy.max_file_size_mb,
            },
            "stateful_python": self.use_session,
        }

    async def _tool_get_resource_usage(self) -> dict[str, Any]:
        usage = await self.sandbox.get_resource_usage()
        return {"success": True, **usage.to_dict()}

    async def _tool_reset_sandbox(self) -> dict[str, Any]:
        await self.aclose()  # the session dies with the restart; a new one opens on next use
        await self.sandbox.restart()
        deleted = 0
        # list_files("") leaves out the backend's internal_paths (its package environment, scratch
        # space): those are kept; its scratch_paths are emptied
        for entry in await self.sandbox.list_files(""):
            if await self.sandbox.delete_file(entry.path):
                deleted += 1
        for scratch in self.sandbox.backend.scratch_paths:
            if await self.sandbox.file_exists(scratch):
                for child in await self.sandbox.list_files(scratch):
                    await self.sandbox.delete_file(child.path)
        return {"success": True, "status": self.sandbox.status.value, "files_deleted": deleted}
