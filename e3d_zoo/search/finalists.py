"""Latency budgets that hold: the search's finalists measured on the device.

A latency table predicts; the device decides. The evolution keeps only candidates
whose *predicted* latency fits. Afterwards K members of its final population (the
finalists) are measured end to end together with a reference network, interleaved
in one run, and the result is the best-scoring finalist whose *measured* latency
fits the budget.

Which members: the evolution maximizes the score right up to the predicted limit, so
its best members are exactly those whose latency the predictor underestimates most
(on this project's machine the 5 best of a 500,000-candidate search all measured 3-8 %
over a limit they were predicted to meet). The finalists therefore form a ladder: the
best-scoring member, then for i = 1..K-1 the best-scoring member predicted at least
``i * step`` under the limit (default step 2 %: 0, 2, 4, 6, 8 % of slack, the span of
the predictor's own error), so some score is traded for slack only when the
measurement says it must be. ``step=0`` takes the plain top K.

How a budget is compared:

* ``latency_ratio`` r (relative to the reference network, default E3D-S): the
  finalist's latency over the reference's, both from the same run, must be <= r.
  This is the form that survives the machine's drift between sessions: "no slower
  than E3D-S" stays true or false whichever minute it is measured in, while E3D-S's
  own milliseconds move by 5-10 % from one session to the next on a shared machine.
  During the evolution the predicted budget is r x the reference's predicted
  latency, so the predictor's bias on similar networks cancels too.
* ``latency_ms`` X (absolute): the finalist's measured latency must be <= X ms.
  Use it for a hard deadline on a quiet, dedicated device; the reference is
  measured in the same run anyway, and its figure is recorded beside the verdict.

When no finalist fits, :class:`LatencyBudgetMissed` (a :class:`SearchError`) says
which came nearest and by how much, unless ``accept_nearest`` asks for the nearest
to be returned, with ``fits`` False.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..errors import SearchError
from ..spec import ArchSpec
from .budgets import Budgets, LatencyMeasurer

DEFAULT_FINALISTS = 5
DEFAULT_STEP = 0.02
DEFAULT_MEASURE_ROUNDS = 7
_MEASURED_KEYS = ("ms", "median_ms", "p90_ms", "min_ms", "spread", "runs", "rounds")


class LatencyBudgetMissed(SearchError):
    """No measured finalist fits the latency budget; ``verdict`` holds every figure and
    ``result`` the search's result with the nearest finalist as its spec."""

    def __init__(self, verdict: "LatencyVerdict", result: Any = None, hint: str = ""):
        self.verdict = verdict
        self.result = result
        super().__init__(verdict.describe() + hint)


@dataclass
class Finalist:
    rank: int  # its rank in the search's final population (1 = the highest score)
    score: float
    spec: ArchSpec
    predicted_ms: float
    #: how far under the predicted limit it was predicted: 0.04 = 4 % under
    predicted_slack: float = 0.0
    measured: Optional[Dict[str, Any]] = None
    #: per latency budget, how far the measurement is over it relative to the budget
    #: (0.031: 3.1 % over; negative: under)
    excess: Dict[str, float] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return all(v <= 0 for v in self.excess.values())

    @property
    def misses_by(self) -> float:
        return max(self.excess.values())

    @property
    def close_call(self) -> bool:
        """The budget lies within the middle half of its per-round figures: the same
        measurement, repeated, could well give the other verdict."""
        rounds = (self.measured or {}).get("round_budget_fractions") or []
        if len(rounds) < 2:
            return False
        lo, hi = _quartiles(rounds)
        return lo <= 1.0 <= hi

    def to_dict(self, blocks: bool = True) -> Dict[str, Any]:
        m = self.measured or {}
        out: Dict[str, Any] = {"rank": self.rank, "score": self.score,
                               "predicted_ms": self.predicted_ms,
                               "predicted_slack_pct": self.predicted_slack * 100.0}
        out.update({f"measured_{k}": m[k] for k in _MEASURED_KEYS if k in m})
        if "reference_ms" in m:
            out["reference_measured_ms"] = m["reference_ms"]
        if "ratio" in m:
            out["ratio_to_reference"] = m["ratio"]
            out["round_ratios"] = [round(r, 4) for r in m.get("round_ratios", [])]
        if self.measured is not None:
            out["fits"] = self.fits
            out["close_call"] = self.close_call
            out["misses_by_pct"] = max(self.misses_by, 0.0) * 100.0
            out["excess_pct"] = {k: v * 100.0 for k, v in self.excess.items()}
        if blocks:
            out["blocks"] = [b.to_dict() for b in self.spec.blocks]
        return out


