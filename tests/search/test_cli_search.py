"""e3d-search: --json summary, outputs, exit codes."""
from __future__ import annotations

import json

import pytest

from e3d_zoo.cli.search import main
from e3d_zoo.spec import load_arch

KEYS = {"best_score", "tinynas_flops", "macs", "params", "layers", "candidates", "seconds",
        "candidates_per_s", "out"}


def test_cli_json_summary_and_outputs(tmp_path, capsys):
    out = tmp_path / "my_s.json"
    rc = main(["--frames", "13", "--size", "160", "--budget-flops", "2e9", "--budget-layers", "83",
               "--candidates", "3000", "--population", "32", "--seed", "2", "--out", str(out),
               "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert KEYS <= set(summary)
    assert summary["candidates"] == 3000 and summary["out"] == str(out)
    assert summary["tinynas_flops"] <= 2e9 and summary["layers"] <= 83
    spec = load_arch(out)
    assert spec.provenance["score"] == summary["best_score"]
    assert (tmp_path / "my_s_progress.png").is_file()
    assert (tmp_path / "my_s_population.png").is_file()
    assert (tmp_path / "my_s.search-ckpt.json").is_file()


def test_cli_seed_arch_by_zoo_name_and_mutations(tmp_path, capsys):
    out = tmp_path / "from_s.json"
    rc = main(["--budget-flops", "2e9", "--budget-layers", "83", "--seed-arch", "e3d_s",
               "--mutations", "1", "--candidates", "500", "--out", str(out), "--no-plots", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    from e3d_zoo import stentr
    from e3d_zoo.zoo import load_zoo_arch

    # never worse than its starting point (E3D-S itself: 202.8559146...)
    assert summary["best_score"] >= stentr.stentr_score(load_zoo_arch("e3d_s"))


@pytest.mark.parametrize("argv, needle", [
    (["--budget-flops", "1e3"], "no architecture in the search space can meet"),
    (["--budget-flops", "2e9", "--score", "nope"], "unknown score 'nope'"),
    (["--budget-flops", "2e9", "--budget-latency-ms", "5"], "needs --latency-table"),
    (["--budget-flops", "2e9", "--stage-weights", "1,1"], "expected 5 weights"),
    (["--candidates", "10"], "no budget given"),
    (["--budget-flops", "2e9", "--max-channels", "4"], "--max-channels: search space: max_channels"),
    (["--budget-flops", "2e9", "--kernel-choices", "3y3"], "--kernel-choices: cannot parse"),
    (["--budget-flops", "2e9", "--kernel-choices", "3x3"], "seed architecture breaks"),
])
def test_cli_bad_input_exits_2_without_traceback(tmp_path, capsys, argv, needle):
    rc = main(argv + ["--out", str(tmp_path / "x.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_cli_latency_table_routes_to_the_latency_predictor(tmp_path, capsys):
    table = tmp_path / "table.json"
    table.write_text("{}")
    rc = main(["--budget-latency-ms", "5", "--latency-table", str(table), "--out",
               str(tmp_path / "x.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    import importlib.util

    if importlib.util.find_spec("e3d_zoo.latency.predictor") is None:
        assert "latency tables arrive with e3d-bench" in err


def test_cli_malformed_space_file(tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text('{"channel_scales": "big"}')
    rc = main(["--budget-flops", "2e9", "--space", str(space), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "space.json" in err and "channel_scales" in err


def test_cli_space_flags_override_the_space(tmp_path, capsys):
    out = tmp_path / "narrow.json"
    rc = main(["--budget-flops", "2e9", "--budget-layers", "83", "--kernel-choices", "1x5,3x3,1x3",
               "--channel-scales", "1.25,0.8", "--bottleneck-ratios", "2,3", "--layer-deltas", "1",
               "--candidates", "800", "--population", "16", "--out", str(out), "--no-plots", "--json"])
    assert rc == 0, capsys.readouterr().err
    spec = load_arch(out)
    space = spec.provenance["space"]
    assert space["channel_scales"] == [1.25, 0.8] and space["layer_deltas"] == [1]
    assert space["bottleneck_ratios"] == [2.0, 3.0]


def test_cli_score_size(tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["--frames", "16", "--size", "224", "--score-size", "160", "--budget-flops", "5e9",
               "--budget-layers", "83", "--candidates", "1000", "--population", "16", "--out", str(out),
               "--no-plots", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["score_size"] == 160 and summary["score_frames"] == 16
    spec = load_arch(out)
    from e3d_zoo import stentr

    assert summary["best_score"] == stentr.stentr_score(spec, 16, 160)
    with pytest.raises(SystemExit) as exit_info:  # refused where it is parsed
        main(["--score-size", "0", "--budget-flops", "2e9", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "--score-size: expected an integer in [1, 8192], found 0" in capsys.readouterr().err
