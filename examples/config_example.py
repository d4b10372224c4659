"""Configuration: in code, from sandbox.json / sandbox.yaml, from SANDBOX_* variables, and errors.

Run: python examples/config_example.py
"""

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from alphora.sandbox import (
    ConfigurationError,
    ResourceLimits,
    Sandbox,
    SandboxConfig,
    config_from_env,
    config_from_file,
)

HERE = Path(__file__).resolve().parent

BASE = tempfile.mkdtemp(prefix="alphora-config-")


async def main() -> None:
    # the spec's factories
    config = SandboxConfig.local(path="/data/sandboxes", resource_limits=ResourceLimits(timeout_seconds=60))
    print("local:", config.backend_type, config.base_path, config.resource_limits.timeout_seconds)
    config = SandboxConfig.docker(path="/data/sandboxes", image="python:3.11-slim", network_enabled=True)
    print("docker:", config.backend_options(), "network:", config.network_enabled)
    config = SandboxConfig.minio(endpoint="http://localhost:9000", access_key="admin", secret_key="password",
                                 bucket="sandboxes")
    print("minio storage:", config.storage)

    # files (the spec's sandbox.json, and the same in YAML)
    from_json = config_from_file(HERE / "sandbox.json")
    from_yaml = config_from_file(HERE / "sandbox.yaml")
    assert from_json == from_yaml
    print("sandbox.json:", from_json.backend_type, from_json.options_for("docker").image, from_json.resource_limits.timeout_seconds)

    # environment
    os.environ.update({"SANDBOX_BASE_PATH": BASE, "SANDBOX_BACKEND": "local",
                       "SANDBOX_TIMEOUT": "60", "SANDBOX_MEMORY_MB": "512"})
    config = config_from_env()
    print("env:", config.base_path, config.resource_limits.timeout_seconds, config.resource_limits.memory_mb)

    # a sandbox from it
    sandbox = Sandbox.from_config(config)
    async with sandbox:
        result = await sandbox.run("print('configured from the environment')")
        print(result.stdout.strip())
    await sandbox.destroy()

    # round trip and errors
    assert SandboxConfig.from_dict(config.to_dict()) == config
    try:
        SandboxConfig.from_dict({"resource_limits": {"memory_mb": -5}})
    except ConfigurationError as err:
        print("error:", err.field, err.value)
    try:
        config_from_env(environ={"SANDBOX_MEMORY_MB": "lots"})
    except ConfigurationError as err:
        print("error:", err.field, err.value)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(BASE, ignore_errors=True)  # the temporary SANDBOX_BASE_PATH: leave nothing in /tmp
