"""The ray backend's options, from each place options come from (no cluster needed)."""

from __future__ import annotations

import pytest

from alphora.sandbox import Sandbox
from alphora.sandbox.config import SandboxConfig, config_from_env
from alphora.sandbox.errors import ConfigurationError
from alphora.sandbox_ray import RayBackend


def test_create_keywords_config_section_and_env_agree() -> None:
    by_kw = Sandbox.create("ray", inner="docker", num_cpus=0.5, resources={"sandbox_docker": 1})
    by_cfg = Sandbox.from_config(
        SandboxConfig.from_dict(
            {
                "backend_type": "ray",
                "backends": {"ray": {"inner": "docker", "num_cpus": 0.5, "resources": {"sandbox_docker": 1}}},
            }
        )
    )
    env = config_from_env(environ={"SANDBOX_RAY_INNER": "docker", "SANDBOX_RAY_NUM_CPUS": "0.5"}).options_for("ray")
    for sandbox in (by_kw, by_cfg):
        assert isinstance(sandbox.backend, RayBackend)
        assert sandbox.backend.ray_options.inner == "docker"
        assert sandbox.backend.ray_options.num_cpus == 0.5
        assert sandbox.backend.ray_options.resources == {"sandbox_docker": 1}
        assert sandbox.backend.workspace_aliases == ("/workspace",)  # what the inner docker backend declares
    assert (env.inner, env.num_cpus) == ("docker", 0.5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"inner": "ray"}, "ray.inner"),
        ({"inner": "nosuch"}, "nosuch"),
        ({"num_cpus": -1}, "ray.num_cpus"),
        ({"resources": {"gpu_x": -1}}, "ray.resources"),
        ({"call_timeout": 0}, "ray.call_timeout"),
        ({"recover": True}, "ray.recover"),
    ],
)
def test_bad_options_are_refused_naming_the_cause(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        Sandbox.create("ray", **kwargs)
    assert field in str(err.value) or field == getattr(err.value, "field", None)


def test_unknown_keywords_stay_a_type_error_for_a_backend_without_options() -> None:
    with pytest.raises(TypeError):
        Sandbox.create("local", inner="docker")
