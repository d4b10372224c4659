"""The Docker plugin owns its options: DockerOptions validates the config's docker section (from
code, a dict, a YAML file, the environment), errors name the field, and no option turns the
network on. No engine needed: nothing here starts a container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from alphora.sandbox import (
    ConfigurationError,
    Sandbox,
    SandboxConfig,
    SandboxManager,
    config_from_env,
    config_from_file,
)
from alphora.sandbox.config import backend_env_vars
from alphora.sandbox.plugins import get_registry
from alphora.sandbox.rules import DEFAULT_IMAGE
from alphora.sandbox_docker import DockerBackend, DockerOptions
from alphora.sandbox_docker._spec import container_spec


def test_the_plugin_registers_its_options_class() -> None:
    assert get_registry().backend("docker") is DockerBackend
    assert DockerBackend.options_class is DockerOptions
    assert backend_env_vars()["DOCKER_IMAGE"] == (
        ("backends", "docker", "image"),
        "option 'image' of the docker backend",
    )


def test_spec_constructors_map_to_the_docker_section() -> None:
    config = SandboxConfig.docker(image="python:3.11", network_enabled=True)
    assert config.backends == {"docker": DockerOptions(image="python:3.11", network_mode="bridge")}
    assert SandboxConfig.docker().options_for().image == DEFAULT_IMAGE
    # a docker section given to the factory keeps its other options
    kept = SandboxConfig.docker(image="a:b", backends={"docker": {"user": "2000:2000"}})
    assert kept.backends["docker"] == DockerOptions(image="a:b", user="2000:2000", network_mode="none")
    sandbox = Sandbox.create_docker(docker_image="python:3.11-slim")
    assert sandbox.backend.options == {"image": "python:3.11-slim"}
    assert Sandbox.create_docker().backend.image == DEFAULT_IMAGE


docker_options = st.builds(
    DockerOptions,
    image=st.sampled_from(["python:3.11-slim", "alphora/sandbox:base", "reg.example:5000/a/b@sha256:" + "0" * 64]),
    network_mode=st.none() | st.sampled_from(["none", "bridge", "my-net"]),
    user=st.sampled_from(["1000:1000", "sandbox"]),
    tmp_size_mb=st.none() | st.integers(1, 4096),
    labels=st.dictionaries(st.from_regex(r"[a-z.]{1,8}", fullmatch=True), st.text(max_size=5), max_size=3),
    start_timeout=st.floats(min_value=0.5, max_value=600),
    read_only_rootfs=st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(docker_options, st.booleans())
def test_docker_config_round_trips(options: DockerOptions, top_level: bool) -> None:
    config = SandboxConfig(backend_type="docker", backends={"docker": options})
    data = config.to_dict()
    assert SandboxConfig.from_dict(data) == config
    assert SandboxConfig.from_dict(json.loads(json.dumps(data))) == config
    assert SandboxConfig.from_dict(yaml.safe_load(yaml.safe_dump(data))) == config
    if top_level:  # the spec's form: the section next to backend_type
        spec_form = {**data, "docker": data["backends"]["docker"]}
        del spec_form["backends"]
        assert SandboxConfig.from_dict(spec_form) == config
    assert DockerOptions.from_mapping(config.backend_options()) == options


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ({"image": 5}, "image", 5),
        ({"image": ""}, "image", ""),
        ({"imgae": "x"}, "imgae", "x"),
        ({"start_timeout": "soon"}, "start_timeout", "soon"),
        ({"tmp_size_mb": 0}, "tmp_size_mb", 0),
        ({"read_only_rootfs": "maybe"}, "read_only_rootfs", "maybe"),
    ],
)
def test_bad_docker_options_name_the_field(tmp_path: Path, section: dict[str, Any], key: str, value: Any) -> None:
    for data, field in (
        ({"backend_type": "docker", "docker": section}, f"$.docker.{key}"),
        ({"backend_type": "docker", "backends": {"docker": section}}, f"$.backends.docker.{key}"),
    ):
        with pytest.raises(ConfigurationError) as info:
            SandboxConfig.from_dict(data)
        assert (info.value.field, info.value.value) == (field, value)
        assert f"{field}: " in str(info.value)
    path = tmp_path / "sandbox.yaml"
    path.write_text(yaml.safe_dump({"backend_type": "docker", "docker": section}), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        config_from_file(path)
    assert (info.value.field, info.value.value) == (f"$.docker.{key}", value)
    with pytest.raises(ConfigurationError) as info:
        Sandbox.create_docker(backend_options=section)
    assert info.value.field == f"docker.{key}"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SANDBOX_DOCKER_IMAGE", " "),
        ("SANDBOX_DOCKER_START_TIMEOUT", "soon"),
        ("SANDBOX_DOCKER_READ_ONLY_ROOTFS", "perhaps"),
    ],
)
def test_bad_docker_env_vars_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        config_from_env(environ={"SANDBOX_BACKEND": "docker", var: value})
    assert (info.value.field, info.value.value) == (var, value)


def test_env_vars_fill_the_docker_section() -> None:
    config = config_from_env(
        environ={
            "SANDBOX_BACKEND": "docker",
            "SANDBOX_DOCKER_IMAGE": "python:3.11",
            "SANDBOX_DOCKER_RUNTIME": "runsc",
            "SANDBOX_DOCKER_START_TIMEOUT": "90",
        }
    )
    assert config.backends == {"docker": DockerOptions(image="python:3.11", runtime="runsc", start_timeout=90.0)}


def _mode(config: SandboxConfig) -> str:
    spec = container_spec(
        sandbox_id="sb1",
        instance="abc",
        command=["python3"],
        limits=config.resource_limits,
        policy=config.security_policy,
        opts=DockerOptions.from_mapping(config.backend_options()),
    )
    mode: str = spec.host_config["network_mode"]
    return mode


@pytest.mark.parametrize(
    ("limits_on", "policy_on", "expected"),
    [(False, False, "none"), (True, False, "none"), (False, True, "none"), (True, True, "my-net")],
)
def test_options_never_turn_the_network_on(limits_on: bool, policy_on: bool, expected: str) -> None:
    config = SandboxConfig.from_dict(
        {
            "backend_type": "docker",
            "docker": {"network_mode": "my-net"},
            "resource_limits": {"network_enabled": limits_on},
            "security_policy": {"allow_network": policy_on},
        }
    )
    assert _mode(config) == expected
    assert _mode(SandboxConfig.docker(network_enabled=True)) == "bridge"
    assert _mode(SandboxConfig.docker(network_enabled=False)) == "none"


def test_from_config_gives_the_backend_the_section(tmp_path: Path) -> None:
    config = SandboxConfig.from_dict(
        {
            "backend_type": "docker",
            "base_path": str(tmp_path),
            "docker": {"image": "alphora/sandbox:base", "runtime": "runc"},
        }
    )
    sandbox = Sandbox.from_config(config)
    assert isinstance(sandbox.backend, DockerBackend)
    assert sandbox.backend.docker_options == config.options_for("docker")


async def test_manager_docker_image_and_config_section(tmp_path: Path) -> None:
    config = SandboxConfig.from_dict({"backend_type": "local", "docker": {"image": "alphora/sandbox:base"}})
    async with SandboxManager(base_path=tmp_path, config=config, auto_cleanup=False) as manager:
        from_config = await manager.create_docker_sandbox("a", auto_start=False)
        assert from_config.backend.image == "alphora/sandbox:base"  # the config's section, not a default
        named = await manager.create_docker_sandbox("b", docker_image="python:3.11", auto_start=False)
        assert named.backend.image == "python:3.11"
    async with SandboxManager(base_path=tmp_path, docker_image="python:3.11-slim", auto_cleanup=False) as manager:
        assert (await manager.create_docker_sandbox("c", auto_start=False)).backend.image == "python:3.11-slim"
