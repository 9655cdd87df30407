"""Profiling real units on the backends that run here (OpenVINO, ONNX Runtime, torch eager)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e3d_zoo.errors import BackendError
from e3d_zoo.latency import profile
from e3d_zoo.latency.table import LatencyTable, LayerKey, layer_keys, load_table
from e3d_zoo.model import E3D
from e3d_zoo.runtime.base import available_backends


def test_units_are_the_networks_own_modules(tiny_spec):
    """A unit module maps the network's input of that layer to its output shape."""
    net = E3D(tiny_spec, num_classes=10).eval()
    x = torch.zeros(1, 3, tiny_spec.frames, tiny_spec.size, tiny_spec.size)
    keys = layer_keys(tiny_spec, num_classes=10)
    feats = x
    i = 0
    with torch.no_grad():
        for block in net.blocks:
            layers = list(block) if isinstance(block, torch.nn.Sequential) else [block]
            for layer in layers:
                unit = profile.layer_module(keys[i])
                assert type(unit) is type(layer)
                assert unit(feats).shape == layer(feats).shape
                feats = layer(feats)
                i += 1
        head = profile.layer_module(keys[-1])
        assert head(feats).shape == (1, 10)
    assert i == len(keys) - 1


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime", "torch"])
def test_profile_keys_measures_and_resumes(tmp_path, backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} not installed")
    keys = [LayerKey("res", 8, 8, 16, 3, 3, 1, 2, 8, 8), LayerKey("conv", 3, 8, 0, 1, 3, 2, 2, 16, 16)]
    path = tmp_path / "t.json"
    t = LatencyTable.new(backend, 1, statistic="median")
    with profile.Loader(backend, 1) as loader:
        added = profile.profile_keys(t, keys, loader, path=path, rounds=2, runs_per_round=3,
                                     progress=False)
        assert added == 2
        saved = load_table(path)
        assert saved.environment["backend"] == backend
        for k in keys:
            e = saved.entries[k]
            assert 0 < e["min_ms"] <= e["ms"] <= e["p90_ms"] and e["runs"] == 6
            assert e["spread"] >= 1.0 and e["cpu_ms"] > 0
        assert saved.calibration["call_overhead_ms"] > 0
        # a rerun measures nothing new: profiling resumes where a table stops
        assert profile.profile_keys(saved, keys, loader, path=path, progress=False) == 0


def test_openvino_end_to_end_measurement_runs_the_exported_network(tiny_spec):
    spec = tiny_spec.replace(frames=2, size=16)
    with profile.Loader("openvino", 1) as loader:
        backend = loader.load_spec(spec, 2, 16, num_classes=5)
        assert backend.run(np.zeros((1, 3, 2, 16, 16), np.float32)).shape == (1, 5)
        (m,) = profile.measure_specs([spec], loader, frames=2, size=16, num_classes=5, rounds=2,
                                     runs_per_round=2, progress=False)
    assert m["runs"] == 4 and m["ms"] > 0


def test_summary_statistics():
    s = profile.summarize([5.0, 1.0, 2.0, 3.0, 4.0])
    assert s["ms"] == s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["runs"] == 5
    assert s["spread"] == pytest.approx(s["p90_ms"] / 3.0)
    assert profile.summarize([5.0, 1.0, 2.0], "min")["ms"] == 1.0
    cpu = profile.summarize([9.0, 8.0, 30.0], "cpu", cpu_ms=[2.0, 2.5, 2.1])
    assert cpu["ms"] == cpu["cpu_ms"] == 2.1 and cpu["median_ms"] == 9.0


def test_cpu_time_statistic_needs_one_thread():
    from e3d_zoo.errors import LatencyTableError

    t = LatencyTable.new("torch", 2, statistic="cpu")
    with profile.Loader("torch", 2) as loader, pytest.raises(LatencyTableError, match="1 thread"):
        profile.profile_keys(t, [LayerKey("conv", 3, 8, 0, 1, 3, 2, 2, 16, 16)], loader, progress=False)


def test_unsupported_backend_is_a_clear_error():
    with pytest.raises(BackendError, match="tensorrt"):
        profile.Loader("tensorrt", 1)
    with pytest.raises(BackendError, match="unknown backend"):
        profile.Loader("coreml", 1)


def test_sampled_architectures_are_valid_and_distinct():
    from e3d_zoo import complexity

    specs = profile.sample_architectures(6, frames=4, size=64, seed=3, max_flops=4e9)
    assert len({s.key() for s in specs}) == 6
    for s in specs:
        assert complexity.tinynas_flops(s.replace(frames=13, size=160), 13, 160) <= 4e9
    again = profile.sample_architectures(6, frames=4, size=64, seed=3, max_flops=4e9)
    assert [s.key() for s in again] == [s.key() for s in specs]


def test_shuffled_rounds_visit_every_unit_in_a_new_order_and_keep_result_order():
    """On the real torch backend, with modules that log when they run."""
    import random

    from e3d_zoo.runtime.base import load_backend

    log: list = []

    class Tagged(torch.nn.Module):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def forward(self, x):
            log.append(self.tag)
            return x * self.tag

    units = [(load_backend("torch", Tagged(i), threads=1), np.ones((1, 2), np.float32))
             for i in range(4)]
    times = profile.interleaved_times(units, rounds=6, runs_per_round=2, warmup=1,
                                      shuffle=random.Random(0))
    assert [len(t) for t in times] == [12] * 4
    timed = log[4:]  # after one warm-up run each, in unit order
    rounds = [timed[i:i + 8] for i in range(0, 48, 8)]
    orders = [tuple(r[::2]) for r in rounds]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)  # every unit once per round
    assert all(r[0::2] == r[1::2] for r in rounds)  # its runs of a round back to back
    assert len(set(orders)) > 1  # and not the same order every round
