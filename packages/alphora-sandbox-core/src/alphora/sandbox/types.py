"""Enums, limits, policies and result types of the public API (the spec's 类型定义)."""

from __future__ import annotations

import enum
import fnmatch
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs
from attrs import validators as v

from .egress.policy import EgressPolicy
from .errors import ExecutionFailedError, ExecutionTimeoutError

__all__ = [
    "Attachment",
    "BackendType",
    "ExecutionResult",
    "ExecutionStatus",
    "FileInfo",
    "FileType",
    "PackageInfo",
    "ResourceLimits",
    "ResourceUsage",
    "SandboxInfo",
    "SandboxStatus",
    "SecurityPolicy",
    "StorageType",
    "human_size",
]


class _StrEnum(str, enum.Enum):
    """A str-valued enum that prints as ``FileType.JSON`` on every Python (``.value`` is ``"json"``)."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


class BackendType(_StrEnum):
    """Built-in execution backends. Plugins may register more by name (a plain string)."""

    LOCAL = "local"
    DOCKER = "docker"


class StorageType(_StrEnum):
    LOCAL = "local"
    S3 = "s3"
    MINIO = "minio"


class SandboxStatus(_StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    DESTROYED = "destroyed"


class ExecutionStatus(_StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class FileType(_StrEnum):
    TEXT = "text"
    PYTHON = "python"
    JSON = "json"
    YAML = "yaml"
    CSV = "csv"
    MARKDOWN = "markdown"
    HTML = "html"
    IMAGE = "image"
    PDF = "pdf"
    ARCHIVE = "archive"
    BINARY = "binary"
    DIRECTORY = "directory"
    UNKNOWN = "unknown"

    @classmethod
    def from_name(cls, name: str) -> FileType:
        """Classify a file by its name (extension)."""
        lower = name.lower()
        for patterns, ftype in _FILE_TYPE_PATTERNS:
            if any(fnmatch.fnmatch(lower, p) for p in patterns):
                return ftype
        return cls.UNKNOWN


_FILE_TYPE_PATTERNS: tuple[tuple[tuple[str, ...], FileType], ...] = (
    (("*.py", "*.pyw", "*.pyi", "*.ipynb"), FileType.PYTHON),
    (("*.json", "*.jsonl"), FileType.JSON),
    (("*.yaml", "*.yml"), FileType.YAML),
    (("*.csv", "*.tsv"), FileType.CSV),
    (("*.md", "*.markdown", "*.rst"), FileType.MARKDOWN),
    (("*.html", "*.htm"), FileType.HTML),
    (("*.png", "*.jpg", "*.jpeg", "*.gif", "*.bmp", "*.webp", "*.svg", "*.ico", "*.tiff"), FileType.IMAGE),
    (("*.pdf",), FileType.PDF),
    (("*.zip", "*.tar", "*.gz", "*.tgz", "*.bz2", "*.xz", "*.7z", "*.whl"), FileType.ARCHIVE),
    (
        (
            "*.txt",
            "*.log",
            "*.ini",
            "*.cfg",
            "*.toml",
            "*.sh",
            "*.xml",
            "*.sql",
            "*.js",
            "*.ts",
            "*.css",
            "*.c",
            "*.h",
            "*.cpp",
            "*.java",
            "*.go",
            "*.rs",
            "*.env",
            "*.conf",
        ),
        FileType.TEXT,
    ),
    (("*.bin", "*.exe", "*.so", "*.dll", "*.dat", "*.pkl", "*.npy", "*.parquet"), FileType.BINARY),
)


def human_size(size: float) -> str:
    """Format a byte count for people: ``1536`` → ``'1.5 KB'``."""
    units = ("B", "KB", "MB", "GB", "TB", "PB")
    value = float(size)
    for unit in units:
        if abs(value) < 1024 or unit == units[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    # NaN compares false with everything: without isfinite it would pass ``<= 0`` and disable the
    # limit (a NaN timeout_seconds is no timeout, and no cap on a model's timeout)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def _opt_positive(inst: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _positive(inst, attribute, value)


_NUM = (int, float)


@attrs.frozen(kw_only=True)
class ResourceLimits:
    """Limits for every call in a sandbox. Each backend enforces what it can and documents the rest.

    ``timeout_seconds`` is the default per-call timeout; ``max_output_size`` caps stdout and stderr
    (each) in bytes while they stream.
    """

    timeout_seconds: float = attrs.field(default=30.0, validator=[v.instance_of(_NUM), _positive])
    memory_mb: int = attrs.field(default=512, validator=[v.instance_of(int), _positive])
    cpu_cores: float = attrs.field(default=1.0, validator=[v.instance_of(_NUM), _positive])
    disk_mb: int = attrs.field(default=1024, validator=[v.instance_of(int), _positive])
    max_processes: int = attrs.field(default=64, validator=[v.instance_of(int), _positive])
    max_threads: int = attrs.field(default=256, validator=[v.instance_of(int), _positive])
    network_enabled: bool = attrs.field(default=False, validator=v.instance_of(bool))
    max_output_size: int = attrs.field(default=10 * 1024 * 1024, validator=[v.instance_of(int), _positive])
    max_open_files: int = attrs.field(default=1024, validator=[v.instance_of(int), _positive])

    @classmethod
    def minimal(cls) -> ResourceLimits:
        """Light tasks: 10 s, 128 MB, half a core."""
        return cls(
            timeout_seconds=10,
            memory_mb=128,
            cpu_cores=0.5,
            disk_mb=256,
            max_processes=16,
            max_threads=64,
            max_output_size=1024 * 1024,
        )

    @classmethod
    def standard(cls) -> ResourceLimits:
        """The defaults: 30 s, 512 MB, one core."""
        return cls()

    @classmethod
    def high_performance(cls) -> ResourceLimits:
        """Heavy tasks: 5 min, 4 GB, 4 cores."""
        return cls(
            timeout_seconds=300,
            memory_mb=4096,
            cpu_cores=4.0,
            disk_mb=10240,
            max_processes=256,
            max_threads=1024,
            max_output_size=50 * 1024 * 1024,
        )

    def evolve(self, **changes: Any) -> ResourceLimits:
        return attrs.evolve(self, **changes)


def _str_tuple(value: Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _egress(value: Any) -> EgressPolicy | None:
    """``SecurityPolicy.egress``: None, an :class:`EgressPolicy`, or its plain form (a config file's
    mapping ``{"allow": [...], "credentials": {...}}`` or a list of allow entries)."""
    if value is None or isinstance(value, EgressPolicy):
        return value
    return EgressPolicy.from_value(value)


@attrs.frozen(kw_only=True)
class SecurityPolicy:
    """What sandbox code may do. Checked before every call, on every backend.

    On the local backend these checks are a guard rail against accidents, not a security
    boundary: isolation comes from the backend (use Docker for untrusted code).

    ``egress``: an :class:`~alphora.sandbox.egress.EgressPolicy` gives the sandbox a network
    through the library's egress proxy only, allowing what the policy allows (default deny); see
    :func:`alphora.sandbox.rules.network_access` and docs/egress.md. Docker and isolated enforce it
    outside the sandbox; local cannot (it refuses unless its ``allow_unenforced_egress`` option is set).
    """

    allow_shell: bool = attrs.field(default=True, validator=v.instance_of(bool))
    allow_network: bool = attrs.field(default=False, validator=v.instance_of(bool))
    allow_file_write: bool = attrs.field(default=True, validator=v.instance_of(bool))
    allow_subprocess: bool = attrs.field(default=True, validator=v.instance_of(bool))
    blocked_imports: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    blocked_paths: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    max_file_size_mb: float = attrs.field(default=100, validator=[v.instance_of(_NUM), _positive])
    audit_enabled: bool = attrs.field(default=False, validator=v.instance_of(bool))
    egress: EgressPolicy | None = attrs.field(default=None, converter=_egress)

    @classmethod
    def strict(cls) -> SecurityPolicy:
        """No shell, no network, no subprocesses, dangerous modules blocked."""
        return cls(
            allow_shell=False,
            allow_network=False,
            allow_file_write=True,
            allow_subprocess=False,
            blocked_imports=(
                "os.system",
                "os.popen",
                "os.exec*",
                "os.spawn*",
                "os.fork",
                "subprocess",
                "ctypes",
                "pty",
                "socket",
                "multiprocessing",
                "shutil.rmtree",
            ),
            blocked_paths=("/etc", "/usr", "/root", "/proc", "/sys", "/dev", "/var", "/home", "/boot"),
            max_file_size_mb=10,
            audit_enabled=True,
        )

    @classmethod
    def permissive(cls) -> SecurityPolicy:
        """Everything allowed (the backend's isolation is the only boundary)."""
        return cls(
            allow_shell=True, allow_network=True, allow_file_write=True, allow_subprocess=True, max_file_size_mb=1024
        )

    @property
    def max_file_size_bytes(self) -> int:
        return int(self.max_file_size_mb * 1024 * 1024)


@attrs.frozen(kw_only=True)
class Attachment:
    """A rich output of a session cell in one MIME type: a figure (``image/png``, ``image/svg+xml``),
    an HTML or Markdown table, JSON, LaTeX … (see docs/rich-outputs.md). Text types are UTF-8 bytes
    (:attr:`text` decodes them). ``truncated``: the output was over the size cap; text was cut and
    ends with a mark saying so, an image was left out (``data`` is empty)."""

    mime_type: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    name: str = ""
    truncated: bool = False

    @property
    def is_text(self) -> bool:
        """Whether the data is text (``text/*``, SVG, JSON): UTF-8 bytes."""
        from .runner.display import is_text_mime

        return is_text_mime(self.mime_type)

    @property
    def is_image(self) -> bool:
        """Whether the data is a raster image a vision model can take (PNG, JPEG, GIF, WebP)."""
        return self.mime_type in ("image/png", "image/jpeg", "image/gif", "image/webp")

    @property
    def text(self) -> str:
        """The data decoded as UTF-8 (text types); ValueError for binary ones."""
        if not self.is_text:
            raise ValueError(f"{self.mime_type} is not a text type; use .data")
        return self.data.decode("utf-8", "replace")


@attrs.frozen(kw_only=True)
class ExecutionResult:
    """What a call produced. Failing user code is data here, not an exception.

    A timeout gives ``status == TIMEOUT`` with the output produced before the kill; nothing is
    raised unless you call :meth:`raise_for_status`.
    """

    status: ExecutionStatus = ExecutionStatus.SUCCESS
    stdout: str = ""
    stderr: str = ""
    return_code: int | None = 0
    execution_time: float = 0.0
    error: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    oom_killed: bool = False
    #: repr of the trailing expression's value (session mode), else None
    value: str | None = None
    attachments: tuple[Attachment, ...] = ()
    #: True when a session had to be restarted and its variables are gone
    state_lost: bool = False
    #: processes the call left running that were killed when it ended: all of them with
    #: ``keep_background=False``, else a leftover tree that hit the process limit or kept forking
    #: (then ``error`` says so); see docs/limits-and-policy.md
    background_killed: int = 0
    started_at: float = attrs.field(factory=time.time)

    @property
    def success(self) -> bool:
        return self.status is ExecutionStatus.SUCCESS

    @property
    def timed_out(self) -> bool:
        return self.status is ExecutionStatus.TIMEOUT

    @property
    def output(self) -> str:
        """stdout followed by stderr, as a model would want to read it."""
        if self.stderr and self.stdout:
            return self.stdout + ("" if self.stdout.endswith("\n") else "\n") + self.stderr
        return self.stdout or self.stderr

    def raise_for_status(self) -> ExecutionResult:
        """Raise ExecutionTimeoutError / ExecutionFailedError unless the call succeeded."""
        if self.status is ExecutionStatus.TIMEOUT:
            raise ExecutionTimeoutError(self.error or "execution timed out", result=self)
        if not self.success:
            raise ExecutionFailedError(self.error or f"exit code {self.return_code}", result=self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "status": self.status.value,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "return_code": self.return_code,
            "execution_time": self.execution_time,
            "error": self.error,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "oom_killed": self.oom_killed,
            "value": self.value,
            "state_lost": self.state_lost,
            "attachments": [
                {"mime_type": a.mime_type, "name": a.name, "size": len(a.data), "truncated": a.truncated}
                for a in self.attachments
            ],
        }


@attrs.frozen(kw_only=True)
class FileInfo:
    """A file or directory in the workspace; ``path`` is workspace-relative (POSIX)."""

    name: str
    path: str
    size: int = 0
    is_directory: bool = False
    modified_time: datetime | None = None
    permissions: str = ""
    file_type: FileType = attrs.field()

    @file_type.default
    def _file_type_default(self) -> FileType:
        return FileType.DIRECTORY if self.is_directory else FileType.from_name(self.name)

    @property
    def size_human(self) -> str:
        return human_size(self.size)

    @property
    def extension(self) -> str:
        dot = self.name.rfind(".")
        return self.name[dot:] if dot > 0 else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "size": self.size,
            "size_human": self.size_human,
            "is_directory": self.is_directory,
            "file_type": self.file_type.value,
            "modified_time": self.modified_time.isoformat() if self.modified_time else None,
            "permissions": self.permissions,
        }


