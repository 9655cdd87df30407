"""Predictor arithmetic, interpolation, on-demand measurement and the search's interface."""
from __future__ import annotations

import math
import random

import pytest

from e3d_zoo.errors import LatencyTableError
from e3d_zoo.latency.predictor import LatencyPredictor, load_predictor, unit_features
from e3d_zoo.latency.predictor import calibrate
from e3d_zoo.latency.table import (LatencyTable, LatencyTableWarning, LayerKey, current_environment,
                                   layer_keys)
from e3d_zoo.zoo import load_zoo_arch

CAL = {"call_overhead_ms": 0.05, "scale": 1.1, "offset_ms": 0.2}


def _full_table(spec, frames, size, num_classes=400, more=()) -> tuple[LatencyTable, dict]:
    """Every unit of ``spec`` (and of ``more``) with a distinct, known latency."""
    t = LatencyTable(environment=current_environment("torch", 1), calibration=dict(CAL))
    values = {}
    keys = [k for sp in (spec, *more) for k in layer_keys(sp, frames, size, num_classes)]
    for i, k in enumerate(dict.fromkeys(keys)):
        values[k] = 0.05 + 0.013 * (i + 1)
        t.add(k, values[k])
    return t, values


def test_prediction_is_offset_plus_scaled_sum_of_units(tiny_spec):
    t, values = _full_table(tiny_spec, 4, 32)
    pred = LatencyPredictor(t, missing="error")
    expected = CAL["offset_ms"] + CAL["scale"] * sum(
        values[k] - CAL["call_overhead_ms"] for k in layer_keys(tiny_spec, 4, 32))
    assert pred.predict_ms(tiny_spec) == pytest.approx(expected, rel=1e-12)
    assert pred.predict_ms(tiny_spec) == pred.predict_ms(tiny_spec)  # cached path, same number
    assert all(r["source"] == "measured" for r in pred.breakdown(tiny_spec))
    assert pred.coverage(tiny_spec) == 1.0


def test_repeated_residual_layers_are_counted_L_minus_1_times():
    spec = load_zoo_arch("e3d_s").replace(frames=4, size=64)
    t, values = _full_table(spec, 4, 64)
    base = LatencyPredictor(t, missing="error").predict_ms(spec)
    b = spec.blocks[2]  # L = 6: one first layer, five repeats
    keys = layer_keys(spec, 4, 64)
    rep_key = [k for k in keys if k.cin == b.out_channels and k.btn == b.btn and k.stride == 1][0]
    assert keys.count(rep_key) == b.L - 1
    t.add(rep_key, values[rep_key] + 1.0)
    bumped = LatencyPredictor(t, missing="error").predict_ms(spec)
    assert bumped - base == pytest.approx(CAL["scale"] * 1.0 * (b.L - 1))


def test_missing_unit_under_error_mode_names_it(tiny_spec):
    t, _ = _full_table(tiny_spec, 4, 32)
    wider = tiny_spec.replace(size=48)
    with pytest.raises(LatencyTableError, match=r"no entry for conv/3/8/0/1/3/2/4/48/48"):
        LatencyPredictor(t, missing="error").predict_ms(wider)


def _linear_law(key: LayerKey) -> float:
    pw, dw, el = unit_features(key)
    return 0.05 + 0.02 + 3e-9 * pw + 7e-9 * dw + 2e-9 * el


