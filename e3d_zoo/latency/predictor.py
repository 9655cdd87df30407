"""Predict a network's latency from a latency table, without building it.

    predicted_ms = offset_ms + scale * sum over units (entry_ms - call_overhead_ms)

Units are the table's keys (one per conv block, residual layer and the head). Each
isolated wall-clock or CPU entry includes one call's fixed cost (``call_overhead_ms``,
measured on an empty graph), which the network pays once, not once per unit: it is
subtracted per unit and the whole-network fixed cost ``offset_ms`` is added back.
Entries of statistic ``kernel`` (the runtime's per-layer times, summed) hold no call
cost, so nothing is subtracted. ``offset_ms`` and ``scale`` are calibrated against
end-to-end wall-clock measurements (:func:`calibrate`).

Units missing from the table (``missing=``):

* ``"interpolate"`` (default; what the search uses): a weighted least-squares fit
  ``ms ~ a*pointwise_macs + b*depthwise_macs + c*activation_elements + d`` over the
  measured entries of the same kind and kernel (or of the same kind). Measuring
  costs about a second per unit on this machine and a search visits thousands of
  new units, so the search interpolates; re-profile the winner's units afterwards
  (``e3d-bench --profile-table T.json --arch found.json``) to check it exactly.
* ``"measure"``: measure the unit now on the table's backend and add it to the
  table (saved if the table has a path). Exact, slow: for a handful of networks.
* ``"error"``: raise :class:`LatencyTableError`.

A prediction is a sum of per-block numbers cached by (block, clip shape), so a
search pays dict lookups, not module construction.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import LatencyTableError
from ..spec import ArchSpec
from .profile import Loader, profile_keys
from .table import STATISTICS, LatencyTable, LayerKey, block_layer_keys, head_key, load_table

MISSING_MODES = ("interpolate", "measure", "error")
_MIN_FIT = 5  # entries needed for a 4-feature fit


def unit_features(key: LayerKey) -> Tuple[float, float, float]:
    """(pointwise/dense MACs, depthwise MACs, activation elements) of one unit."""
    ho, wo = key.out_hw
    T = key.t
    if key.kind == "res":
        pw = T * (key.h * key.w * key.cin * key.btn + ho * wo * key.btn * key.cout)
        dw = T * ho * wo * key.btn * key.kt * key.k * key.k
        el = T * (key.h * key.w * (key.cin + key.btn) + ho * wo * (key.btn + key.cout))
        return float(pw), float(dw), float(el)
    if key.kind == "conv":
        pw = T * ho * wo * key.cout * key.cin * key.kt * key.k * key.k
        el = T * (key.h * key.w * key.cin + ho * wo * key.cout)
        return float(pw), 0.0, float(el)
    hid = key.btn
    pw = key.cin * hid + hid * key.cout if hid else key.cin * key.cout
    return float(pw), 0.0, float(T * key.h * key.w * key.cin)


class LatencyPredictor:
    """``predict_ms(spec)`` from a :class:`LatencyTable` (the search's latency budget)."""

    def __init__(self, table: LatencyTable, *, missing: str = "interpolate", loader: Any = None,
                 num_classes: int = 400, statistic: Optional[str] = None):
        if missing not in MISSING_MODES:
            raise LatencyTableError(f"missing: expected one of {list(MISSING_MODES)}, found {missing!r}")
        self.table = table
        self.missing = missing
        self.loader = loader
        self.num_classes = num_classes
        # Which entry statistic to sum: the table's own ("ms") unless asked for another
        # one the entries also carry (every profiled entry has median_ms and min_ms).
        own = table.settings.get("statistic", "median")
        self.statistic = statistic or own
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"statistic: expected one of {list(STATISTICS)}, found "
                                    f"{self.statistic!r}")
        if self.statistic == "kernel" and own != "kernel":
            raise LatencyTableError(
                f"{table.path or 'latency table'}: statistic 'kernel' needs a table whose units "
                f"were timed with per-layer counters; this one's statistic is {own!r} (profile a new "
                "table with `e3d-bench --profile-table T.json --statistic kernel` on OpenVINO)")
        self._field = "ms" if self.statistic == own else f"{self.statistic}_ms"
        cal = table.calibration or {}
        cal = {**cal, **((cal.get("by_statistic") or {}).get(self.statistic) or {})}
        self.call_overhead_ms = float(cal.get("call_overhead_ms", 0.0))
        self.scale = float(cal.get("scale", 1.0))
        self.offset_ms = float(cal.get("offset_ms", self.call_overhead_ms))
        self._ref_field = f"{self.statistic}_ms"
        refs = [e["ref"][self._ref_field] for e in table.entries.values()
                if isinstance(e.get("ref"), dict) and e["ref"].get(self._ref_field)]
        #: the drift reference's median over all measuring sessions of the table: the
        #: time base every entry is rescaled to (None: entries are used as measured)
        self.nominal_ref_ms: Optional[float] = float(np.median(refs)) if refs else None
        # whole networks are measured in wall clock (kernel sums too predict wall clock), so
        # their drift is the reference's wall-clock ratio
        self._net_ref_field = "median_ms" if self.statistic == "kernel" else self._ref_field
        net_refs = [e["ref"][self._net_ref_field] for e in table.entries.values()
                    if isinstance(e.get("ref"), dict) and e["ref"].get(self._net_ref_field)]
        self._nominal_net_ref_ms = float(np.median(net_refs)) if net_refs else None
        self._unit: Dict[LayerKey, Tuple[float, str]] = {}
        self._block: Dict[tuple, Tuple[float, int, int]] = {}
        self._fits: Dict[tuple, Optional[np.ndarray]] = {}
        self._fits_at = -1

    # ---- units ----------------------------------------------------------------
    def unit_ms(self, key: LayerKey) -> Tuple[float, str]:
        """(net ms of one unit, 'measured' | 'interpolated')."""
        hit = self._unit.get(key)
        if hit is not None:
            return hit
        if key in self.table:
            got = (max(self._entry_ms(key) - self.call_overhead_ms, 0.0), "measured")
        elif self.missing == "measure":
            self._measure(key)
            got = (max(self._entry_ms(key) - self.call_overhead_ms, 0.0), "measured")
        elif self.missing == "interpolate":
            got = (self._interpolate(key), "interpolated")
        else:
            raise LatencyTableError(
                f"{self.table.path or 'latency table'}: no entry for {key}; profile it with "
                "`e3d-bench --profile-table TABLE --arch ARCH` or allow interpolation")
        self._unit[key] = got
        return got

    def _entry_ms(self, key: LayerKey) -> float:
        e = self.table.entries[key]
        v = e.get(self._field)
        if v is None:
            raise LatencyTableError(f"{self.table.path or 'latency table'}: entry {key} has no "
                                    f"'{self._field}' (statistic {self.statistic!r}); re-profile it")
        ref = e.get("ref")
        if self.nominal_ref_ms and isinstance(ref, dict) and ref.get(self._ref_field):
            return float(v) * self.nominal_ref_ms / float(ref[self._ref_field])
        return float(v)

    def to_time_base(self, measured_ms: float, session_ref: Optional[Dict[str, float]]) -> float:
        """A whole-network measurement rescaled to the table's time base by the drift
        reference timed in the same session (identity when either side has none).

        A diagnostic, not used for calibration or validation: among large networks the
        small reference unit runs with a cold cache, so in such sessions its ratio
        measures cache context as much as load (it made the validation worse, not better).
        """
        field = self._net_ref_field
        if self._nominal_net_ref_ms and session_ref and session_ref.get(field):
            return measured_ms * self._nominal_net_ref_ms / float(session_ref[field])
        return measured_ms

    def _measure(self, key: LayerKey) -> None:
        if self.loader is None:
            self.loader = Loader.for_table(self.table)
        profile_keys(self.table, [key], self.loader, path=self.table.path, progress=False)
        self._fits_at = -1

    def _group_fit(self, group: tuple) -> Optional[np.ndarray]:
        if self._fits_at != len(self.table):
            self._fits.clear()
            self._fits_at = len(self.table)
        if group in self._fits:
            return self._fits[group]
        rows, ys = [], []
        for k in self.table.entries:
            if (k.kind,) + ((k.kt, k.k) if len(group) > 1 else ()) != group:
                continue
            ms = self._entry_ms(k) - self.call_overhead_ms
            if ms <= 0:
                continue
            rows.append((1.0,) + unit_features(k))
            ys.append(ms)
        coef = None
        if len(ys) >= _MIN_FIT:
            X = np.asarray(rows)
            y = np.asarray(ys)
            # Scale columns so lstsq is well conditioned; weight by 1/y for relative error.
            norm = np.maximum(np.abs(X).max(axis=0), 1e-12)
            w = 1.0 / y
            sol, *_ = np.linalg.lstsq((X / norm) * w[:, None], y * w, rcond=None)
            coef = sol / norm
        self._fits[group] = coef
        return coef

    def _interpolate(self, key: LayerKey) -> float:
        x = np.asarray((1.0,) + unit_features(key))
        for group in ((key.kind, key.kt, key.k), (key.kind,)):
            coef = self._group_fit(group)
            if coef is not None:
                return max(float(x @ coef), 0.0)
        raise LatencyTableError(
            f"{self.table.path or 'latency table'}: no entry for {key} and fewer than {_MIN_FIT} "
            f"'{key.kind}' entries to interpolate from; profile more units with "
            "`e3d-bench --profile-table`")

    # ---- networks ---------------------------------------------------------------
    def _block_ms(self, block, frames: int, h: int, w: int) -> Tuple[float, int, int]:
        ck = (block.key(), frames, h, w)
        hit = self._block.get(ck)
        if hit is None:
            keys, ho, wo = block_layer_keys(block, frames, h, w)
            hit = (sum(self.unit_ms(k)[0] for k in keys), ho, wo)
            self._block[ck] = hit
        return hit

    def raw_sum_ms(self, spec: ArchSpec, frames: Optional[int] = None, size: Optional[int] = None,
                   num_classes: Optional[int] = None) -> float:
        """Sum of net unit latencies (no calibration)."""
        T = spec.frames if frames is None else frames
        h = w = spec.size if size is None else size
        total = 0.0
        for b in spec.blocks:
            ms, h, w = self._block_ms(b, T, h, w)
            total += ms
        nc = self.num_classes if num_classes is None else num_classes
        total += self.unit_ms(head_key(spec, T, h, w, nc))[0]
        return total

    def predict_ms(self, spec: ArchSpec, frames: Optional[int] = None,
                   size: Optional[int] = None) -> float:
        """Predicted latency (ms) of one clip through the whole network."""
        return self.offset_ms + self.scale * self.raw_sum_ms(spec, frames, size)

    def breakdown(self, spec: ArchSpec, frames: Optional[int] = None,
                  size: Optional[int] = None) -> List[Dict[str, Any]]:
        """Per unit: key, net ms and whether it was measured or interpolated."""
        from .table import layer_keys

        out = []
        for k in layer_keys(spec, frames, size, self.num_classes):
            ms, how = self.unit_ms(k)
            out.append({"unit": str(k), "ms": ms, "source": how})
        return out

    def coverage(self, spec: ArchSpec, frames: Optional[int] = None,
                 size: Optional[int] = None) -> float:
        """Fraction of the network's units that have a measured entry."""
        rows = self.breakdown(spec, frames, size)
        return sum(r["source"] == "measured" for r in rows) / len(rows)


