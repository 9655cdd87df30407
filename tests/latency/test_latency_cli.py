"""e3d-bench end to end: benchmark, profile, validate, and the latency-budget search it feeds."""
from __future__ import annotations

import json

import pytest

from e3d_zoo.cli.bench import main as bench_main
from e3d_zoo.cli.search import main as search_main
from e3d_zoo.latency.predictor import load_predictor
from e3d_zoo.runtime.base import available_backends
from e3d_zoo.spec import load_arch


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_benchmark_every_backend_that_runs_here(tiny_arch_file, capsys):
    backends = [b for b in ("torch", "onnxruntime", "openvino") if b in available_backends()]
    rc = bench_main([str(tiny_arch_file), "--backends", ",".join(backends), "--frames", "2",
                     "--size", "32", "--rounds", "2", "--runs", "2", "--batch", "1,2", "--peaks", "quick",
                     "--json"])
    assert rc == 0
    res = _json(capsys)
    cpu = res["machine"]["cpu"]
    assert cpu["cores"] >= 1 and "flags" in cpu and res["machine"]["peaks"]["peak"]["fp32"]["gflops"] > 0
    assert res["verdict"].startswith("verdict (") and "x fp32 roofline" in res["verdict"]
    assert list(res["backends"]) == backends
    for b in backends:
        e = res["backends"][b]
        assert 0 < e["median_ms"] <= e["p90_ms"] <= e["p99_ms"]
        assert e["clips_per_s"] == pytest.approx(1000.0 / e["median_ms"])
        assert e["batches"]["2"]["clips_per_s"] == pytest.approx(2000.0 / e["batches"]["2"]["median_ms"])
        assert e["runs"] == 4 and e["spread_p90_p50"] >= 1.0
        assert e["peak_rss_mb"] is None or e["peak_rss_mb"] > 0
        assert e["describe"]["backend"] == b
        assert e["x_roofline"] > 1.0 and e["batches"]["2"]["x_roofline"] > 0  # tiny nets are far from the peak


def test_unsupported_backend_fails_fast_naming_what_is_missing(tiny_arch_file, capsys):
    assert bench_main([str(tiny_arch_file), "--backends", "torch,tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "tensorrt" in err and "not usable" in err and "Traceback" not in err


def test_corrupt_table_is_a_clear_cli_error(tmp_path, capsys):
    bad = tmp_path / "t.json"
    bad.write_text('{"schema": "e3d-latency-table", "entries": {')
    assert bench_main(["--validate-predictor", "--table", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "corrupt latency table" in err and str(bad) in err and "Traceback" not in err


def test_one_mode_at_a_time(capsys):
    assert bench_main([]) == 2
    assert "exactly one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def torch_table(tmp_path_factory):
    """A real table (torch eager, 1 thread) at a small clip: the search skeleton fits 96^2."""
    path = tmp_path_factory.mktemp("lat") / "torch.json"
    rc = bench_main(["--profile-table", str(path), "--backend", "torch", "--frames", "2", "--size",
                     "96", "--sample", "3", "--calibrate", "2", "--rounds", "2", "--json"])
    assert rc == 0
    return path


def test_profile_then_validate(torch_table, tmp_path, capsys):
    capsys.readouterr()
    plot = tmp_path / "pv.png"
    rc = bench_main(["--validate-predictor", "--table", str(torch_table), "--n", "3", "--seed", "5",
                     "--rounds", "2", "--plot", str(plot), "--json"])
    assert rc == 0
    res = _json(capsys)
    assert res["n"] == 3 and (res["frames"], res["size"]) == (2, 96)
    assert res["mean_coverage"] == 1.0  # the default measures the sampled archs' units first
    errs = [abs(r["error_pct"]) for r in res["rows"]]
    assert res["mape_pct"] == pytest.approx(sum(errs) / 3)
    assert res["within_10pct"] == pytest.approx(sum(e <= 10 for e in errs) / 3)
    assert "by_min" in res and len(res["by_min"]["measured_ms"]) == 3
    assert plot.stat().st_size > 0


def test_latency_budget_search_end_to_end(torch_table, tmp_path, capsys):
    """A torch-eager table: the finalists are measured on torch eager, the table's backend."""
    pred = load_predictor(torch_table)
    from e3d_zoo.search.space import default_space

    seed_ms = pred.predict_ms(default_space().seed_spec(2, 96))
    budget = 1.2 * seed_ms
    out = tmp_path / "found.json"
    capsys.readouterr()
    rc = search_main(["--frames", "2", "--size", "96", "--budget-latency-ms", f"{budget:.4f}",
                      "--latency-table", str(torch_table), "--candidates", "200", "--population",
                      "8", "--finalists", "2", "--measure-rounds", "2", "--accept-nearest",
                      "--out", str(out), "--no-plots", "--json", "--no-progress"])
    assert rc == 0
    res = _json(capsys)
    assert res["budgets"] == {"latency_ms": pytest.approx(budget, rel=1e-4)}
    found = load_arch(out)
    assert pred.predict_ms(found) <= budget
    lat = found.provenance["latency"]
    assert lat["session"]["environment"]["backend"] == "torch"
    assert lat["chosen"]["fits"] == (lat["chosen"]["measured_ms"] <= budget) == res["fits"]


def test_same_session_validation_leaves_the_table_alone(torch_table, capsys):
    before = torch_table.read_bytes()
    capsys.readouterr()
    rc = bench_main(["--validate-predictor", "--table", str(torch_table), "--n", "2", "--seed", "7",
                     "--same-session", "--rounds", "2", "--json"])
    assert rc == 0
    res = _json(capsys)
    assert res["protocol"] == "same-session" and res["n"] == 2 and res["statistic"] == "cpu"
    errs = [abs(r["error_pct"]) for r in res["rows"]]
    assert res["mape_pct"] == pytest.approx(sum(errs) / 2)
    assert res["calibration_scale"] > 0 and "by_median" in res
    assert torch_table.read_bytes() == before


_HOLD_LOCK = """
import sys
from e3d_runtime.atomic import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_profile_table_itself_refuses_a_table_another_run_profiles(tmp_path):
    # the lock is profile_table's, not the CLI's: eval/ scripts call it directly
    import subprocess
    import sys

    from e3d_zoo.errors import OutputInUseError
    from e3d_zoo.latency.build import profile_table

    path = tmp_path / "t.json"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputInUseError, match=f"t.json: in use by pid {holder.pid}"):
            profile_table(path, frames=2, size=32, zoo=True, progress=False)
    finally:
        holder.communicate("\n", timeout=60)
    assert not path.exists()
