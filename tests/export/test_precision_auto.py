"""``--precision auto``: candidates built per CPU, judged on held-out clips, timed, chosen;
the folder's default artifact is what the pipeline and e3d-infer run."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from e3d_export import export
from e3d_export.precision import MIN_GAIN, _choose, load_held_out
from e3d_runtime.criteria import SELECTION_MIN_CLIPS, compare, selection_criteria
from e3d_runtime.machine import has_native_bf16
from e3d_runtime.manifest import artifact_entry_for
from e3d_zoo.errors import ConfigError, ExportError
from tiny_arch import tiny_model

AVX2_ONLY = ["sse4_2", "fma", "avx2"]
ZEN4 = ["sse4_2", "fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"]


def _held_out(n=SELECTION_MIN_CLIPS, seed=5):
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def auto_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "tiny"
    manifest = export(tiny_model(), out, precision="auto", held_out=_held_out(),
                      held_out_source="random clips (test)", calibration_clips=_held_out(8, seed=6),
                      n_clips=2, threads=1, selection_runs=3, cpu_flags=ZEN4)
    return out, manifest


def test_auto_builds_measures_and_records_every_candidate(auto_export):
    out, manifest = auto_export
    arts = manifest["artifacts"]
    # bf16 where the (here: declared) CPU has native bf16, INT8 for both CPU runtimes
    assert {"onnx", "openvino", "openvino_bf16", "int8_onnx", "int8_openvino"} <= set(arts)
    assert "int8_onnx_trt" not in arts  # TensorRT's form only when --int8 or --trt asks for it
    assert arts["openvino_bf16"]["file"] == arts["openvino"]["file"] == "model.xml"
    assert arts["openvino_bf16"]["verify"]["options"] == {"precision": "bf16"}
    assert all(r["passed"] for r in manifest["verification"])
    sel = manifest["selection"]
    assert sel["held_out"]["clips"] == SELECTION_MIN_CLIPS and sel["machine"]["cpu"]["flags_simulated"]
    assert set(sel["runtimes"]) == {"openvino", "onnxruntime"}
    for runtime, keys in (("openvino", {"openvino", "openvino_bf16", "int8_openvino"}),
                          ("onnxruntime", {"onnx", "int8_onnx"})):
        r = sel["runtimes"][runtime]
        assert {c["artifact"] for c in r["candidates"]} == keys
        for c in r["candidates"]:
            assert c["median_ms"] > 0 and c["agreement"]["clips"] == SELECTION_MIN_CLIPS
            assert 0 <= c["agreement"]["exact_top1"] <= 1 and "passed" in c["agreement"]
        fp32 = next(c for c in r["candidates"] if c["precision"] == "fp32")
        assert fp32["x_fp32"] == 1.0 and fp32["agreement"]["passed"]
        assert r["chosen"] in keys and r["reason"]
        assert manifest["default_artifacts"][runtime] == r["chosen"]
        chosen = next(c for c in r["candidates"] if c["artifact"] == r["chosen"])
        assert chosen["agreement"]["passed"]
        assert chosen["precision"] == "fp32" or chosen["x_fp32"] <= MIN_GAIN


def test_the_folder_default_is_what_the_pipeline_runs(auto_export, capsys):
    from e3d_runtime.cli.infer import main
    from e3d_runtime.manifest import load_manifest
    from e3d_runtime.video.pipeline import VideoClassifier

    out, manifest = auto_export
    chosen = manifest["default_artifacts"]["openvino"]
    entry = manifest["artifacts"][chosen]
    clf = VideoClassifier.from_artifact(out, backend="openvino")
    d = clf.backend.describe()
    assert d["artifact"].endswith(entry["file"])
    assert d["precision"] == ("bf16" if chosen == "openvino_bf16" else "f32")
    # asked by precision, from the folder
    assert VideoClassifier.from_artifact(out, backend="openvino", precision="int8").backend.path.name == "model_int8.xml"
    bf16 = VideoClassifier.from_artifact(out, backend="openvino", precision="bf16")
    assert bf16.backend.describe()["precision"] == "bf16"
    assert load_manifest(out)["default_artifacts"] == manifest["default_artifacts"]
    # e3d-infer: --precision needs a folder
    assert main(["x.mp4", "--model", "e3d_s", "--precision", "int8"]) == 2
    assert "--precision int8: picks among an export folder's artifacts" in capsys.readouterr().err


def test_an_avx2_only_cpu_gets_no_bf16_candidate(tmp_path):
    assert not has_native_bf16(AVX2_ONLY) and has_native_bf16(ZEN4)
    manifest = export(tiny_model(), tmp_path / "avx2", precision="auto", held_out=_held_out(),
                      calibration_clips=_held_out(8, seed=6), n_clips=2, threads=1, selection_runs=2,
                      cpu_flags=AVX2_ONLY)
    assert "openvino_bf16" not in manifest["artifacts"] and "int8_openvino" in manifest["artifacts"]
    ov = manifest["selection"]["runtimes"]["openvino"]
    assert {c["artifact"] for c in ov["candidates"]} == {"openvino", "int8_openvino"}
    assert manifest["selection"]["machine"]["cpu"]["native"]["bf16"] is None


def _manifest(default="int8_openvino"):
    art = lambda f, p, **kw: {"file": f, "format": "openvino-ir", "precision": p, **kw}  # noqa: E731
    return {"artifacts": {"openvino": art("model.xml", "fp32"),
                          "openvino_bf16": art("model.xml", "bf16", runtime_precision="bf16"),
                          "int8_openvino": art("model_int8.xml", "int8"),
                          "onnx": {"file": "model.onnx", "format": "onnx", "precision": "fp32"}},
            "default_artifacts": {"openvino": default}}


@pytest.mark.parametrize("flags, expected", [(ZEN4, "int8_openvino"), (AVX2_ONLY, "openvino"),
                                             (["avx2", "avx_vnni"], "int8_openvino")])
def test_a_choice_is_kept_only_where_the_cpu_computes_its_precision_natively(flags, expected):
    backend, key, _ = artifact_entry_for("f", _manifest(), ["openvino"], flags=flags)
    assert (backend, key) == ("openvino", expected)
    key = artifact_entry_for("f", _manifest("openvino_bf16"), ["openvino"], flags=flags)[1]
    assert key == ("openvino_bf16" if "avx512_bf16" in flags else "openvino")


def test_artifact_by_precision_and_its_error():
    assert artifact_entry_for("f", _manifest(), ["openvino"], precision="bf16")[1] == "openvino_bf16"
    assert artifact_entry_for("f", _manifest(), ["onnxruntime"], flags=ZEN4)[1] == "onnx"
    with pytest.raises(ExportError, match="no artifact for onnxruntime at int8; the folder has"):
        artifact_entry_for("f", _manifest(), ["onnxruntime"], precision="int8")


def _row(key, precision, ms, passed=True, clips=SELECTION_MIN_CLIPS):
    return {"artifact": key, "precision": precision, "median_ms": ms, "x_fp32": ms / 10.0,
            "agreement": {"passed": passed, "failed": [] if passed else ["exact top-1 agreement 0.9 < 0.99"],
                          "clips": clips, "exact_top1": 1.0 if passed else 0.9, "max_prob_diff": 0.01}}


def test_choice_rules():
    rows = {"fp32": _row("fp32", "fp32", 10.0), "bf16": _row("bf16", "bf16", 7.0),
            "int8": _row("int8", "int8", 5.0)}
    assert _choose(rows, "fp32", True)[0] == "int8"
    chosen, reason = _choose({**rows, "int8": _row("int8", "int8", 5.0, passed=False)}, "fp32", True)
    assert chosen == "bf16" and "int8: disagrees (exact top-1 agreement 0.9 < 0.99)" in reason
    # barely faster is not faster
    chosen, reason = _choose({"fp32": rows["fp32"], "int8": _row("int8", "int8", 9.5)}, "fp32", True)
    assert chosen == "fp32" and f"not <= {MIN_GAIN}x" in reason
    chosen, reason = _choose(rows, "fp32", False)
    assert chosen == "fp32" and "not judged" in reason


def test_selection_criteria_count_exact_top1_and_probability_changes():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 8)) * 3
    for i in (0, 1):  # near-ties in the reference: a flip there barely moves a probability
        order = np.argsort(-ref[i])
        ref[i, order[1]] = ref[i, order[0]] - 0.02
    assert compare(ref, ref.copy(), selection_criteria("int8")).passed
    flip = ref.copy()
    for i in (0, 1):  # both near-ties flip: 98 % exact top-1 < 99 %
        order = np.argsort(-ref[i])
        flip[i, order[0]], flip[i, order[1]] = ref[i, order[1]], ref[i, order[0]]
    a = compare(ref, flip, selection_criteria("int8"))
    assert a.exact_top1 == pytest.approx(0.98) and a.max_prob_diff < 0.1 and not a.passed
    assert a.failed == ["exact top-1 agreement 0.9800 < 0.99"]
    flip[1] = ref[1]
    a = compare(ref, flip, selection_criteria("int8"))
    assert a.exact_top1 == pytest.approx(0.99) and a.passed  # 99 % is enough
    shifted = ref.copy()
    shifted[5] *= 0.2  # flattens one clip's distribution: its top probability drops
    a = compare(ref, shifted, selection_criteria("int8"))
    assert a.max_prob_diff > 0.1 and any("probability change" in f for f in a.failed)


def test_auto_refuses_random_weights_and_missing_held_out(tmp_path):
    with pytest.raises(ConfigError, match="the weights are random"):
        export("e3d_s", tmp_path / "x", precision="auto", held_out=_held_out(2))
    with pytest.raises(ConfigError, match="needs held-out clips"):
        export(tiny_model(), tmp_path / "y", precision="auto")
    with pytest.raises(ConfigError, match=r"held-out clips: expected \(N, 3, 4, 32, 32\)"):
        export(tiny_model(), tmp_path / "z", precision="auto", held_out=np.zeros((3, 3, 4, 16, 16)))
    # calibration clips are checked the same way, from a --held-out file or given to the API
    bad = np.full((2, 3, 4, 32, 32), np.nan, np.float32)
    np.savez(tmp_path.parent / "nan_calib.npz", clips=_held_out(), calibration=bad)
    with pytest.raises(ConfigError, match=r"nan_calib\.npz: calibration: expected finite numbers"):
        export(tiny_model(), tmp_path / "w", precision="auto", held_out=str(tmp_path.parent / "nan_calib.npz"))
    with pytest.raises(ConfigError, match=r"^calibration clips: expected finite numbers"):
        export(tiny_model(), tmp_path / "v", int8=True, calibration_clips=bad)
    assert not any(tmp_path.iterdir())


def test_held_out_sources(tmp_path):
    held, calib, what = load_held_out("synthetic:3", (3, 4, 32), n_calibration=2)
    assert held.shape == (3, 3, 4, 32, 32) and calib.shape == (2, 3, 4, 32, 32)
    assert "val split" in what and np.isfinite(held).all() and not np.array_equal(held[:2], calib)
    np.savez(tmp_path / "c.npz", clips=np.zeros((2, 3, 4, 32, 32)), calibration=np.ones((1, 3, 4, 32, 32)))
    held, calib, _ = load_held_out(str(tmp_path / "c.npz"), (3, 4, 32))
    assert held.shape[0] == 2 and calib.shape[0] == 1
    for bad in ("synthetic:x", "synthetic:1:2:3", str(tmp_path / "nope.npy")):
        with pytest.raises(ConfigError, match="--held-out"):
            load_held_out(bad, (3, 4, 32))


def test_cli_held_out_needs_auto(capsys):
    from e3d_export.cli import main

    assert main(["e3d_s", "--out", "x", "--held-out", "synthetic"]) == 2
    assert "--held-out: only used with --precision auto" in capsys.readouterr().err


def test_int8_calibrated_on_data_is_judged_on_the_data_clips(auto_export):
    from e3d_runtime.reverify import verify_folder

    out, manifest = auto_export
    # 2 random clips then 4 held-out ones: INT8 (calibrated on data) is judged on the latter,
    # fp32/bf16 on all of them; a re-verification reads the same criteria from the folder
    assert manifest["criteria"]["int8"]["first_clip"] == 2
    assert manifest["criteria"]["fp32"]["first_clip"] == 0
    int8_rows = [r for r in manifest["verification"] if r["precision"] == "int8"]
    assert int8_rows and all(r["clips"] == 4 and "the data clips" in r["criterion"] for r in int8_rows)
    report = verify_folder(out, threads=1)
    assert report["ok"], report


def test_first_clip_judges_only_the_data_clips():
    from e3d_runtime.criteria import CRITERIA
    from dataclasses import replace

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 10)) * 5
    got = ref + 0.01
    got[:2] = -ref[:2]  # noise clips far off: what INT8 does outside its calibrated ranges
    assert not compare(ref, got, CRITERIA["int8"]).passed
    judged = compare(ref, got, replace(CRITERIA["int8"], first_clip=2))
    assert judged.passed and judged.clips == 4
    too_far = compare(ref, got, replace(CRITERIA["int8"], first_clip=6))
    assert not too_far.passed and "only 6" in too_far.failed[0]


def test_a_candidate_that_fails_verification_is_rejected_not_fatal(tmp_path):
    from e3d_runtime.criteria import Criteria
    from e3d_zoo.errors import VerificationError

    # an INT8 tolerance no INT8 artifact meets stands in for a network INT8 cannot run
    strict = {"int8": Criteria("int8", max_rel_err=1e-9, min_cosine=1.0, min_top1=1.0, min_topk=1.0)}
    manifest = export(tiny_model(), tmp_path / "auto", precision="auto", held_out=_held_out(),
                      calibration_clips=_held_out(8, seed=6), n_clips=2, threads=1, selection_runs=2,
                      criteria=strict, cpu_flags=AVX2_ONLY)
    assert "int8_openvino" not in manifest["artifacts"] and "int8_onnx" not in manifest["artifacts"]
    assert not (tmp_path / "auto" / "model_int8.xml").exists()
    assert not (tmp_path / "auto" / "model_int8.onnx").exists()
    for runtime, key in (("openvino", "int8_openvino"), ("onnxruntime", "int8_onnx")):
        sel = manifest["selection"]["runtimes"][runtime]
        assert sel["chosen"] == ("openvino" if runtime == "openvino" else "onnx")
        row = next(c for c in sel["candidates"] if c["artifact"] == key)
        assert row["rejected"].startswith("failed its verification") and key in sel["reason"]
    # asked for explicitly, the same failure fails the export and leaves nothing behind
    with pytest.raises(VerificationError, match="verification failed"):
        export(tiny_model(), tmp_path / "int8", int8=True, openvino=True, criteria=strict,
               calibration_clips=_held_out(8, seed=6), n_clips=2, threads=1)
    assert not (tmp_path / "int8").exists()