@attrs.frozen(kw_only=True)
class PackageInfo:
    name: str
    version: str
    location: str = ""

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "location": self.location}


@attrs.frozen(kw_only=True)
class ResourceUsage:
    """A snapshot of what a sandbox uses now (processes it runs, workspace on disk)."""

    cpu_percent: float = 0.0
    memory_mb: float = 0.0
    memory_percent: float = 0.0
    disk_mb: float = 0.0
    process_count: int = 0
    timestamp: datetime = attrs.field(factory=lambda: datetime.now(timezone.utc))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu_percent,
            "memory_mb": self.memory_mb,
            "memory_percent": self.memory_percent,
            "disk_mb": self.disk_mb,
            "process_count": self.process_count,
            "timestamp": self.timestamp.isoformat(),
        }


@attrs.frozen(kw_only=True)
class SandboxInfo:
    sandbox_id: str
    name: str
    backend_type: str
    status: SandboxStatus
    workspace_path: str
    created_at: datetime
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    resource_limits: ResourceLimits = attrs.field(factory=ResourceLimits)
    security_policy: SecurityPolicy = attrs.field(factory=SecurityPolicy)
    #: code executions so far (execute_code/run, execute_file, execute_shell)
    execution_count: int = 0
    metadata: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sandbox_id": self.sandbox_id,
            "name": self.name,
            "backend_type": str(self.backend_type),
            "status": self.status.value,
            "workspace_path": self.workspace_path,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "resource_limits": attrs.asdict(self.resource_limits),
            "security_policy": attrs.asdict(self.security_policy),
            "execution_count": self.execution_count,
            "metadata": dict(self.metadata),
        }
