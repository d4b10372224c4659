from __future__ import annotations

import builtins

import attrs
import pytest

from alphora import sandbox as sb
from alphora.sandbox import (
    ExecutionResult,
    ExecutionStatus,
    FileInfo,
    FileType,
    ResourceLimits,
    SecurityPolicy,
)


def test_namespace_package_has_no_init() -> None:
    import alphora

    assert alphora.__file__ is None  # PEP 420: no alphora/__init__.py in any distribution


def test_spec_names_import() -> None:
    for name in (
        "BackendType",
        "StorageType",
        "SandboxStatus",
        "ExecutionStatus",
        "FileType",
        "ResourceLimits",
        "SecurityPolicy",
        "ExecutionResult",
        "FileInfo",
        "PackageInfo",
        "SandboxInfo",
        "ResourceUsage",
        "SandboxError",
        "SandboxNotFoundError",
        "SandboxAlreadyExistsError",
        "SandboxNotRunningError",
        "SandboxAlreadyRunningError",
        "ExecutionError",
        "ExecutionTimeoutError",
        "ExecutionFailedError",
        "FileSystemError",
        "FileNotFoundError",
        "PathTraversalError",
        "PackageError",
        "PackageInstallError",
        "SecurityViolationError",
        "ShellAccessDeniedError",
        "BackendError",
        "DockerError",
        "ContainerError",
        "StorageError",
        "StorageNotFoundError",
        "ConfigurationError",
    ):
        assert getattr(sb, name) is not None, name
    assert [s.name for s in sb.SandboxStatus] == [
        "CREATED",
        "STARTING",
        "RUNNING",
        "STOPPING",
        "STOPPED",
        "ERROR",
        "DESTROYED",
    ]
    assert [s.name for s in sb.ExecutionStatus] == ["PENDING", "RUNNING", "SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"]
    assert {b.name for b in sb.BackendType} == {"LOCAL", "DOCKER"}
    assert {s.name for s in sb.StorageType} == {"LOCAL", "S3", "MINIO"}


def test_error_tree_and_builtin_bases() -> None:
    assert issubclass(sb.FileNotFoundError, builtins.FileNotFoundError)
    assert issubclass(sb.FileNotFoundError, sb.FileSystemError)
    assert issubclass(sb.ExecutionTimeoutError, builtins.TimeoutError)
    assert issubclass(sb.ExecutionTimeoutError, sb.ExecutionError)
    assert issubclass(sb.ConfigurationError, ValueError)
    assert issubclass(sb.ShellAccessDeniedError, sb.SecurityViolationError)
    assert issubclass(sb.ContainerError, sb.DockerError)
    assert issubclass(sb.DockerError, sb.BackendError)
    assert issubclass(sb.StorageNotFoundError, sb.StorageError)
    assert issubclass(sb.PackageInstallError, sb.PackageError)
    for name in sb.errors.__all__:
        assert issubclass(getattr(sb.errors, name), sb.SandboxError)
    err = sb.PathTraversalError("outside: ../x", path="../x")
    assert err.path == "../x"
    assert str(err) == "outside: ../x"
    with pytest.raises(FileNotFoundError):  # the builtin catches ours
        raise sb.FileNotFoundError("gone", path="a.txt")


def test_resource_limit_presets_are_ordered() -> None:
    lo, mid, hi = ResourceLimits.minimal(), ResourceLimits.standard(), ResourceLimits.high_performance()
    for field in ("timeout_seconds", "memory_mb", "cpu_cores", "max_processes", "max_output_size"):
        assert getattr(lo, field) < getattr(mid, field) < getattr(hi, field), field
    assert mid == ResourceLimits()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        mid.memory_mb = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"), [("memory_mb", 0), ("timeout_seconds", -1), ("memory_mb", "512"), ("network_enabled", "no")]
)
def test_resource_limits_validate(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        ResourceLimits(**{field: value})  # type: ignore[arg-type]


def test_security_policy_presets() -> None:
    strict, permissive = SecurityPolicy.strict(), SecurityPolicy.permissive()
    assert (strict.allow_shell, strict.allow_subprocess, strict.allow_network) == (False, False, False)
    assert "subprocess" in strict.blocked_imports
    assert (permissive.allow_shell, permissive.allow_network, permissive.allow_subprocess) == (True, True, True)
    spec = SecurityPolicy(blocked_imports=["os.system", "subprocess", "ctypes"], blocked_paths=["/etc"])
    assert spec.blocked_imports == ("os.system", "subprocess", "ctypes")


def test_execution_result_shapes() -> None:
    ok = ExecutionResult(stdout="2\n", execution_time=0.01)
    assert ok.success
    assert ok.raise_for_status() is ok
    timeout = ExecutionResult(status=ExecutionStatus.TIMEOUT, stdout="partial", return_code=None, error="timed out")
    assert not timeout.success
    assert timeout.timed_out
    with pytest.raises(sb.ExecutionTimeoutError) as info:
        timeout.raise_for_status()
    assert info.value.result is timeout
    with pytest.raises(TimeoutError):
        timeout.raise_for_status()
    failed = ExecutionResult(status=ExecutionStatus.FAILED, return_code=2, stderr="bad")
    with pytest.raises(sb.ExecutionFailedError):
        failed.raise_for_status()
    assert failed.to_dict()["success"] is False


@pytest.mark.parametrize(
    ("name", "ftype"),
    [
        ("a.py", FileType.PYTHON),
        ("config.json", FileType.JSON),
        ("img.PNG", FileType.IMAGE),
        ("notes.txt", FileType.TEXT),
        ("x.yaml", FileType.YAML),
        ("noext", FileType.UNKNOWN),
    ],
)
def test_file_info_type_and_size(name: str, ftype: FileType) -> None:
    info = FileInfo(name=name, path=f"d/{name}", size=1536)
    assert info.file_type is ftype
    assert info.size_human == "1.5 KB"
    assert FileInfo(name="d", path="d", is_directory=True).file_type is FileType.DIRECTORY
    assert FileInfo(name="z", path="z", size=12).size_human == "12 B"