@dataclass
class LatencyVerdict:
    budgets: Budgets
    reference: str
    reference_predicted_ms: float
    predicted_limit_ms: float
    finalists: List[Finalist]
    session: Optional[Dict[str, Any]] = None  # the measuring run: statistic, rounds, environment
    reference_measured: Optional[Dict[str, Any]] = None
    chosen: int = 0  # index into finalists

    @property
    def measured(self) -> bool:
        return self.session is not None

    @property
    def fits(self) -> Optional[bool]:
        """Whether the returned network's measured latency fits (None: not measured)."""
        return self.finalists[self.chosen].fits if self.measured else None

    @property
    def choice(self) -> Finalist:
        return self.finalists[self.chosen]

    @property
    def statistic_text(self) -> str:
        st = (self.session or {}).get("statistic", "median")
        return {"cpu": "CPU time", "median": "wall-clock median", "min": "fastest run"}.get(st, st)

    def _budget_text(self) -> str:
        parts = []
        if self.budgets.latency_ratio is not None:
            parts.append(f"<= {self.budgets.latency_ratio:.3f}x {self.reference}")
        if self.budgets.latency_ms is not None:
            parts.append(f"<= {self.budgets.latency_ms:.4g} ms")
        return " and ".join(parts)

    def _figures(self, f: Finalist) -> str:
        m = f.measured or {}
        ref = (self.reference_measured or {}).get("ms")
        text = f"{m.get('ms', float('nan')):.2f} ms ({self.statistic_text})"
        if ref:
            text += f" = {m['ratio']:.3f}x {self.reference}'s {ref:.2f} ms in the same run"
            rr = m.get("round_ratios") or []
            if len(rr) > 1:  # how steady the ratio was: a verdict inside this range is a close call
                text += f" (per round {min(rr):.3f}-{max(rr):.3f}x)"
        return text + f", predicted {f.predicted_ms:.2f} ms"

    def describe(self) -> str:
        """The verdict in one line."""
        n = len(self.finalists)
        if not self.measured:
            return (f"latency budget ({self._budget_text()}): not measured (finalists 0): the "
                    f"result fits the predicted budget only (predicted {self.choice.predicted_ms:.2f} "
                    f"ms <= {self.predicted_limit_ms:.2f} ms)")
        f = self.choice
        close = (" (a close call: the budget lies within the middle half of its per-round "
                 "figures)" if f.close_call else "")
        if f.fits:
            skipped = [g.rank for g in self.finalists[:self.chosen]]
            why = (f"; higher-scoring finalist(s) {', '.join(map(str, skipped))} measured over it"
                   if skipped else "")
            return (f"fits the latency budget ({self._budget_text()}): the finalist of rank "
                    f"{f.rank} ({self.chosen + 1} of {n} by score) ran {self._figures(f)}{why}"
                    f"{close}")
        return (f"no finalist of {n} fits the latency budget ({self._budget_text()}): the "
                f"nearest, of rank {f.rank}, misses by {f.misses_by * 100:.1f} %: it ran "
                f"{self._figures(f)}{close}")

    def to_dict(self) -> Dict[str, Any]:
        budget: Dict[str, Any] = {k: v for k, v in self.budgets.to_dict().items()
                                  if k in ("latency_ms", "latency_ratio")}
        budget["compared_as"] = (
            "measured latency / the reference's measured latency, same interleaved run"
            if self.budgets.latency_ratio is not None else "measured latency in ms")
        budget["reference"] = self.reference
        budget["predicted_limit_ms"] = self.predicted_limit_ms
        out: Dict[str, Any] = {"measured": self.measured, "fits": self.fits, "budget": budget,
                               "verdict": self.describe(),
                               # its blocks are the arch's own
                               "chosen": self.choice.to_dict(blocks=False)}
        out["reference"] = {"name": self.reference, "predicted_ms": self.reference_predicted_ms}
        if self.reference_measured is not None:
            out["reference"].update({f"measured_{k}": self.reference_measured[k]
                                     for k in _MEASURED_KEYS if k in self.reference_measured})
        if self.measured:
            out["session"] = self.session
            out["finalists"] = [f.to_dict() for f in self.finalists]
        return out


