"""The container of a sandbox with an egress policy (no engine): network "none", the proxy's
directory bound read-only, one more process for the runner's forwarder."""

from __future__ import annotations

from alphora.sandbox import ResourceLimits, SecurityPolicy
from alphora.sandbox.egress import EgressPolicy
from alphora.sandbox.egress_bridge import INSIDE_DIR
from alphora.sandbox_docker._spec import container_spec
from alphora.sandbox_docker.options import DockerOptions


def test_egress_container_has_no_network_and_the_socket_directory() -> None:
    limits = ResourceLimits(network_enabled=True, max_processes=10)
    policy = SecurityPolicy(egress=EgressPolicy(allow=["pkgs.example.org"]))
    kw = {"sandbox_id": "s", "instance": "i", "command": ["python3"], "limits": limits, "policy": policy}
    plain = container_spec(**kw, opts=DockerOptions(network_mode="bridge"))  # type: ignore[arg-type]
    spec = container_spec(**kw, opts=DockerOptions(network_mode="bridge"), egress_dir="/tmp/alphora-egress-s-x")  # type: ignore[arg-type]
    assert spec.host_config["network_mode"] == "none"
    assert spec.network_disabled
    assert spec.host_config["binds"]["/tmp/alphora-egress-s-x"] == {"bind": INSIDE_DIR, "mode": "ro"}
    assert spec.host_config["pids_limit"] == plain.host_config["pids_limit"] + 1
