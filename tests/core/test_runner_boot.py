"""The runner never runs code that sandbox code planted for its next start.

A holder of a sandbox writes a module that shadows one the runner preloads into the workspace (the
runner's working directory) and a ``.pth`` into the package environment and the user site, then
the sandbox restarts (what a pool reset does). Before the runner started with ``-S`` and without
``''`` on ``sys.path``, both ran inside the runner, so the planted code outlived the restart and saw
every later holder's calls. User code still gets the usual site set-up: a ``.pth`` runs in the
call's own process, as with ``python``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alphora.sandbox import Sandbox
from alphora.sandbox.builtin.isolated_backend import bwrap_available

from .._support.runner_plants import plant, runner_markers

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["local", "isolated"])
async def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    if request.param == "isolated" and not bwrap_available():
        if os.environ.get("CI"):
            raise RuntimeError("CI must provide bubblewrap (bwrap): .ci/run installs it")
        pytest.skip("bubblewrap (bwrap) is not installed: apt install bubblewrap")
    sb = Sandbox.create(request.param, base_path=tmp_path)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.destroy()


async def test_planted_code_never_runs_in_the_restarted_runner(sandbox: Sandbox) -> None:
    await plant(sandbox)
    await sandbox.restart()
    runner, in_runner = await runner_markers(sandbox)
    assert in_runner == [], f"planted code ran inside the runner (pid {runner}): {in_runner}"


async def test_user_code_still_gets_site_and_its_cwd_on_sys_path(sandbox: Sandbox) -> None:
    await plant(sandbox)
    await sandbox.restart()
    await sandbox.write_file("helper_mod.py", "VALUE = 42\n")
    r = await sandbox.run(
        "import os, sys, helper_mod\n"
        "print(helper_mod.VALUE, sys.path[0] == '', any(p.endswith('site-packages') for p in sys.path))\n"
        "print(any(m.startswith('pth-') and m.endswith('-' + str(os.getpid())) for m in os.listdir('plant-marks')))\n"
    )
    assert r.success, r.stderr
    assert r.stdout.split() == ["42", "True", "True", "True"], r.stdout
    async with sandbox.session() as session:
        cell = await session.run("import helper_mod, sys; print(helper_mod.VALUE, callable(exit))")
    assert cell.stdout == "42 True\n", cell.stderr