def _positive_ms(stats: Any, what: str) -> float:
    ms = stats.get("ms") if isinstance(stats, dict) else None
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
        raise SearchError(f"latency measurer: {what}'s 'ms' should be a positive number of "
                          f"milliseconds, found {ms!r}")
    return float(ms)


def judge(finalists: List[Finalist], budgets: Budgets, measurements: Dict[str, Any]) -> int:
    """Attach the measurements to the finalists; the index of the one to return: the
    best-scoring one that fits, else the nearest (smallest relative excess)."""
    nets = measurements.get("networks")
    if not isinstance(nets, list) or len(nets) != len(finalists):
        raise SearchError(f"latency measurer: expected {len(finalists)} network measurements, "
                          f"found {len(nets) if isinstance(nets, list) else nets!r}")
    ref_ms = _positive_ms(measurements.get("reference"), "the reference")
    for f, m in zip(finalists, nets):
        ms = _positive_ms(m, f"finalist {f.rank}")
        f.measured = {"ratio": ms / ref_ms, **m, "reference_ms": ref_ms}
        f.excess = budgets.latency_excess(ms, f.measured["ratio"])
        f.measured["round_budget_fractions"] = _round_budget_fractions(f.measured, budgets)
    fitting = [i for i, f in enumerate(finalists) if f.fits]
    if fitting:
        return fitting[0]
    return min(range(len(finalists)), key=lambda i: finalists[i].misses_by)


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[2]


def _round_budget_fractions(m: Dict[str, Any], budgets: Budgets) -> List[float]:
    """Each round's figure as a fraction of the budget it is held to (the tighter one)."""
    per_budget = []
    if budgets.latency_ratio is not None and m.get("round_ratios"):
        per_budget.append([r / budgets.latency_ratio for r in m["round_ratios"]])
    if budgets.latency_ms is not None and m.get("round_ms"):
        per_budget.append([r / budgets.latency_ms for r in m["round_ms"]])
    return [max(v) for v in zip(*per_budget)] if per_budget else []


def pick_finalists(predicted_ms: Sequence[float], limit_ms: float, k: int,
                   step: float = DEFAULT_STEP) -> List[int]:
    """Indices (into a population sorted best first) of the finalists: the best member,
    then for i = 1..k-1 the best one not yet picked predicted at least ``i * step``
    under ``limit_ms`` (the next best when none is); sorted best first."""
    if step < 0:
        raise SearchError(f"finalist step: expected a fraction >= 0, found {step!r}")
    picked: List[int] = []
    for i in range(min(k, len(predicted_ms))):
        rest = [j for j in range(len(predicted_ms)) if j not in picked]
        cap = limit_ms * (1.0 - i * step)
        picked.append(next((j for j in rest if predicted_ms[j] <= cap), rest[0]))
    return sorted(picked)


def check_finalists(finalists: List[Finalist], budgets: Budgets, *,
                    measurer: Optional[LatencyMeasurer], reference: ArchSpec,
                    reference_predicted_ms: float, predicted_limit_ms: float, frames: int,
                    size: int, num_classes: int) -> LatencyVerdict:
    """Measure ``finalists`` (best first) with ``reference`` in one run and judge them
    against ``budgets``; with no ``measurer``, record the prediction only."""
    verdict = LatencyVerdict(budgets, reference.name or "reference", reference_predicted_ms,
                             predicted_limit_ms, finalists)
    if measurer is None:
        return verdict
    measurements = measurer.measure(reference, [f.spec for f in finalists], frames=frames,
                                    size=size, num_classes=num_classes)
    verdict.chosen = judge(finalists, budgets, measurements)
    verdict.reference_measured = dict(measurements["reference"])
    verdict.session = {k: v for k, v in measurements.items() if k not in ("reference", "networks")}
    return verdict
