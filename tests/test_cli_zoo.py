"""The e3d-zoo CLI, run as a real subprocess (entry point installed by pip)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from e3d_zoo.cli.zoo import main


def _exe():
    exe = shutil.which("e3d-zoo")
    return [exe] if exe else [sys.executable, "-m", "e3d_zoo.cli.zoo"]


def run(*args):
    return subprocess.run([*_exe(), *args], capture_output=True, text=True, timeout=120)


def test_info_json_matches_reference_check_values(e3d_s_checks):
    p = run("info", "e3d_s", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    for key in ("name", "params", "params_backbone", "macs", "tinynas_flops", "layers", "stentr", "frames", "size"):
        assert key in info
    assert info["params"] == e3d_s_checks["params_with_head_hidden2048_400_classes"]
    assert info["params_backbone"] == e3d_s_checks["params_backbone_without_head"]
    assert info["macs"] == e3d_s_checks["conv_linear_macs_T13_R160_400_classes"]
    assert info["tinynas_flops"] == e3d_s_checks["tinynas_flops_T13_R160"]
    assert info["layers"] == e3d_s_checks["layers"]
    assert round(info["stentr"], 6) == e3d_s_checks["stentr_score_T13_R160"]
    assert (info["frames"], info["size"]) == (13, 160)


def test_info_with_other_clip_shape(capsys):
    assert main(["info", "e3d_s", "--frames", "8", "--size", "128", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["frames"], info["size"]) == (8, 128)
    assert info["macs"] < 1865547776


def test_list_prints_the_zoo_table(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("e3d_s", "e3d_m", "e3d_l"):
        assert name in out
    assert "202.855915" in out


def test_score_check_values_of_the_reference(capsys):
    assert main(["score", "e3d_s"]) == 0 and capsys.readouterr().out.strip() == "202.855915"
    assert main(["score", "e3d_s", "--frames", "8"]) == 0 and capsys.readouterr().out.strip() == "206.480219"


def test_score_and_ablation(capsys, tiny_arch_file):
    assert main(["score", str(tiny_arch_file), "--frames", "5", "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["score", str(tiny_arch_file), "--frames", "5", "--no-refine", "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["value"] != b["value"] and a["score"] == "stentr" and b["score"] == "entropy"


def test_score_stage_weights_weigh_the_printed_stage_scores(capsys):
    from e3d_zoo import stentr
    from e3d_zoo.zoo import spec_for

    w = [0.1, 0.2, 0.3, 0.4, 1.0]
    assert main(["score", "e3d_s", "--stage-weights", ",".join(map(str, w)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage_weights"] == w
    assert out["value"] == stentr.weighted_sum(out["stage_scores"], w)
    assert out["value"] == stentr.stentr_score(spec_for("e3d_s"), stage_weights=w)
    assert main(["score", "e3d_s", "--stage-weights", "1,1"]) == 2
    assert ("--stage-weights: expected 5 weights (one per stage of e3d_s), found 2"
            in capsys.readouterr().err)


def test_undefined_score_is_one_line_error_and_info_says_why(capsys, tiny_arch_file):
    # at its own T = 4 the tiny net's (3, 3, 3) kernels are parallel to (T, r, r) = (4, 4, 4)
    assert main(["score", str(tiny_arch_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "blocks[2]" in err and "undefined" in err
    assert main(["info", str(tiny_arch_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["stentr"] is None and "parallel" in info["stentr_undefined"]
    assert main(["info", str(tiny_arch_file)]) == 0
    assert "undefined" in capsys.readouterr().out


def test_convert_tinynas_round_trip_gives_reference_params(tmp_path, capsys):
    txt = tmp_path / "best_structure.txt"
    assert main(["convert", "e3d_s", str(txt)]) == 0
    text = txt.read_text()
    assert "'space_arch': 'Cnn3DNet'" in text and text.count("'inner_class': 'Res3DK1DWK1'") == 5
    out = tmp_path / "back.json"
    assert main(["convert", str(txt), str(out), "--frames", "13", "--size", "160"]) == 0
    capsys.readouterr()
    import e3d_zoo

    model = e3d_zoo.create_model(str(out), num_classes=400)
    assert sum(p.numel() for p in model.parameters()) == 3846456
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stentr"] == pytest.approx(202.855915, abs=5e-7)


@pytest.mark.parametrize("args, message", [
    (["info", "e3d_xl"], "unknown model 'e3d_xl'"),
    (["info", "/nonexistent.json"], "no such architecture file"),
    (["score", "e3d_s", "--stage-weights", "a,b"], "--stage-weights"),
])
def test_bad_input_exits_nonzero_without_traceback(args, message):
    p = run(*args)
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr


def test_broken_arch_file_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"frames": 4, "size": 32, "blocks": [
        {"class": "Conv3DKXBNRELU", "in": 3, "out": 8, "s": 2, "kt": 1, "k": 3},
        {"class": "Conv3DKXBNRELU", "in": 9, "out": 8, "s": 1, "kt": 1, "k": 3}]}))
    p = run("info", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{bad}: blocks[1].in: channel mismatch: expected 8 (blocks[0].out), found 9" in p.stderr
