"""End-to-end fixtures: a started local sandbox (the suite-wide ``local_sandbox``, under the name
the end-to-end tests use)."""

from __future__ import annotations

import pytest

from alphora.sandbox import Sandbox


@pytest.fixture
def sandbox(local_sandbox: Sandbox) -> Sandbox:
    return local_sandbox
