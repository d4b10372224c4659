"""One request builder and one source of call defaults: the facade and a backend's template
methods build a call's request the same way, with ResourceLimits' defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphora.sandbox import ConfigurationError, ResourceLimits, Sandbox
from alphora.sandbox.backend import ProcessRequest, build_request


def test_request_defaults_are_the_limits_defaults() -> None:
    request = ProcessRequest(kind="python", code="pass")
    assert request.timeout == ResourceLimits().timeout_seconds
    assert request.max_output == ResourceLimits().max_output_size
    limits = ResourceLimits(timeout_seconds=7, max_output_size=1000)
    built = build_request("shell", limits, code="true", env={"A": "1"})
    assert (built.timeout, built.max_output, dict(built.env)) == (7.0, 1000, {"A": "1"})


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "soon", True])
async def test_backend_template_methods_refuse_bad_timeouts_like_the_facade(tmp_path: Path, timeout: object) -> None:
    sandbox = Sandbox.create_local(base_path=tmp_path)
    with pytest.raises(ConfigurationError) as info:
        await sandbox.backend.execute_code("print(1)", timeout=timeout)  # type: ignore[arg-type]
    assert info.value.field == "timeout"
    with pytest.raises(ConfigurationError) as info:
        sandbox._request("python", timeout, None, code="print(1)")
    assert info.value.field == "timeout"
