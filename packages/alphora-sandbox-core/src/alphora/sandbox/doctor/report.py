"""The scorecard: what the doctor found, as a plain-text table or JSON, and the exit code."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

from .model import PROBES, Outcome, Verdict
from .tiers import TierInfo

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Scorecard"]

EXIT_OK = 0
#: at least one probe FAILED
EXIT_FAILED = 1
#: bad command line or configuration
EXIT_USAGE = 2
#: no probe FAILED, but at least one could not complete (verdict ``error``)
EXIT_ERROR = 3


@attrs.define(kw_only=True)
class Scorecard:
    #: this run's id: in the names of its cgroups, containers' ``org.alphora.doctor`` label, agent marks
    run: str
    host: dict[str, Any]
    configuration: str
    tiers: dict[str, TierInfo]
    #: the tiers that were run, in order
    ran: list[str]
    probes: list[str]
    results: dict[str, dict[str, Outcome]] = attrs.field(factory=dict)
    notes: list[str] = attrs.field(factory=list)
    #: the temporary directory of the agent, its secrets and the sandboxes (removed at the end)
    workdir: str = ""

    def counts(self) -> Counter[Verdict]:
        return Counter(o.verdict for per in self.results.values() for o in per.values())

    @property
    def exit_code(self) -> int:
        counts = self.counts()
        if counts[Verdict.FAILED]:
            return EXIT_FAILED
        if counts[Verdict.ERROR]:
            return EXIT_ERROR
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "doctor": 1,
            "run": self.run,
            "workdir": self.workdir,
            "host": self.host,
            "configuration": self.configuration,
            "tiers": {
                name: {"available": t.available, "ran": name in self.ran, "detail": t.detail}
                for name, t in self.tiers.items()
            },
            "probes": {pid: PROBES[pid].title for pid in self.probes},
            "results": {tier: {pid: o.to_dict() for pid, o in per.items()} for tier, per in self.results.items()},
            "notes": self.notes,
            "summary": {v.value: counts[v] for v in Verdict if counts[v]},
            "exit_code": self.exit_code,
        }

    def render(self, width: int = 100) -> str:
        lines = [f"alphora-sandbox doctor: {self.host['summary']}", f"configuration: {self.configuration}", "tiers:"]
        for name, t in self.tiers.items():
            state = "" if t.available else "not available: "
            skipped = " (not selected)" if t.available and name not in self.ran else ""
            lines.append(f"  {name:<13} {state}{t.detail}{skipped}")
        lines.append("")
        if self.ran:
            lines += _table(self.probes, self.ran, self.results)
            lines.append("")
            lines.append("evidence:")
            for pid in self.probes:
                shown = [
                    (t, o)
                    for t in self.ran
                    if (o := self.results.get(t, {}).get(pid)) is not None and o.verdict is not Verdict.NOT_APPLICABLE
                ]
                if not shown:
                    continue
                lines.append(f"  {pid}: {PROBES[pid].title}")
                for tier, o in shown:
                    lines += textwrap.wrap(
                        f"{tier}: {o.verdict.value}: {o.evidence}",
                        width=max(40, width - 2),
                        initial_indent="    ",
                        subsequent_indent=" " * 8,
                        break_on_hyphens=False,
                    )
        for note in self.notes:
            lines.append(f"note: {note}")
        counts = self.counts()
        summary = ", ".join(f"{counts[v]} {v.value}" for v in Verdict if counts[v]) or "nothing run"
        lines.append("")
        lines.append(f"summary: {summary}; exit code {self.exit_code}")
        return "\n".join(lines)


def _table(probes: list[str], tiers: list[str], results: Mapping[str, Mapping[str, Outcome]]) -> list[str]:
    first = max(len("probe"), *(len(p) for p in probes))
    cells = {t: [results.get(t, {}).get(p) for p in probes] for t in tiers}
    widths = {t: max(len(t), *(len(o.verdict.value) if o else 1 for o in cells[t])) for t in tiers}
    head = "  ".join([f"{'probe':<{first}}", *(f"{t:<{widths[t]}}" for t in tiers)])
    out = [head, "-" * len(head)]
    for i, p in enumerate(probes):
        row = [f"{p:<{first}}"]
        for t in tiers:
            o = cells[t][i]
            row.append(f"{(o.verdict.value if o else '-'):<{widths[t]}}")
        out.append("  ".join(row).rstrip())
    return out
