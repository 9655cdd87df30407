"""Budgets: upper limits on a candidate's costs, any combination.

``tinynas_flops`` (the reference search's FLOPs convention), ``macs`` and ``params``
(with the classifier head for ``num_classes``; see complexity.py), ``layers``, and
``latency_ms`` through a :class:`LatencyPredictor` (implemented by the latency
tables of ``e3d_zoo.latency``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

from ..errors import SearchError
from ..spec import ArchSpec


@runtime_checkable
class LatencyPredictor(Protocol):
    """Predicts a network's latency from its spec, without running it."""

    def predict_ms(self, spec: ArchSpec) -> float:
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


_NAMES = ("tinynas_flops", "macs", "params", "layers", "latency_ms")
_FLAGS = {"tinynas_flops": "--budget-flops", "macs": "--budget-macs",
          "params": "--budget-params", "layers": "--budget-layers",
          "latency_ms": "--budget-latency-ms"}


@dataclass(frozen=True)
class Budgets:
    tinynas_flops: Optional[float] = None
    macs: Optional[float] = None
    params: Optional[float] = None
    layers: Optional[int] = None
    latency_ms: Optional[float] = None

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
