"""The container's setup step, run as a real process here (it needs root, as in the container): it gives
the volumes to the sandbox user without following a planted symlink, drops every privilege for good, then
execs the runner's bootstrap; it refuses what it cannot do with one line. No engine needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from alphora.sandbox_docker._setup import SETUP_ERROR, SETUP_EXIT, setup_argv

#: a python3 every uid may run (this test's own interpreter may live under root's home)
PYTHON = next((p for p in ("/usr/bin/python3", shutil.which("python3")) if p and os.access(p, os.X_OK)), None)
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the setup step drops root: run as root to test it"),
    pytest.mark.skipif(PYTHON is None, reason="no system python3 to run the setup step with"),
]

#: what the "runner" reports once the setup step exec'd it
REPORT = r"""
import json, os
st = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(json.dumps({"res_uid": os.getresuid(), "res_gid": os.getresgid(), "groups": os.getgroups(),
                  "caps": {k: int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd")},
                  "nnp": st["NoNewPrivs"].strip()}))
"""


def _run(user: str, dirs: list[Path]) -> subprocess.CompletedProcess[str]:
    assert PYTHON is not None
    argv = setup_argv(PYTHON, user, [str(d) for d in dirs], [PYTHON, "-c", REPORT])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_volumes_change_hands_without_following_links_and_root_is_gone(tmp_path: Path) -> None:
    ws, home = tmp_path / "ws", tmp_path / "home"
    (home / ".local" / "lib").mkdir(parents=True)
    ws.mkdir()
    (home / ".local" / "lib" / "x.py").write_text("x")
    os.chmod(home, 0o700)
    outside = tmp_path / "outside.txt"
    outside.write_text("host file")
    (ws / "link").symlink_to(outside)  # as if planted in a volume: lchown, never chown through it
    tmp_path.chmod(0o755)

    out = _run("4321:4322", [ws, home])

    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["res_uid"] == [4321] * 3
    assert info["res_gid"] == [4322] * 3
    assert info["groups"] == [4322]
    assert info["caps"] == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"), 0)
    assert info["nnp"] == "1"
    for path in (ws, home, home / ".local", home / ".local" / "lib" / "x.py"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322), path
    assert os.lstat(ws / "link").st_uid == 4321
    assert (outside.stat().st_uid, outside.stat().st_gid) == (0, 0)


def test_volumes_already_owned_are_left_alone(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "root-owned-inside").write_text("x")
    os.chown(ws, 4321, 4321)
    out = _run("4321", [ws])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["res_gid"] == [4321] * 3  # no group and no passwd entry: the uid's number
    assert (ws / "root-owned-inside").stat().st_uid == 0  # the root's owner decides: no walk


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("nobody-here", "user 'nobody-here' is not in the image's /etc/passwd; give a numeric uid:gid"),
        ("4321:no-group-here", "group 'no-group-here' is not in the image's /etc/group; give a numeric gid"),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, user: str, message: str) -> None:
    out = _run(user, [tmp_path])
    assert out.returncode == SETUP_EXIT
    assert out.stdout == ""
    assert out.stderr == f"{SETUP_ERROR} {message}\n"


def test_a_name_that_resolves_to_root_is_refused(tmp_path: Path) -> None:
    out = _run("root:0", [tmp_path])  # the host side runs "root" without the setup step; here it is refused
    assert out.returncode == SETUP_EXIT
    assert "is root; the sandbox user must not be" in out.stderr


def test_an_old_python3_is_refused_with_the_floor(tmp_path: Path) -> None:
    # the setup program with a floor above this interpreter's version: the message an image with an old
    # python3 gets (the program itself parses on any Python 3)
    from alphora.sandbox_docker import _setup

    assert PYTHON is not None
    program = _setup.setup_program("4321", [str(tmp_path)], [PYTHON, "-c", "pass"]).replace(
        f"_MIN = {_setup.MIN_PYTHON!r}", "_MIN = (3, 99)"
    )
    out = subprocess.run([PYTHON, "-I", "-S", "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == SETUP_EXIT
    assert out.stderr.startswith(f"{SETUP_ERROR} python3 is 3.")
    assert out.stderr.endswith("; the sandbox runner needs Python 3.99 or newer\n")
