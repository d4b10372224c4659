"""SandboxConfig: the spec's examples, files, environment, errors that name the field, round trips."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from alphora.sandbox import (
    BackendType,
    ConfigurationError,
    ResourceLimits,
    Sandbox,
    SandboxConfig,
    SandboxManager,
    SecurityPolicy,
    config_from_env,
    config_from_file,
)
from alphora.sandbox.backend import Backend
from alphora.sandbox.config import ENV_VARS, backend_env_vars
from alphora.sandbox.plugins import PluginRegistry, hookimpl, make_plugin_manager, set_registry
from alphora.sandbox.storage import StorageConfig

ROOT = Path(__file__).resolve().parents[2]


# -- a third-party backend that declares its own options class ---------------------------------


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class TinyOptions:
    kernel: str = "vmlinux"
    vcpus: int = attrs.field(default=1, validator=_positive)
    debug: bool = False
    tags: dict[str, str] = attrs.field(factory=dict)


class TinyBackend(Backend):
    """Registered only to be looked up (and constructed): its primitives are never called here."""

    name = "tiny"
    options_class = TinyOptions


TinyBackend.__abstractmethods__ = frozenset()  # constructible without the primitives this test never calls


class _TinyPlugin:
    @hookimpl
    def sandbox_register_backends(self, register: Any) -> None:
        register("tiny", TinyBackend)


#: the default registry for this module: built-ins, installed plugins (docker) and the tiny backend
REGISTRY = PluginRegistry(make_plugin_manager(extra_plugins=[_TinyPlugin()]))


@pytest.fixture(autouse=True, scope="module")
def _tiny_registry() -> Iterator[None]:
    previous = set_registry(REGISTRY)
    try:
        yield
    finally:
        set_registry(previous)


SPEC = Path("/work/shared/seed/alphora-sandbox-README.zh.md")


def _spec_sandbox_json() -> str:
    """The sandbox.json example, cut out of the spec when it is at hand, else the examples/ copy."""
    if SPEC.exists():
        text = SPEC.read_text(encoding="utf-8")
        start = text.index("(sandbox.json)")
        match = re.search(r"```json\n(.*?)```", text[start:], re.S)
        assert match is not None
        return match.group(1)
    return (ROOT / "examples" / "sandbox.json").read_text(encoding="utf-8")


# -- the spec's examples ----------------------------------------------------------------------


def test_spec_local_config() -> None:
    config = SandboxConfig.local(path="/data/sandboxes", resource_limits=ResourceLimits(timeout_seconds=60))
    assert config.backend_type == "local"
    assert config.base_path == "/data/sandboxes"
    assert config.resource_limits.timeout_seconds == 60
    assert config.backend_options() == {}
    assert SandboxConfig.from_dict(config.to_dict()) == config


def test_spec_docker_config_with_network_turns_it_on_everywhere() -> None:
    config = SandboxConfig.docker(path="/data/sandboxes", image="python:3.11-slim", network_enabled=True)
    assert config.backend_type == BackendType.DOCKER.value
    assert config.options_for("docker").image == "python:3.11-slim"
    assert config.resource_limits.network_enabled is True
    assert config.security_policy.allow_network is True
    assert config.network_enabled is True
    assert config.backend_options()["image"] == "python:3.11-slim"
    assert config.backend_options()["network_mode"] == "bridge"
    assert SandboxConfig.from_dict(config.to_dict()) == config


def test_docker_config_without_network_is_isolated() -> None:
    config = SandboxConfig.docker(
        image="python:3.11",
        resource_limits=ResourceLimits(network_enabled=True),
        security_policy=SecurityPolicy.permissive(),
    )
    assert config.network_enabled is False
    assert config.resource_limits.network_enabled is False
    assert config.security_policy.allow_network is False
    assert config.backend_options()["network_mode"] == "none"


def test_spec_minio_config() -> None:
    config = SandboxConfig.minio(
        endpoint="http://localhost:9000", access_key="admin", secret_key="password", bucket="sandboxes"
    )
    assert config.backend_type == "local"
    assert config.storage is not None
    assert config.storage.storage_type == "minio"
    assert config.storage.endpoint_url == "http://localhost:9000"
    assert config.storage.bucket == "sandboxes"
    assert "password" not in repr(config)  # secrets stay out of logs
    assert SandboxConfig.from_dict(config.to_dict()) == config


def test_minio_config_splits_sandbox_and_storage_kwargs() -> None:
    config = SandboxConfig.minio("localhost:9000", "a", "b", "bkt", name="w1", prefix="ws", secure=True)
    assert config.name == "w1"
    assert config.storage is not None
    assert config.storage.prefix == "ws"
    assert config.storage.endpoint_url == "https://localhost:9000"


def test_spec_sandbox_json_loads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(_spec_sandbox_json(), encoding="utf-8")
    config = config_from_file(path)
    assert config.base_path == "/data/sandboxes"
    assert config.backend_type == "docker"
    assert config.resource_limits == ResourceLimits(
        timeout_seconds=300, memory_mb=512, cpu_cores=1.0, network_enabled=False
    )
    assert config.security_policy.allow_shell is True
    assert config.security_policy.allow_network is False
    assert config.options_for("docker").image == "python:3.11-slim"
    assert config.options_for("docker").network_mode == "none"
    assert config.backend_options()["image"] == "python:3.11-slim"


def test_examples_files_are_the_spec_and_agree() -> None:
    assert (ROOT / "examples" / "sandbox.json").read_text(encoding="utf-8") == _spec_sandbox_json()
    assert config_from_file(ROOT / "examples" / "sandbox.json") == config_from_file(ROOT / "examples" / "sandbox.yaml")


def test_config_from_env_spec_variables() -> None:
    env = {
        "SANDBOX_BASE_PATH": "/data/sandboxes",
        "SANDBOX_BACKEND": "docker",
        "SANDBOX_DOCKER_IMAGE": "python:3.11",
        "SANDBOX_TIMEOUT": "60",
        "SANDBOX_MEMORY_MB": "512",
        "UNRELATED": "x",
    }
    config = config_from_env(environ=env)
    assert config.base_path == "/data/sandboxes"
    assert config.backend_type == "docker"
    assert config.options_for().image == "python:3.11"
    assert config.resource_limits.timeout_seconds == 60
    assert config.resource_limits.memory_mb == 512
    assert config.network_enabled is False


def test_config_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MEMORY_MB", "768")
    monkeypatch.setenv("MYAPP_MEMORY_MB", "1024")
    assert config_from_env().resource_limits.memory_mb == 768
    assert config_from_env(prefix="MYAPP_").resource_limits.memory_mb == 1024


def test_config_from_env_network_and_storage() -> None:
    env = {
        "SANDBOX_NETWORK_ENABLED": "true",
        "SANDBOX_BACKEND": "docker",
        "SANDBOX_CPU_CORES": "2.5",
        "SANDBOX_STORAGE_TYPE": "minio",
        "SANDBOX_STORAGE_ENDPOINT": "localhost:9000",
        "SANDBOX_STORAGE_BUCKET": "b",
        "SANDBOX_STORAGE_ACCESS_KEY": "k",
        "SANDBOX_STORAGE_SECRET_KEY": "s",
    }
    config = config_from_env(environ=env)
    assert config.network_enabled is True
    assert config.security_policy.allow_network is True
    assert config.resource_limits.cpu_cores == 2.5
    assert config.storage == StorageConfig(
        storage_type="minio", endpoint="localhost:9000", bucket="b", access_key="k", secret_key="s"
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SANDBOX_MEMORY_MB", "-1"),
        ("SANDBOX_MEMORY_MB", "lots"),
        ("SANDBOX_TIMEOUT", "soon"),
        ("SANDBOX_NETWORK_ENABLED", "perhaps"),
        ("SANDBOX_BACKEND", "no such!"),
        ("SANDBOX_CPU_CORES", "0"),
    ],
)
def test_config_from_env_errors_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        config_from_env(environ={var: value})
    assert info.value.field == var
    assert info.value.value == value
    assert var in str(info.value)


def test_every_documented_env_var_is_in_the_docs() -> None:
    docs = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    for suffix in [*ENV_VARS, *(v for v in backend_env_vars() if not v.startswith("TINY_"))]:
        assert f"SANDBOX_{suffix}" in docs


# -- errors name the field and the value -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"resource_limits": {"memory_mb": -5}}, "$.resource_limits.memory_mb", -5),
        ({"resource_limits": {"memory_mb": "lots"}}, "$.resource_limits.memory_mb", "lots"),
        ({"resource_limits": {"memory_mb": 1.5}}, "$.resource_limits.memory_mb", 1.5),
        ({"resource_limits": {"timeout_seconds": 0}}, "$.resource_limits.timeout_seconds", 0),
        ({"resource_limits": {"timeout_seconds": True}}, "$.resource_limits.timeout_seconds", True),
        ({"resource_limits": {"network_enabled": "maybe"}}, "$.resource_limits.network_enabled", "maybe"),
        ({"resource_limits": 5}, "$.resource_limits", 5),
        ({"resource_limits": {"memroy_mb": 512}}, "$.resource_limits.memroy_mb", 512),
        ({"security_policy": {"allow_shell": "sometimes"}}, "$.security_policy.allow_shell", "sometimes"),
        ({"security_policy": {"blocked_imports": [1, 2]}}, "$.security_policy.blocked_imports", [1, 2]),
        ({"security_policy": {"max_file_size_mb": -1}}, "$.security_policy.max_file_size_mb", -1),
        ({"docker": {"image": ""}}, "$.docker.image", ""),
        ({"docker": {"imag": "x"}}, "$.docker.imag", "x"),
        ({"backend_type": "docker", "docker": {"image": 5}}, "$.docker.image", 5),
        ({"backends": {"docker": {"image": 5}}}, "$.backends.docker.image", 5),
        ({"backends": {"dokcer": {"image": "x"}}}, "$.backends.dokcer", {"image": "x"}),
        ({"backends": ["docker"]}, "$.backends", ["docker"]),
        ({"backends": {"local": 3}}, "$.backends.local", 3),
        ({"dokcer": {"image": "x"}}, "$.dokcer", {"image": "x"}),
        ({"backend_type": "Not A Name"}, "$.backend_type", "Not A Name"),
        ({"backend_type": 7}, "$.backend_type", 7),
        ({"sandbox_id": "../../etc"}, "$.sandbox_id", "../../etc"),
        ({"storage": {"storage_type": "s3", "secure": "sure"}}, "$.storage.secure", "sure"),
        ({"storage": {"bucket": "b", "colour": "red"}}, "$.storage.colour", "red"),
        ({"env_vars": {"A=B": "x"}}, "$.env_vars", {"A=B": "x"}),
        ({"bogus": 1}, "$.bogus", 1),
    ],
)
def test_invalid_values_raise_configuration_error_naming_field_and_value(
    data: dict[str, Any], field: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict(data)
    assert info.value.field == field
    assert info.value.value == value
    assert field in str(info.value)
    assert str(info.value).count("got ") == 1, "the value is shown once, not 'got -5 (got -5)'"
    assert isinstance(info.value, ValueError)


def test_all_errors_are_listed() -> None:
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict(
            {"resource_limits": {"memory_mb": "x", "cpu_cores": "y"}, "security_policy": {"allow_shell": 3}}
        )
    fields = {e["field"] for e in info.value.context["errors"]}
    assert fields == {"$.resource_limits.memory_mb", "$.resource_limits.cpu_cores", "$.security_policy.allow_shell"}


def test_validator_type_and_unknown_key_errors_are_listed_together() -> None:
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict(
            {
                "resource_limits": {"memory_mb": 0, "cpu_cores": "x", "bogus": 1},
                "docker": {"image": ""},
                "backend_type": 3,
            }
        )
    errors = {e["field"]: e["value"] for e in info.value.context["errors"]}
    assert errors == {
        "$.resource_limits.memory_mb": 0,
        "$.resource_limits.cpu_cores": "x",
        "$.resource_limits.bogus": 1,
        "$.docker.image": "",
        "$.backend_type": 3,
    }


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict(["docker"])  # type: ignore[arg-type]
    assert info.value.field == "$"


# -- files ------------------------------------------------------------------------------------


def test_yaml_file_and_safe_load_only(tmp_path: Path) -> None:
    good = tmp_path / "sandbox.yml"
    good.write_text("backend_type: local\nresource_limits:\n  memory_mb: 256\nenv_vars:\n  A: '1'\n")
    config = config_from_file(good)
    assert config.resource_limits.memory_mb == 256
    assert config.env_vars == {"A": "1"}
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        config_from_file(evil)
    assert not (tmp_path / "pwned").exists()


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        config_from_file(tmp_path / "missing.json")
    assert info.value.field == "path"
    bad_ext = tmp_path / "sandbox.toml"
    bad_ext.write_text("x = 1")
    with pytest.raises(ConfigurationError, match=r"\.json, \.yaml or \.yml"):
        config_from_file(bad_ext)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        config_from_file(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"resource_limits": {"memory_mb": 0}}))
    with pytest.raises(ConfigurationError) as info:
        config_from_file(wrong)
    assert info.value.field == "$.resource_limits.memory_mb"
    assert str(wrong) in str(info.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert config_from_file(empty) == SandboxConfig()


def test_backend_type_accepts_enum_and_plugin_names() -> None:
    assert SandboxConfig(backend_type=BackendType.DOCKER).backend_type == "docker"
    assert SandboxConfig(backend_type="Firecracker").backend_type == "firecracker"
    config = SandboxConfig(backend_type="firecracker", backends={"firecracker": {"kernel": "vmlinux"}})
    assert config.backend_options() == {"kernel": "vmlinux"}  # no such backend here: kept as given
    assert config.options_for() == {"kernel": "vmlinux"}


# -- a third-party backend's options ------------------------------------------------------------


def test_third_party_section_is_validated_by_its_options_class() -> None:
    config = SandboxConfig.from_dict({"backend_type": "tiny", "tiny": {"kernel": "bzImage", "vcpus": "2"}})
    assert config.backends == {"tiny": TinyOptions(kernel="bzImage", vcpus=2)}
    assert config.options_for().vcpus == 2
    assert config.backend_options() == {"kernel": "bzImage", "vcpus": 2, "debug": False, "tags": {}}
    assert SandboxConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["backends"] == {"tiny": config.backend_options()}
    # the same section under "backends", and given in code as a mapping or an instance
    assert (
        SandboxConfig.from_dict({"backend_type": "tiny", "backends": {"tiny": {"kernel": "bzImage", "vcpus": 2}}})
        == config
        == SandboxConfig(backend_type="tiny", backends={"tiny": {"kernel": "bzImage", "vcpus": 2}})
        == SandboxConfig(backend_type="tiny", backends={"tiny": TinyOptions(kernel="bzImage", vcpus=2)})
    )
    assert SandboxConfig(backend_type="tiny").options_for() == TinyOptions()  # no section: the class's defaults


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"tiny": {"vcpus": 0}}, "$.tiny.vcpus", 0),
        ({"tiny": {"vcpus": "many"}}, "$.tiny.vcpus", "many"),
        ({"tiny": {"kernel": 5}}, "$.tiny.kernel", 5),
        ({"tiny": {"debug": "perhaps"}}, "$.tiny.debug", "perhaps"),
        ({"tiny": {"tags": {"a": 1}}}, "$.tiny.tags['a']", 1),
        ({"tiny": {"cpus": 2}}, "$.tiny.cpus", 2),
        ({"tiny": [1]}, "$.tiny", [1]),
        ({"backends": {"tiny": {"vcpus": -1}}}, "$.backends.tiny.vcpus", -1),
        ({"tiny": {}, "backends": {"tiny": {}}}, "$.tiny", {}),
    ],
)
def test_third_party_options_errors_name_the_field(data: dict[str, Any], field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict(data)
    assert (info.value.field, info.value.value) == (field, value)
    assert str(info.value).count("got ") == 1


def test_third_party_options_errors_in_code_yaml_and_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig(backend_type="tiny", backends={"tiny": {"vcpus": 0}})
    assert info.value.field == "$.backends.tiny.vcpus"
    path = tmp_path / "sandbox.yaml"
    path.write_text("backend_type: tiny\ntiny:\n  kernel: bzImage\n  vcpus: lots\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        config_from_file(path)
    assert (info.value.field, info.value.value) == ("$.tiny.vcpus", "lots")
    assert str(path) in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        config_from_env(environ={"SANDBOX_BACKEND": "tiny", "SANDBOX_TINY_VCPUS": "0"})
    assert (info.value.field, info.value.value) == ("SANDBOX_TINY_VCPUS", "0")
    config = config_from_env(
        environ={"SANDBOX_BACKEND": "tiny", "SANDBOX_TINY_VCPUS": "4", "SANDBOX_TINY_DEBUG": "yes"}
    )
    assert config.backends == {"tiny": TinyOptions(vcpus=4, debug=True)}
    assert "TINY_TAGS" not in backend_env_vars()  # a mapping is no variable


def test_section_without_options_class_is_kept_as_given() -> None:
    config = SandboxConfig.from_dict({"local": {"system_site_packages": True}})
    assert config.backends == {"local": {"system_site_packages": True}}
    assert config.backend_options() == {"system_site_packages": True}
    assert SandboxConfig.from_dict(config.to_dict()) == config


async def test_sandbox_and_manager_give_each_backend_its_section(tmp_path: Path) -> None:
    config = SandboxConfig.from_dict(
        {
            "backend_type": "tiny",
            "base_path": str(tmp_path),
            "tiny": {"vcpus": 3},
            "local": {"system_site_packages": False},
        }
    )
    sandbox = Sandbox.from_config(config)
    assert isinstance(sandbox.backend, TinyBackend)
    assert sandbox.backend.options == config.backend_options() == {**config.backend_options("tiny")}
    async with SandboxManager(config=config, auto_cleanup=False) as manager:
        tiny = await manager.create_sandbox("t", auto_start=False)
        local = await manager.create_sandbox("l", backend_type="local", auto_start=False)
        assert tiny.backend.options["vcpus"] == 3
        assert local.backend.options == {"system_site_packages": False}


# -- round trip -------------------------------------------------------------------------------

# control characters and U+2028/9 are left out: PyYAML does not round-trip some of them (NEL)
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
_name = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_limits = st.builds(
    ResourceLimits,
    timeout_seconds=st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
    memory_mb=st.integers(1, 1 << 20),
    cpu_cores=st.floats(min_value=0.01, max_value=256),
    disk_mb=st.integers(1, 1 << 24),
    max_processes=st.integers(1, 1 << 16),
    max_threads=st.integers(1, 1 << 16),
    network_enabled=st.booleans(),
    max_output_size=st.integers(1, 1 << 40),
    max_open_files=st.integers(1, 1 << 20),
)
_policy = st.builds(
    SecurityPolicy,
    allow_shell=st.booleans(),
    allow_network=st.booleans(),
    allow_file_write=st.booleans(),
    allow_subprocess=st.booleans(),
    blocked_imports=st.lists(_text, max_size=4),
    blocked_paths=st.lists(_text, max_size=4),
    max_file_size_mb=st.one_of(st.integers(1, 10_000), st.floats(min_value=0.001, max_value=1e4)),
    audit_enabled=st.booleans(),
)
_tiny = st.builds(
    lambda **kw: TinyOptions(**kw),
    kernel=_text,
    vcpus=st.integers(1, 64),
    debug=st.booleans(),
    tags=st.dictionaries(_text, _text, max_size=3),
)
_raw_section = st.dictionaries(_name, st.one_of(st.integers(), _text, st.booleans(), st.none()), max_size=3)
_storage = st.builds(
    StorageConfig,
    storage_type=st.sampled_from(["local", "s3", "minio", "my-store"]),
    base_path=st.none() | _text,
    endpoint=st.none() | _text,
    access_key=st.none() | _text,
    secret_key=st.none() | _text,
    bucket=st.none() | _name,
    region=_name,
    secure=st.booleans(),
    prefix=st.just("") | _name,
    create_bucket=st.booleans(),
    options=st.dictionaries(_name, st.one_of(st.integers(), _text, st.booleans()), max_size=3),
)


@st.composite
def _configs(draw: st.DrawFn) -> SandboxConfig:
    backend_type = draw(st.sampled_from(["local", "tiny"]) | _name)
    backends: dict[str, Any] = {}
    if draw(st.booleans()):
        backends["tiny"] = draw(_tiny)
    if draw(st.booleans()):
        backends["local"] = draw(_raw_section)
    if backend_type not in ("local", "tiny") and draw(st.booleans()):
        backends[backend_type] = draw(_raw_section)  # a backend that is not installed here: kept as given
    return draw(
        st.builds(
            SandboxConfig,
            base_path=st.none() | _text,
            backend_type=st.just(backend_type),
            sandbox_id=st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True),
            name=st.none() | _text,
            resource_limits=_limits,
            security_policy=_policy,
            backends=st.just(backends),
            storage=st.none() | _storage,
            env_vars=st.dictionaries(
                st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
                _text.filter(lambda s: "\x00" not in s),
                max_size=4,
            ),
        )
    )


@settings(max_examples=300, deadline=None)
@given(_configs())
def test_round_trip_dict_json_yaml(config: SandboxConfig) -> None:
    data = config.to_dict()
    assert SandboxConfig.from_dict(data) == config
    assert SandboxConfig.from_dict(json.loads(json.dumps(data))) == config
    assert SandboxConfig.from_dict(yaml.safe_load(yaml.safe_dump(data, allow_unicode=True))) == config


@settings(max_examples=100, deadline=None)
@given(_configs())
def test_round_trip_through_files(tmp_path_factory: pytest.TempPathFactory, config: SandboxConfig) -> None:
    d = tmp_path_factory.mktemp("cfg")
    (d / "c.json").write_text(config.to_json(), encoding="utf-8")
    (d / "c.yaml").write_text(yaml.safe_dump(config.to_dict(), allow_unicode=True), encoding="utf-8")
    assert config_from_file(d / "c.json") == config
    assert config_from_file(d / "c.yaml") == config