def test_interpolation_recovers_a_linear_cost_law():
    rng = random.Random(0)
    t = LatencyTable(environment=current_environment("torch", 1), calibration=dict(CAL))
    for _ in range(40):
        c = 8 * rng.randint(1, 20)
        k = LayerKey("res", c, 8 * rng.randint(c // 8, 24), 8 * rng.randint(1, 40), 3, 3,
                     rng.choice((1, 2)), 8, rng.choice((14, 28, 56)), 0)
        k = k._replace(w=k.h)
        t.add(k, _linear_law(k))
    pred = LatencyPredictor(t, missing="interpolate")
    unseen = LayerKey("res", 72, 96, 200, 3, 3, 1, 8, 28, 28)
    assert unseen not in t
    ms, how = pred.unit_ms(unseen)
    assert how == "interpolated"
    assert ms == pytest.approx(_linear_law(unseen) - CAL["call_overhead_ms"], rel=1e-6)
    # no conv entries at all: too few to interpolate from, and the error says what to do
    with pytest.raises(LatencyTableError, match="profile more units"):
        pred.unit_ms(LayerKey("conv", 3, 8, 0, 1, 3, 2, 8, 56, 56))


def test_calibration_recovers_offset_and_scale(tiny_spec):
    specs = []
    for i, b in enumerate(tiny_spec.blocks[1:-1], start=1):  # networks of different depth
        blocks = list(tiny_spec.blocks)
        blocks[i] = b.__class__(*b.key()[:6], L=b.L + 1 + i, btn=b.btn)
        specs.append(tiny_spec.with_blocks(blocks))
    t, _ = _full_table(tiny_spec, 4, 32, more=specs)
    pred = LatencyPredictor(t, missing="interpolate")
    raws = [pred.raw_sum_ms(s) for s in specs]
    assert len(set(round(r, 9) for r in raws)) == len(raws)
    measured = [CAL["call_overhead_ms"] + 1.25 * r for r in raws]
    cal = calibrate(t, specs, measured, frames=4, size=32)
    assert cal["offset_ms"] == pytest.approx(CAL["call_overhead_ms"], abs=1e-12)
    assert cal["scale"] == pytest.approx(1.25, rel=1e-9)
    # one outlier (a burst of load from another process) does not move the median ratio
    noisy = list(measured)
    noisy[0] *= 3
    assert calibrate(t, specs, noisy, frames=4, size=32)["scale"] == pytest.approx(1.25, rel=1e-9)
    assert cal["fit_mape_pct"] == pytest.approx(0.0, abs=1e-6)
    refit = LatencyPredictor(t)
    for s, m in zip(specs, measured):
        assert refit.predict_ms(s) == pytest.approx(m, rel=1e-9)


def test_measure_mode_profiles_missing_units_on_demand(tmp_path, tiny_spec):
    """Real measurements (torch eager, 1 thread): entries appear in the table and on disk."""
    spec = tiny_spec.replace(frames=2, size=16)
    t = LatencyTable.new("torch", 1, statistic="median")
    t.path = tmp_path / "t.json"
    pred = LatencyPredictor(t, missing="measure")
    ms = pred.predict_ms(spec)
    keys = set(layer_keys(spec))
    assert keys <= set(t.entries)
    assert all(t.ms(k) > 0 and t.entries[k]["runs"] >= 5 for k in keys)
    assert math.isfinite(ms) and ms > 0
    from e3d_zoo.latency.table import load_table

    assert set(load_table(t.path).entries) == set(t.entries)


def test_load_predictor_warns_on_a_foreign_table(tmp_path, tiny_spec):
    t, _ = _full_table(tiny_spec, 4, 32)
    t.environment = {**t.environment, "threads": 7}
    path = t.save(tmp_path / "foreign.json")
    with pytest.warns(LatencyTableWarning, match="threads: table has 7"):
        pred = load_predictor(path, threads=1)
    assert pred.predict_ms(tiny_spec) > 0
    with pytest.raises(LatencyTableError, match="threads"):
        load_predictor(path, strict=True, threads=1)
    t.environment = {**t.environment, "threads": 1, "runtime_version": "1.0-other"}
    with pytest.warns(LatencyTableWarning, match="runtime_version: table has '1.0-other'"):
        load_predictor(t.save(path))


def test_the_search_accepts_the_predictor(tmp_path, tiny_spec):
    from e3d_zoo.search.budgets import LatencyPredictor as SearchPredictorProtocol
    from e3d_zoo.search.budgets import load_predictor as search_load_predictor

    t, _ = _full_table(tiny_spec, 4, 32)
    pred = search_load_predictor(str(t.save(tmp_path / "t.json")))
    assert isinstance(pred, SearchPredictorProtocol)
    assert pred.predict_ms(tiny_spec) == LatencyPredictor(t).predict_ms(tiny_spec)


def test_predictor_sums_the_statistic_it_is_asked_for(tiny_spec):
    t, values = _full_table(tiny_spec, 4, 32)
    for k, v in values.items():  # CPU times: a fixed fraction of the wall-clock medians
        t.entries[k]["cpu_ms"] = v / 2
    t.calibration["by_statistic"] = {"cpu": {"call_overhead_ms": 0.025, "scale": 1.0, "offset_ms": 0.5}}
    keys = layer_keys(tiny_spec, 4, 32)
    cpu = LatencyPredictor(t, statistic="cpu", missing="error").predict_ms(tiny_spec)
    assert cpu == pytest.approx(0.5 + sum(values[k] / 2 - 0.025 for k in keys))
    del t.entries[keys[0]]["cpu_ms"]
    with pytest.raises(LatencyTableError, match="has no 'cpu_ms'"):
        LatencyPredictor(t, statistic="cpu", missing="error").predict_ms(tiny_spec)


def test_drift_reference_puts_sessions_on_one_time_base(tiny_spec):
    """Units measured while the machine ran twice as slow (reference 2x) count at nominal speed."""
    t, values = _full_table(tiny_spec, 4, 32)
    keys = list(values)
    for i, k in enumerate(keys):
        slow = i % 2 == 1
        t.entries[k]["ref"] = {"median_ms": 2.0 if slow else 1.0}
        if slow:
            t.entries[k]["ms"] = values[k] * 2.0
    pred = LatencyPredictor(t, missing="error")
    import statistics

    nominal = statistics.median(t.entries[k]["ref"]["median_ms"] for k in keys)
    assert pred.nominal_ref_ms == nominal
    for k in keys:  # every entry, slow or not, is its nominal-speed value scaled to the base
        assert pred._entry_ms(k) == pytest.approx(values[k] * nominal / 1.0)
    # a whole-network measurement taken while the reference ran at 3.0 is rescaled likewise
    assert pred.to_time_base(30.0, {"median_ms": 3.0}) == pytest.approx(10.0 * nominal)
    assert pred.to_time_base(30.0, None) == 30.0
