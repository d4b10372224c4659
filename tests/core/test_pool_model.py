"""A hypothesis state machine drives a real SandboxPool (local backend) against a model.

Rules: acquire, release (the holder leaves a file and an env var), release after changing the
package environment, let every sandbox expire (a fake clock past ``max_age``), shut down and start
again. After every step the pool has settled and the invariants hold: no sandbox held twice, the
counts match the model, and a sandbox the model says must be retired (``max_uses`` reached, expired,
package environment changed) never comes back; every hand-out is clean and every returned object dead.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from alphora.sandbox import Sandbox, SandboxNotRunningError, SandboxPool
from alphora.sandbox.runner import safefs

SIZE = 2
MAX_USES = 2
MAX_AGE = 100.0
PLANT = (
    "import sysconfig, os; d = sysconfig.get_paths()['purelib']; os.makedirs(d, exist_ok=True); "
    "open(os.path.join(d, 'planted.pth'), 'w').write('\\n')"
)


def _processes_under(base: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd == base or cwd.startswith(base + os.sep):
            found.append(proc.pid)
    return found


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.base = tempfile.mkdtemp(prefix="alphora-pool-model-")
        self.now = 0.0
        self.expires = self.shutdowns = 0  # once each per run: the other rules need the steps
        self.pool = self._new_pool()
        self.held: dict[str, Sandbox] = {}  # sandbox id -> the holder's object
        self.uses: dict[str, int] = {}
        self.retired: set[str] = set()  # ids that must never be handed out again
        self.expired: set[str] = set()  # ids made before the last expire step
        self.dead: list[Sandbox] = []  # returned objects: must stay unusable

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _new_pool(self) -> SandboxPool:
        pool = SandboxPool(
            "local", size=SIZE, max_uses=MAX_USES, max_age=MAX_AGE, base_path=self.base, env_vars={"BASE": "1"}
        )
        pool._clock = lambda: self.now
        self._run(pool.start())
        return pool

    def _settle(self) -> None:
        self._run(self.pool.settle())

    @precondition(lambda self: len(self.held) < SIZE)
    @rule()
    def acquire(self) -> None:
        sandbox = self._run(self.pool.get(timeout=60))
        sid = sandbox.sandbox_id
        assert sid not in self.held, "handed to two holders"
        assert sid not in self.retired, f"{sid} should have been retired"
        self.uses[sid] = self.uses.get(sid, 0) + 1
        self.held[sid] = sandbox
        r = self._run(sandbox.run("import os; print(sorted(os.listdir('.')), os.environ.get('LEFT'))"))
        assert r.stdout == "['.tmp', '.venv'] None\n", r
        self._settle()

    def _release(self, data: st.DataObject, dirty: bool) -> None:
        sid = data.draw(st.sampled_from(sorted(self.held)))
        sandbox = self.held.pop(sid)
        self._run(sandbox.write_file("left.txt", "x"))
        self._run(sandbox.set_env("LEFT", "x"))
        if dirty:
            assert self._run(sandbox.run(PLANT)).success
        self._run(self.pool.put(sandbox))
        self.dead.append(sandbox)
        if dirty or self.uses[sid] >= MAX_USES or sid in self.expired:
            self.retired.add(sid)
        self._settle()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._release(data, dirty=False)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release_with_a_package_installed(self, data: st.DataObject) -> None:
        self._release(data, dirty=True)

    @precondition(lambda self: self.expires < 1)
    @rule()
    def expire(self) -> None:
        """Every sandbox that exists now is past max_age: idle ones are never handed out again,
        held ones are destroyed when returned."""
        self.expires += 1
        self.now += MAX_AGE + 1
        self.expired |= set(self.uses) | set(self.held)
        self.retired |= set(self.uses) - set(self.held)

    @precondition(lambda self: self.shutdowns < 1)
    @rule()
    def shutdown_and_start_again(self) -> None:
        self.shutdowns += 1
        self._run(self.pool.shutdown())
        for sandbox in self.held.values():
            self.dead.append(sandbox)
        self.retired |= set(self.uses)
        self.held.clear()
        assert _processes_under(self.base) == []
        assert os.listdir(self.base) == []
        self.pool = self._new_pool()

    @invariant()
    def counts_match_the_model(self) -> None:
        stats = self.pool.stats()
        assert stats.in_use == len(self.held)
        assert stats.idle == SIZE - len(self.held)
        assert (stats.creating, stats.resetting, stats.destroying) == (0, 0, 0)

    @invariant()
    def returned_objects_are_dead(self) -> None:
        for sandbox in self.dead[-2:]:
            with pytest.raises(SandboxNotRunningError):
                self._run(sandbox.run("print(1)"))

    def teardown(self) -> None:
        try:
            self._run(self.pool.shutdown())
            assert _processes_under(self.base) == []
        finally:
            self.loop.close()
            safefs.rmtree(self.base)


PoolMachine.TestCase.settings = settings(
    max_examples=6,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # no shrinking: each step costs a real reset, and a failure prints its steps anyway
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
test_pool_against_its_model = PoolMachine.TestCase
