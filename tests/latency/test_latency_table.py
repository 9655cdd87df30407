"""Latency tables: keys, JSON round trips, corrupt files and environment mismatches."""
from __future__ import annotations

import json
import warnings

import pytest

from e3d_zoo import complexity
from e3d_zoo.errors import LatencyTableError
from e3d_zoo.latency.table import (LatencyTable, LatencyTableWarning, LayerKey, current_environment,
                                   layer_keys, load_table)
from e3d_zoo.zoo import load_zoo_arch


def test_layer_key_text_round_trip():
    key = LayerKey("res", 24, 48, 96, 3, 3, 2, 8, 56, 56)
    assert str(key) == "res/24/48/96/3/3/2/8/56/56"
    assert LayerKey.parse(str(key)) == key
    for bad in ("res/1/2", "pool/1/2/3/4/5/6/7/8/9", "res/a/2/3/4/5/6/7/8/9", "res/-1/2/3/4/5/6/7/8/9"):
        with pytest.raises(ValueError):
            LayerKey.parse(bad)


def test_layer_keys_follow_the_networks_conv_layers(tiny_spec):
    """One unit per plain block / residual layer, at complexity.conv_layers' sizes."""
    for spec, T, R in ((tiny_spec, 4, 32), (load_zoo_arch("e3d_s"), 13, 160), (tiny_spec, 3, 37)):
        keys = layer_keys(spec, T, R, num_classes=10)
        convs = list(complexity.conv_layers(spec, T, R))
        firsts = [c for c in convs if c.role in ("conv", "pw1")]
        units = keys[:-1]
        assert len(units) == len(firsts) == sum(b.L for b in spec.blocks)
        dws = iter(c for c in convs if c.role in ("conv", "dw"))
        for key, first in zip(units, firsts):
            dw = next(dws)
            assert (key.cin, key.t, key.h, key.w) == (first.cin, T, first.h_in, first.w_in)
            assert (key.kt, key.k, key.stride) == (dw.kt, dw.k, dw.stride)
            assert key.out_hw == (dw.h_out, dw.w_out)
        head = keys[-1]
        assert head.kind == "head" and head.cin == spec.num_features and head.cout == 10
        assert (head.h, head.w) == (convs[-1].h_out, convs[-1].w_out)


def _table(env=None) -> LatencyTable:
    t = LatencyTable(environment=env or current_environment("torch", 1),
                     settings={"statistic": "median", "clip": [4, 32]},
                     calibration={"call_overhead_ms": 0.05, "scale": 1.1, "offset_ms": 0.2})
    t.add(LayerKey("res", 8, 8, 16, 3, 3, 1, 4, 8, 8), 0.31, p90_ms=0.4, runs=15)
    t.add(LayerKey("conv", 3, 8, 0, 1, 3, 2, 4, 32, 32), 0.12)
    t.add(LayerKey("head", 8, 10, 16, 1, 1, 1, 4, 2, 2), 0.07)
    return t


def test_table_json_round_trip_is_stable(tmp_path):
    t = _table()
    path = t.save(tmp_path / "t.json")
    loaded = load_table(path)
    assert loaded.entries == t.entries
    assert loaded.environment == t.environment
    assert loaded.calibration == t.calibration
    assert loaded.settings == t.settings
    assert loaded.to_json() == path.read_text()  # load -> save gives the same bytes
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temp file left behind


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.update(schema="something-else"), ".schema"),
    (lambda d: d.update(schema_version=99), ".schema_version"),
    (lambda d: d["environment"].pop("backend"), ".environment.backend"),
    (lambda d: d["environment"].update(threads=0), ".environment.threads"),
    (lambda d: d["calibration"].update(scale=-1), ".calibration.scale"),
    (lambda d: d["calibration"].update(offset_ms="x"), ".calibration.offset_ms"),
    (lambda d: d.update(entries=[]), ".entries"),
    (lambda d: d["entries"].update({"res/1/2": {"ms": 1.0}}), "entries['res/1/2']"),
    (lambda d: d["entries"].update({"conv/3/8/0/1/3/2/4/32/32": {"ms": -1}}),
     "entries['conv/3/8/0/1/3/2/4/32/32'].ms"),
    (lambda d: d["entries"].update({"conv/3/8/0/1/3/2/4/32/32": {"p90_ms": 1}}), ".ms"),
])
def test_bad_tables_name_the_field(tmp_path, mutate, where):
    d = _table().to_dict()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(LatencyTableError) as exc:
        load_table(path)
    assert str(path) in str(exc.value) and where in str(exc.value)


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '{"schema": "e3d-latency-table"'])
def test_corrupt_table_is_a_clear_error(tmp_path, text):
    path = tmp_path / "corrupt.json"
    path.write_text(text)
    with pytest.raises(LatencyTableError, match="corrupt latency table|expected a JSON object"):
        load_table(path)


def test_missing_table_file(tmp_path):
    with pytest.raises(LatencyTableError, match="no such latency table"):
        load_table(tmp_path / "nope.json")


def test_table_from_another_device_warns_or_fails_under_strict(tmp_path):
    env = {**current_environment("torch", 1), "cpu": "Some Other CPU", "runtime_version": "0.0.1"}
    path = _table(env).save(tmp_path / "other.json")
    t = load_table(path)
    with pytest.warns(LatencyTableWarning) as rec:
        bad = t.check_environment()
    msg = str(rec[0].message)
    assert "cpu" in msg and "Some Other CPU" in msg and "runtime_version" in msg and "0.0.1" in msg
    assert len(bad) == 2
    with pytest.raises(LatencyTableError, match="Some Other CPU"):
        t.check_environment(strict=True)


def test_table_from_this_machine_is_silent(tmp_path):
    t = load_table(_table().save(tmp_path / "here.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert t.check_environment() == []
