"""The spec's quick-start, code-execution and file examples, run verbatim (examples/spec_examples.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_spec_examples_run_verbatim(tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {**os.environ, "ALPHORA_SANDBOX_HOME": str(home), "TMPDIR": str(tmp)}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "spec_examples.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    check_spec_output(out.stdout, home)
    # the example's temporary base_path (tempfile.mkdtemp) is removed: a run leaves nothing in TMPDIR
    assert not list(tmp.iterdir()), f"left in TMPDIR: {sorted(p.name for p in tmp.iterdir())}"


def check_spec_output(text: str, home: Path) -> None:
    """What the examples print, and that they left nothing under the sandbox home."""
    assert "Hello, World!\n" in text
    assert "\n2\n" in text
    assert "create_local with base_path: True" in text
    assert '"name": "Alice"' in text
    assert "Args: ['arg1', 'arg2']\nHello from file!\n" in text
    assert "HELLO\n" in text
    assert "\n16\nFileType.JSON\n" in text  # print(file_info.size); print(file_info.file_type)
    assert "image round trip: True <FileType.JSON: 'json'>" in text
    assert ".tmp: " not in text  # list_files leaves out the backend's scratch dir
    assert "exists: True deleted: True now exists: False dest: src new: old old gone: True pdf: b'%PDF-1.4'" in text
    assert "config.json: 16 B" in text
    assert "*.py: ['script.py', 'src/main.py']" in text or "*.py: ['script.py']" in text
    assert not list(home.iterdir()), "the examples' sandboxes were not cleaned up"


@pytest.mark.parametrize("example", ["manager_example.py", "storage_example.py", "config_example.py"])
def test_examples_leave_nothing_in_tmpdir(example: str, tmp_path: Path) -> None:
    """Each of these examples makes a temporary base path (tempfile.mkdtemp): it runs, and removes it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "ALPHORA_SANDBOX_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp)}
    for name in ("S3_ENDPOINT", "BACKEND"):  # the examples' optional S3 and Docker parts stay off
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / example)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert not list(tmp.iterdir()), f"left in TMPDIR: {sorted(p.name for p in tmp.iterdir())}"
