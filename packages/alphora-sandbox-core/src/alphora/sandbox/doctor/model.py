"""What the doctor reports: verdicts, one probe's outcome, the probe registry, and the tiers.

A *probe* is a small async function given a started :class:`~alphora.sandbox.Sandbox` and a
:class:`ProbeContext`; it attacks one guarantee the way hostile sandbox code would and returns an
:class:`Outcome`: a :class:`Verdict` and one line of evidence saying what it observed.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ..sandbox import Sandbox

__all__ = [
    "DOCKER_TIERS",
    "PROBES",
    "TIERS",
    "Outcome",
    "Probe",
    "ProbeContext",
    "Verdict",
    "probe",
]

#: every tier the doctor knows, in scorecard order
TIERS: tuple[str, ...] = ("local", "isolated", "docker", "docker+runsc")
#: tiers that run in a container (the backend name is "docker" for both)
DOCKER_TIERS: frozenset[str] = frozenset({"docker", "docker+runsc"})


class Verdict(str, enum.Enum):
    """A probe's verdict for one tier."""

    #: the guarantee held: the attack was refused or contained
    HELD = "held"
    #: the attack worked, and the docs say this tier does not protect against it (e.g. ``local``
    #: runs as your user, with your network and your files)
    DOCUMENTED = "documented limit"
    #: the attack worked where the docs promise it cannot
    FAILED = "FAILED"
    #: the probe was not run; the evidence says why (e.g. no pids cgroup to contain a fork bomb)
    NOT_RUN = "not run"
    #: the probe does not apply to this tier (e.g. engine logs on ``local``)
    NOT_APPLICABLE = "n/a"
    #: the guarantee is switched off by your configuration (the network, when you enabled it)
    CONFIGURED = "enabled by configuration"
    #: the probe itself could not complete (the sandbox did not start, the probe crashed); the
    #: evidence has the error. Not a verdict on the guarantee, but nothing was proven either
    ERROR = "error"


@attrs.frozen
class Outcome:
    """One probe's result on one tier."""

    verdict: Verdict
    evidence: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "evidence": self.evidence, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(Verdict(data["verdict"]), str(data["evidence"]), float(data.get("seconds", 0.0)))


@attrs.frozen(kw_only=True)
class ProbeContext:
    """What a probe knows besides its sandbox (built by the doctor's agent process for one tier)."""

    #: the tier's name (one of :data:`TIERS`)
    tier: str
    #: the agent process's description of the host-side setup (secrets, paths, cgroups; see ``agent.py``)
    spec: Mapping[str, Any]

    @property
    def docker(self) -> bool:
        return self.tier in DOCKER_TIERS

    @property
    def network_enabled(self) -> bool:
        """Whether *your configuration* gives sandboxes a network (limits and policy both on)."""
        return bool(self.spec.get("network_enabled"))

    def breach(self, evidence: str, *, documented_on: tuple[str, ...] = (), why: str = "") -> Outcome:
        """The verdict for an attack that worked: a documented limit on the tiers that never
        promised otherwise (``why`` says which promise is missing), FAILED elsewhere."""
        if self.tier in documented_on:
            return Outcome(Verdict.DOCUMENTED, f"{evidence} ({why})" if why else evidence)
        return Outcome(Verdict.FAILED, evidence)


ProbeFn = Callable[["Sandbox", ProbeContext], Awaitable[Outcome]]


@attrs.frozen(kw_only=True)
class Probe:
    """One attack on one guarantee."""

    #: short id, used by ``--probe`` and as the key in ``--json``
    id: str
    #: what is attacked, one line
    title: str
    fn: ProbeFn
    #: ResourceLimits fields this probe's sandbox gets on top of the doctor's defaults
    limits: Mapping[str, Any] = attrs.field(factory=dict)
    #: tiers it applies to (others report ``n/a``)
    tiers: tuple[str, ...] = TIERS
    #: a resource bomb (left out by ``--quick``)
    bomb: bool = False
    #: runs in its own agent process (inside its own pids cgroup on the local tiers)
    alone: bool = False


#: the registry, in scorecard order (filled by ``probes.py``, then ``probes_proc.py``)
PROBES: dict[str, Probe] = {}


def probe(id: str, title: str, **kw: Any) -> Callable[[ProbeFn], ProbeFn]:
    """Register an async probe function under ``id``."""

    def register(fn: ProbeFn) -> ProbeFn:
        PROBES[id] = Probe(id=id, title=title, fn=fn, **kw)
        return fn

    return register
