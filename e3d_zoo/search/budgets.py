"""Budgets: upper limits on a candidate's costs, any combination.

``tinynas_flops`` (the reference search's FLOPs convention), ``macs`` and ``params``
(with the classifier head for ``num_classes``; see complexity.py), ``layers``, and two
latency budgets:

* ``latency_ms``: an absolute budget in milliseconds;
* ``latency_ratio``: latency relative to a reference network (default E3D-S) measured
  in the same run, e.g. 1.0 for "no slower than E3D-S".

The evolution ranks candidates by a :class:`LatencyPredictor` (the latency tables of
``e3d_zoo.latency``); the finalists are then measured on the device by a
:class:`LatencyMeasurer` (``e3d_zoo.search.finalists``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, Sequence, runtime_checkable

from ..errors import SearchError
from ..spec import ArchSpec


@runtime_checkable
class LatencyPredictor(Protocol):
    """Predicts a network's latency from its spec, without running it."""

    def predict_ms(self, spec: ArchSpec) -> float:
        ...


@runtime_checkable
class LatencyMeasurer(Protocol):
    """Measures networks on the device, interleaved with a reference network in one run.

    ``measure`` returns ``{"reference": stats, "networks": [stats, ...], ...}`` where
    each ``stats`` has at least ``ms`` (the compared statistic; ``median_ms``, ``p90_ms``,
    ``spread``, ``runs``, ``rounds`` are recorded when present), networks in ``specs``
    order; a network's ``ratio`` defaults to its ``ms`` over the reference's. Any
    further keys (environment, load) are recorded as given.
    """

    def measure(self, reference: ArchSpec, specs: Sequence[ArchSpec], *, frames: int, size: int,
                num_classes: int) -> Dict[str, Any]:
        ...


def load_predictor(path: str) -> LatencyPredictor:
    """The predictor for a latency table file (made by ``e3d-bench``)."""
    try:
        from ..latency.predictor import load_predictor as _load
    except ImportError:
        raise SearchError(f"--latency-table {path}: latency tables arrive with e3d-bench "
                          "(e3d_zoo.latency.predictor is not available in this version); "
                          "budget FLOPs, MACs, params or layers instead") from None
    predictor = _load(path)
    if not isinstance(predictor, LatencyPredictor):
        raise SearchError(f"{path}: the loaded latency predictor has no predict_ms(spec) method")
    return predictor


_NAMES = ("tinynas_flops", "macs", "params", "layers", "latency_ms", "latency_ratio")
_FLAGS = {"tinynas_flops": "--budget-flops", "macs": "--budget-macs",
          "params": "--budget-params", "layers": "--budget-layers",
          "latency_ms": "--budget-latency-ms", "latency_ratio": "--budget-latency-ratio"}
LATENCY_BUDGETS = ("latency_ms", "latency_ratio")


@dataclass(frozen=True)
class Budgets:
    tinynas_flops: Optional[float] = None
    macs: Optional[float] = None
    params: Optional[float] = None
    layers: Optional[int] = None
    latency_ms: Optional[float] = None
    latency_ratio: Optional[float] = None

    def __post_init__(self) -> None:
        for name in _NAMES:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SearchError(f"budget {name} ({_FLAGS[name]}): expected a positive number, "
                                  f"found {v!r}")
        if self.layers is not None and int(self.layers) != self.layers:
            raise SearchError(f"budget layers (--budget-layers): expected an integer, found {self.layers!r}")

    def to_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in _NAMES if getattr(self, n) is not None}

    def is_empty(self) -> bool:
        return not self.to_dict()

    @property
    def has_latency(self) -> bool:
        return self.latency_ms is not None or self.latency_ratio is not None

    def latency_excess(self, ms: float, ratio: Optional[float]) -> Dict[str, float]:
        """Per latency budget, how far ``ms`` (and ``ratio`` to the reference) are over
        it, relative to the budget: 0.03 = 3 % over, -0.02 = 2 % under."""
        out = {}
        if self.latency_ms is not None:
            out["latency_ms"] = ms / self.latency_ms - 1.0
        if self.latency_ratio is not None:
            if ratio is None:
                raise SearchError("budget latency_ratio: the reference network was not measured")
            out["latency_ratio"] = ratio / self.latency_ratio - 1.0
        return out

    def exceeded(self, costs: dict[str, float]) -> list[str]:
        """Which budgets ``costs`` breaks, in words."""
        out = []
        for name, limit in self.to_dict().items():
            if name in costs and costs[name] > limit:
                out.append(f"{name} {costs[name]:.6g} > budget {limit:.6g} ({_FLAGS[name]})")
        return out

    @staticmethod
    def flag(name: str) -> str:
        return _FLAGS[name]