def load_predictor(path: str | os.PathLike, strict: bool = False, *,
                   missing: str = "interpolate", threads: Optional[int] = None) -> LatencyPredictor:
    """A predictor for the table at ``path``.

    A table measured on another device, runtime version or thread count gives a
    :class:`~e3d_zoo.latency.table.LatencyTableWarning` naming the mismatch, or a
    :class:`LatencyTableError` when ``strict``. ``threads``: the thread count you will
    deploy with, checked against the table's (default: trust the table's).
    """
    table = load_table(path)
    table.check_environment(strict=strict, threads=threads)
    if not table.entries and missing != "measure":
        raise LatencyTableError(f"{path}: the latency table has no entries; profile some with "
                                "`e3d-bench --profile-table`")
    return LatencyPredictor(table, missing=missing)


def calibrate(table: LatencyTable, specs: Sequence[ArchSpec], measured_ms: Sequence[float], *,
              frames: int, size: int, num_classes: int = 400,
              statistic: Optional[str] = None) -> Dict[str, Any]:
    """Fit ``scale`` in ``measured = offset + scale * sum(entry - call_overhead)``.

    ``offset`` is the measured cost of one call of an empty graph (framework, input
    hand-over), paid once per network; ``scale`` absorbs what isolated units do not
    see (cache state between layers, fused boundaries). ``scale`` is the median of
    the per-network ratios rather than a least-squares slope: on a shared machine a
    two-parameter fit on a few noisy networks swings wildly (we saw scale 0.13 with
    a 52 ms offset under load 12), while the median ratio stays put.

    ``statistic`` selects which entry statistic is summed; ``measured_ms`` must be the
    whole networks' matching figure (``NETWORK_FIELD``: wall-clock median for
    ``kernel``). The fit is stored per statistic.
    """
    if len(specs) != len(measured_ms) or not specs:
        raise LatencyTableError("calibration: expected one measurement per architecture")
    statistic = statistic or table.settings.get("statistic", "median")
    cal = dict(table.calibration or {})
    pred = LatencyPredictor(table, missing="error", statistic=statistic)
    sums = np.array([pred.raw_sum_ms(s, frames, size, num_classes) for s in specs])
    y = np.asarray(measured_ms, dtype=float)
    own = (cal.get("by_statistic") or {}).get(statistic) or cal
    # the network's one call, in the networks' own measure (wall clock for kernel sums)
    offset = float(own.get("call_ms", pred.call_overhead_ms))
    if np.any(sums <= 0):
        raise LatencyTableError("calibration: a network's units sum to zero; re-profile the table")
    scale = float(np.median((y - offset) / sums))
    if not scale > 0:
        raise LatencyTableError(f"calibration: measured latencies {list(y)} are below the fixed "
                                f"overhead {offset:.3f} ms; re-measure on a quieter machine")
    fit = offset + scale * sums
    fitted = {"call_overhead_ms": pred.call_overhead_ms, "call_ms": offset, "scale": scale,
              "offset_ms": offset,
              "fitted_on": len(specs), "fit_mape_pct": float(np.mean(np.abs(fit - y) / y) * 100.0)}
    by = dict(cal.get("by_statistic") or {})
    by[statistic] = fitted
    cal["by_statistic"] = by
    cal["clip"] = [frames, size]
    if statistic == table.settings.get("statistic", "median") or "scale" not in cal:
        cal.update(fitted)
    table.calibration = cal
    return fitted
