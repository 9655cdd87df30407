"""The ``kernel`` statistic: OpenVINO's per-layer times summed without layout conversions,
measured for real on tiny units and networks, and the predictor arithmetic it feeds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from e3d_export import export_onnx
from e3d_zoo.cli.bench import main as bench_main
from e3d_zoo.errors import BackendError, LatencyTableError
from e3d_zoo.latency.predictor import LatencyPredictor, load_predictor
from e3d_zoo.latency.profile import (NETWORK_FIELD, Loader, _uncalibrated, layer_module,
                                     summarize)
from e3d_zoo.latency.table import LayerKey, layer_keys, load_table
from e3d_zoo.runtime import load_backend
from e3d_zoo.runtime.base import available_backends
from e3d_zoo.runtime.openvino_backend import LAYOUT_NODE_TYPES
from e3d_zoo.zoo import ZOO_MODELS, spec_for

needs_openvino = pytest.mark.skipif("openvino" not in available_backends(),
                                    reason="OpenVINO is not installed")
UNIT = LayerKey("res", 8, 16, 24, 3, 3, 2, 2, 16, 16)


@needs_openvino
def test_openvino_reports_layer_times_and_their_kernel_sum(tmp_path):
    path = export_onnx(layer_module(UNIT), tmp_path / "unit.onnx", frames=UNIT.t, size=UNIT.h,
                       dynamic_batch=False)
    be = load_backend("openvino", path, threads=1, profile=True)
    be.run(np.zeros((1, UNIT.cin, UNIT.t, UNIT.h, UNIT.w), np.float32))
    layers = be.layer_times()
    types = {t["node_type"] for t in layers}
    # an isolated unit converts its input and output layouts; the kernel sum leaves that out
    assert "Reorder" in types and {"Convolution", "GroupConvolution"} <= types
    total = sum(t["ms"] for t in layers)
    reorders = sum(t["ms"] for t in layers if t["node_type"] in LAYOUT_NODE_TYPES)
    assert be.kernel_ms() == pytest.approx(total - reorders)
    assert 0 < be.kernel_ms() <= total
    assert be.describe()["profile"] is True
    plain = load_backend("openvino", path, threads=1)
    with pytest.raises(BackendError, match="profile=True"):
        plain.kernel_ms()


def test_summarize_kernel_statistic():
    s = summarize([2.0, 3.0, 4.0], "kernel", cpu_ms=[2.0, 3.0, 4.0], kernel_ms=[1.0, 1.5, 5.0])
    assert s["ms"] == s["kernel_ms"] == 1.5 and s["median_ms"] == 3.0
    with pytest.raises(LatencyTableError, match="no per-layer times"):
        summarize([2.0, 3.0], "kernel")
    # kernel sums predict a whole network's wall clock, and hold no call overhead
    assert NETWORK_FIELD["kernel"] == "median_ms"
    cal = _uncalibrated("kernel", {"median_ms": 0.3, "min_ms": 0.2, "cpu_ms": 0.3})
    assert cal["call_overhead_ms"] == 0.0 and cal["offset_ms"] == cal["call_ms"] == 0.3
    assert _uncalibrated("min", {"median_ms": 0.3, "min_ms": 0.2})["call_overhead_ms"] == 0.2


def test_kernel_statistic_needs_a_backend_with_layer_counters():
    with pytest.raises(BackendError, match="openvino"):
        Loader("torch", 1, kernel=True)


def test_predictor_sums_kernel_entries_without_subtracting_a_call(tiny_spec):
    from e3d_zoo.latency.table import LatencyTable

    env = {"backend": "openvino", "runtime_version": "x", "threads": 1, "cpu": "c",
           "machine": "m", "precision": "f32"}
    overhead = {"median_ms": 0.3, "min_ms": 0.2, "cpu_ms": 0.3}
    by = {st: _uncalibrated(st, overhead) for st in ("kernel", "median")}
    t = LatencyTable(environment=env, settings={"statistic": "kernel", "clip": [4, 32]},
                     calibration={**by["kernel"], "by_statistic": by})
    keys = layer_keys(tiny_spec, 4, 32, 10)
    for i, k in enumerate(dict.fromkeys(keys)):
        t.add(k, 0.1 * (i + 1), kernel_ms=0.1 * (i + 1), median_ms=0.1 * (i + 1) + 0.4)
    kernel = LatencyPredictor(t, missing="error", num_classes=10)
    raw = sum(t.entries[k]["ms"] for k in keys)
    # kernel sums: nothing subtracted per unit, the network's one call (wall clock) added
    assert kernel.raw_sum_ms(tiny_spec, 4, 32) == pytest.approx(raw)
    assert kernel.predict_ms(tiny_spec, 4, 32) == pytest.approx(0.3 + raw)
    # the wall-clock entries of the same table: each unit's call cost comes off
    median = LatencyPredictor(t, missing="error", num_classes=10, statistic="median")
    wall = sum(t.entries[k]["median_ms"] - 0.3 for k in keys)
    assert median.predict_ms(tiny_spec, 4, 32) == pytest.approx(0.3 + wall)
    # drift diagnostic: a network (wall clock) is rescaled by the reference's wall-clock ratio
    for e in t.entries.values():
        e["ref"] = {"kernel_ms": 1.0, "median_ms": 2.0}
    rescaled = LatencyPredictor(t, missing="error").to_time_base(10.0, {"kernel_ms": 1.0,
                                                                        "median_ms": 2.5})
    assert rescaled == pytest.approx(10.0 * 2.0 / 2.5)
    # a table timed without counters cannot predict from kernel sums
    t.settings["statistic"] = "median"
    with pytest.raises(LatencyTableError, match="per-layer counters"):
        LatencyPredictor(t, statistic="kernel")


@needs_openvino
def test_kernel_table_profile_calibrate_validate(tiny_arch_file, tmp_path, capsys):
    """A real kernel table on OpenVINO: entries hold kernel sums, the calibration matches
    them to wall-clock networks, and the validation runs on it (both protocols)."""
    path = tmp_path / "ov.json"
    rc = bench_main(["--profile-table", str(path), "--frames", "2", "--size", "96", "--arch",
                     str(tiny_arch_file), "--sample", "2", "--calibrate", "2", "--rounds", "2",
                     "--json"])
    assert rc == 0
    capsys.readouterr()
    table = load_table(path)
    assert table.settings["statistic"] == "kernel"  # the default on OpenVINO
    for e in table.entries.values():
        assert e["ms"] == e["kernel_ms"] > 0 and e["median_ms"] > 0
        assert "kernel_ms" in e["ref"]
    cal = table.calibration["by_statistic"]["kernel"]
    assert cal["call_overhead_ms"] == 0.0 and cal["offset_ms"] > 0 and cal["scale"] > 0
    assert cal["fitted_on"] == 2 and {"median", "min", "cpu"} <= set(table.calibration["by_statistic"])
    pred = load_predictor(path)
    assert (pred.offset_ms, pred.scale, pred.call_overhead_ms) == (
        cal["offset_ms"], cal["scale"], 0.0)
    # the kernel fit matched the unit sums to the networks' wall-clock medians
    measured = table.calibration["measured"]
    cal_specs = [spec_for(n).replace(frames=2, size=96) for n in ZOO_MODELS][:2]
    assert [m["name"] for m in measured] == [s.name for s in cal_specs]
    assert cal["call_ms"] == cal["offset_ms"] == table.calibration["by_statistic"]["median"]["call_ms"]
    ratios = [(m["median_ms"] - cal["offset_ms"]) / pred.raw_sum_ms(s)
              for s, m in zip(cal_specs, measured)]
    assert cal["scale"] == pytest.approx(float(np.median(ratios)))
    rc = bench_main(["--validate-predictor", "--table", str(path), "--n", "2", "--seed", "3",
                     "--rounds", "2", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["statistic"] == "kernel" and res["mean_coverage"] == 1.0
    for r in res["rows"]:
        assert r["error_pct"] == pytest.approx(100 * (r["predicted_ms"] - r["measured_ms"])
                                               / r["measured_ms"])
    assert "by_median" in res and "by_cpu" in res
    before = path.read_bytes()
    rc = bench_main(["--validate-predictor", "--table", str(path), "--n", "2", "--seed", "3",
                     "--rounds", "2", "--same-session", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["protocol"] == "same-session" and res["statistic"] == "kernel"
    assert path.read_bytes() == before


@needs_openvino
def test_measure_mode_on_a_kernel_table_profiles_with_counters(tmp_path):
    from e3d_zoo.latency.profile import profile_keys
    from e3d_zoo.latency.table import LatencyTable

    table = LatencyTable.new("openvino", 1, statistic="kernel")
    with Loader("openvino", 1, kernel=True) as loader:
        profile_keys(table, [UNIT], loader, path=tmp_path / "k.json", rounds=1, progress=False)
    table.path = tmp_path / "k.json"
    other = UNIT._replace(cout=8, stride=1)
    pred = LatencyPredictor(table, missing="measure")  # builds its own loader
    ms, how = pred.unit_ms(other)
    entry = table.entries[other]
    assert how == "measured" and entry["ms"] == entry["kernel_ms"] > 0
    assert ms == pytest.approx(pred._entry_ms(other)) and ms > 0  # drift-reference rescaled
    assert load_table(tmp_path / "k.json").entries[other]["kernel_ms"] == entry["kernel_ms"]
    pred.loader.close()
