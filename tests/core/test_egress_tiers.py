"""Egress policy plumbing without an engine or bubblewrap: the network rule, config files and the
environment, the tiers that cannot enforce a policy, and the environment of user code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphora.sandbox import ResourceLimits, Sandbox, SandboxConfig, SecurityPolicy, config_from_env, config_from_file
from alphora.sandbox.backend import CA_BUNDLE_VARS, PROXY_VARS, minimal_env
from alphora.sandbox.egress import EgressPolicy
from alphora.sandbox.errors import ConfigurationError
from alphora.sandbox.rules import network_access, network_allowed, network_mode

ALLOW = ["pkgs.example.org", "*.example.com:443", "127.0.0.1:8080"]
ON = ResourceLimits(network_enabled=True)


def test_network_access_is_one_rule() -> None:
    egress = SecurityPolicy(egress=EgressPolicy(allow=ALLOW))
    assert network_access(ResourceLimits(), SecurityPolicy()) == "none"
    assert network_access(ON, SecurityPolicy(allow_network=True)) == "open"
    assert network_access(ON, SecurityPolicy()) == "none"  # half-enabled fails closed
    assert network_access(ResourceLimits(), egress) == "egress"
    assert network_access(ON, egress) == "egress"  # one switch on: still the allowlist only
    # an egress policy never means an unrestricted network, nor a container network
    assert not network_allowed(ON, egress)
    assert network_mode(ON, egress, "bridge") == "none"


def test_an_allowlist_with_both_switches_on_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="turn one of those off") as info:
        SandboxConfig(
            resource_limits=ON,
            security_policy=SecurityPolicy(allow_network=True, egress=EgressPolicy(allow=ALLOW)),
        )
    assert info.value.field == "security_policy.egress"


def test_egress_from_a_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps({"backend_type": "isolated", "security_policy": {"egress": {"allow": ALLOW}}}))
    config = config_from_file(path)
    assert config.security_policy.egress == EgressPolicy(allow=ALLOW)
    assert SandboxConfig.from_dict(config.to_dict()) == config
    # a plain list of entries is the short form
    path.write_text(json.dumps({"security_policy": {"egress": ALLOW}}))
    assert config_from_file(path).security_policy.egress == EgressPolicy(allow=ALLOW)


def test_egress_from_the_environment() -> None:
    config = config_from_env(environ={"SANDBOX_EGRESS": ",".join(ALLOW)})
    assert config.security_policy.egress == EgressPolicy(allow=ALLOW)
    as_json = json.dumps({"allow": ALLOW})
    assert config_from_env(environ={"SANDBOX_EGRESS": as_json}).security_policy.egress == EgressPolicy(allow=ALLOW)
    assert config_from_env(environ={}).security_policy.egress is None


def test_bad_egress_config_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as info:
        config_from_env(environ={"SANDBOX_EGRESS": '{"allow": ["pkgs.example.org"], "deny": ["x"]}'})
    assert info.value.field == "SANDBOX_EGRESS"
    assert "deny" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        SandboxConfig.from_dict({"security_policy": {"egress": '{"allow": ['}})
    assert info.value.field == "$.security_policy.egress"
    assert "JSON" in str(info.value)
    with pytest.raises(ConfigurationError, match="both true"):
        config_from_env(environ={"SANDBOX_EGRESS": "pkgs.example.org", "SANDBOX_NETWORK_ENABLED": "true"})


def test_local_cannot_enforce_egress_so_it_refuses(tmp_path: Path) -> None:
    policy = SecurityPolicy(egress=EgressPolicy(allow=ALLOW))
    with pytest.raises(ConfigurationError, match=r"cannot enforce security_policy\.egress") as info:
        Sandbox.create("local", base_path=tmp_path, security_policy=policy)
    assert "'isolated' or 'docker'" in str(info.value)
    with pytest.warns(RuntimeWarning, match="cannot enforce"):
        Sandbox.create(
            "local", base_path=tmp_path, security_policy=policy, backend_options={"allow_unenforced_egress": True}
        )
    with pytest.raises(ConfigurationError, match="true or false"):
        Sandbox.create(
            "local", base_path=tmp_path, security_policy=policy, backend_options={"allow_unenforced_egress": "yes"}
        )


def test_user_code_environment_names_the_proxy_and_the_bundle() -> None:
    env = minimal_env("/workspace", proxy="http://127.0.0.1:3128", ca_bundle="/run/x/ca-bundle.pem")
    assert all(env[v] == "http://127.0.0.1:3128" for v in PROXY_VARS)
    assert env["NO_PROXY"] == env["no_proxy"] == ""  # loopback names go through the proxy too
    assert all(env[v] == "/run/x/ca-bundle.pem" for v in CA_BUNDLE_VARS)
    plain = minimal_env("/workspace")
    assert not set(plain) & {*PROXY_VARS, *CA_BUNDLE_VARS}


def test_the_doctor_says_the_network_is_the_proxy() -> None:
    from alphora.sandbox.doctor import _describe

    config = SandboxConfig(backend_type="isolated", security_policy=SecurityPolicy(egress=EgressPolicy(allow=ALLOW)))
    assert _describe(config).startswith("network: egress through the proxy only (3 allow entries)")
    assert _describe(SandboxConfig()).startswith("network disabled")


def test_a_wheelhouse_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a directory on this host") as info:
        Sandbox.create("isolated", base_path=tmp_path, backend_options={"wheelhouse": str(tmp_path / "missing")})
    assert info.value.field == "wheelhouse"
