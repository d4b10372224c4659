"""Sandbox.create: keywords that are not the constructor's own are the backend's options when the
backend declares an ``options_class`` (``Sandbox.create("ray", inner="docker")``), checked by that
class; a backend without one keeps the TypeError. No engine is contacted (nothing is started)."""

from __future__ import annotations

import pytest

from alphora.sandbox import Sandbox
from alphora.sandbox.errors import ConfigurationError


def test_option_keywords_reach_the_backend_and_merge_with_backend_options() -> None:
    sandbox = Sandbox.create("docker", image="python:3.11-slim", backend_options={"tmp_size_mb": 64})
    opts = sandbox.backend.options_class.from_mapping(sandbox.backend.options)  # type: ignore[union-attr]
    assert (opts.image, opts.tmp_size_mb) == ("python:3.11-slim", 64)


def test_a_misspelt_option_names_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"docker\.imag"):
        Sandbox.create("docker", imag="python:3.11-slim")


def test_a_backend_without_options_class_keeps_the_type_error() -> None:
    with pytest.raises(TypeError, match="image"):
        Sandbox.create("local", image="python:3.11-slim")
