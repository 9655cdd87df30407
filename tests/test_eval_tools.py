"""Pieces of the benchmarks in eval/ that decide what a figure means: the MAC split the
OpenVINO profile divides by, and the bitrate cap of the pipeline benchmark's video."""
from __future__ import annotations

import pytest

pytest.importorskip("av")
pytest.importorskip("onnx")

from e3d_eval.bench_pipeline import _double, make_video
from e3d_eval.profile_openvino import conv_macs_by_class, layer_class
from e3d_export import export_onnx
from e3d_zoo import complexity
from tiny_arch import tiny_model


def test_conv_mac_classes_add_up_to_the_spec_count(tmp_path):
    model = tiny_model()
    spec = model.spec.replace(frames=4, size=32)
    path = export_onnx(model, tmp_path / "tiny.onnx", frames=4, size=32)
    classes = conv_macs_by_class(path)
    assert set(classes) == {"pointwise", "depthwise", "dense"}
    # the ONNX graph's convs are every MAC of the spec except the head's two linear layers
    head = spec.num_features * spec.head_hidden + spec.head_hidden * model.num_classes
    assert sum(classes.values()) == complexity.macs(spec, 4, 32, num_classes=model.num_classes) - head
    dw = sum(c.macs for c in complexity.conv_layers(spec, 4, 32) if c.role == "dw")
    assert classes["depthwise"] == dw


def test_layer_classes_follow_openvino_kernel_names():
    assert layer_class("Convolution", "brgconv_avx2_1x1_f32") == "pointwise"
    assert layer_class("GroupConvolution", "brgconv_avx2_dw_f32") == "depthwise"
    assert layer_class("Convolution", "brgconv_avx2_f32") == "dense"
    assert layer_class("Reorder", "jit_uni_f32") == "other"


def test_pipeline_benchmark_video_bitrate_cap(tmp_path):
    assert _double("1M") == "2000000" and _double("500k") == "1000000"
    seconds = 10.0
    capped = make_video(tmp_path / "capped.mp4", seconds, width=320, height=180, bitrate="200k")
    free = make_video(tmp_path / "free.mp4", seconds, width=320, height=180)
    capped_bps = capped.stat().st_size * 8 / seconds
    # noise does not compress: uncapped CRF 23 is several times the cap. x264's VBV keeps
    # the average at most (initial buffer fill 0.9 x 2 s x rate + rate x T) / T
    assert free.stat().st_size > 3 * capped.stat().st_size
    assert 0.1e6 < capped_bps <= (0.9 * 0.4e6 + 0.2e6 * seconds) / seconds * 1.02


def test_pipeline_benchmark_ceiling_is_an_upper_bound(tmp_path, capsys):
    """The ceiling a reader checks the RTF against: MACs from the spec, the machine's peak
    (the best engine measured, in the same run) and one-thread decoding; it must not fall
    below what the same run achieved."""
    import json

    from e3d_eval.bench_pipeline import main
    from tiny_arch import make_tiny_spec

    arch = tmp_path / "tiny.json"
    spec = make_tiny_spec(frames=4, size=32)
    spec.save(arch)
    assert main(["--model", str(arch), "--backend", "onnxruntime", "--threads", "1", "--seconds", "2",
                 "--repeats", "1", "--hop", "0.25", "--cache", str(tmp_path), "--quick-peaks", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["macs_per_window"] == complexity.macs(spec, 4, 32)
    windows, seconds = r["median"]["windows"], r["video"]["seconds"]
    assert windows >= 4 and r["median"]["decode_only_1thread_cpu_s"] > 0
    # the peak used is the best of every engine measured, before and after the runs
    rates = [m["gflops_best"] for pk in r["peaks"] for m in pk["measurements"] if m["precision"] == "fp32"]
    assert {m["engine"] for pk in r["peaks"] for m in pk["measurements"]} >= {"numpy", "openvino"}
    assert r["precision"] == "fp32" and r["peak_gflops_used"] == max(rates)
    assert r["rtf_ceiling_model_at_peak"] == pytest.approx(
        seconds * r["peak_gflops_used"] * 1e9 / (windows * 2 * r["macs_per_window"]))
    # decoding shares the cores, so it can only lower the ceiling; an upper bound all the same
    assert r["rtf"] <= r["rtf_ceiling"] < r["rtf_ceiling_model_at_peak"]
    assert r["fraction_of_ceiling"] == pytest.approx(r["rtf"] / r["rtf_ceiling"]) and r["fraction_of_ceiling"] <= 1
    cpu = r["machine"]["cpu"]
    assert cpu["cores"] >= 1 and isinstance(cpu["flags"], list) and r["machine"]["load_avg_1min_start"] >= 0
    assert r["verdict"].startswith("verdict (in-process pipeline): ") and "of the ceiling" in r["verdict"]


def test_pipeline_benchmark_pairs_a_streams_comparison(tmp_path, capsys):
    pytest.importorskip("openvino")
    import json

    from e3d_eval.bench_pipeline import main
    from tiny_arch import make_tiny_spec

    arch = tmp_path / "tiny.json"
    make_tiny_spec(frames=4, size=32).save(arch)
    assert main(["--model", str(arch), "--backend", "openvino", "--threads", "2", "--seconds", "2",
                 "--repeats", "2", "--hop", "0.25", "--cache", str(tmp_path), "--compare-streams", "2",
                 "--quick-peaks", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    c = r["compare_streams"]
    assert r["backend"]["streams"] == 1 and c["backend"]["streams"] == 2
    assert len(c["rtf_runs"]) == len(r["rtf_runs"]) == 2 and c["wall_ratio_to_main"] > 0


def test_export_benchmark_rooflines_use_the_measured_peaks(tmp_path, capsys):
    """Every row's roofline is 2 x MACs over the peak of its precision, measured in the same
    run; the verdict line names the ONNX Runtime / OpenVINO ratio."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import json

    from e3d_eval.bench_export import main
    from tiny_arch import make_tiny_spec

    arch = tmp_path / "tiny.json"
    make_tiny_spec(frames=4, size=32).save(arch)
    out = tmp_path / "bench.json"
    assert main(["--model", str(arch), "--frames", "4", "--size", "32", "--no-x3d", "--runs", "2",
                 "--warmup", "1", "--calibration-clips", "2", "--agreement-clips", "2", "--quick-peaks",
                 "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["verdict"] == capsys.readouterr().out.strip().splitlines()[-1]
    assert "ONNX Runtime lowered = " in r["verdict"] and "x OpenVINO fp32, target <= 1.5" in r["verdict"]
    for row in r["rows"]:
        best = max(m["gflops_best"] for pk in r["peaks"] for m in pk["measurements"]
                   if m["precision"] in ("fp32", row["precision"]))
        assert r["peak_gflops"][row["precision"]] == best
        assert row["roofline_ms"] == pytest.approx(2e3 * row["gmacs"] / best)
        assert row["x_roofline"] > 1.0  # a tiny network is nowhere near the peak
    assert {row["precision"] for row in r["rows"]} >= {"fp32", "int8"}
    assert r["machine"]["cpu"]["flags"] and r["machine"]["cpu"]["cores"] >= 1


@pytest.mark.parametrize("infer_args", [[], ["--infer-arg=--decoder-resize"]])
def test_edge_benchmark_streams_through_e3d_infer_beside_its_ceiling(tmp_path, capsys, infer_args):
    """e3d-infer as a user runs it (a process, start-up included), the folder's default
    artifact, and the ceiling of the same machine and video: never below what was achieved.
    With --decoder-resize the ceiling's decoding converts at the size e3d-infer's does."""
    pytest.importorskip("openvino")
    import json

    from e3d_eval.bench_edge import main
    from tiny_arch import make_tiny_spec

    arch = tmp_path / "tiny.json"
    make_tiny_spec(frames=4, size=32).save(arch)
    out = tmp_path / "edge.json"
    assert main(["--only-stream", "--model", str(arch), "--seconds", "2", "--repeats", "1",
                 "--variant", "one_thread=--threads 1", "--quick-peaks", "--workdir", str(tmp_path / "w"),
                 "--json", str(out), *infer_args]) == 0
    r = json.loads(out.read_text())
    s, c = r["stream"], r["stream_ceiling"]
    assert s["environment"] == "full" and s["windows"] >= 2 and len(s["load_avg_1min_per_run"]) == 1
    v = s["variants"]["one_thread"]
    assert v["extra_args"] == ["--threads", "1"] and v["windows"] == s["windows"] and v["rtf_including_startup"] > 0
    assert c["artifact"] == "openvino" and c["precision"] == "fp32" and len(c["peaks"]) == 2
    assert s["rtf_including_startup"] <= c["rtf_ceiling"] < c["rtf_ceiling_model_at_peak"]
    assert c["fraction_of_ceiling"] == pytest.approx(s["rtf_including_startup"] / c["rtf_ceiling"])
    assert r["verdict"] == c["verdict"] == capsys.readouterr().out.strip().splitlines()[-1]
    assert r["machine"]["cpu"]["cores"] >= 1 and "load_avg_1min_end" in r
    assert s["extra_args"] == [a.partition("=")[2] for a in infer_args]
    if infer_args:  # the resize size e3d-infer's stream mode gives the decoder
        from e3d_runtime.manifest import load_manifest, preprocess_cfg
        from e3d_runtime.video.transforms import EvalTransform

        (manifest,) = tmp_path.rglob("manifest.json")  # the benchmark's one export
        size = EvalTransform.from_cfg(preprocess_cfg(load_manifest(manifest.parent)["preprocess"])).resize_size
        assert c["decode_converted_short_side"] == size < 360  # the video's short side
    else:
        assert c["decode_converted_short_side"] is None


@pytest.mark.parametrize("stages, says", [("video", "video needs export"),
                                          ("zoo,export,video", "export needs train")])
def test_demo_refuses_stages_without_the_stages_they_need(tmp_path, capsys, stages, says):
    """export reads the train stage's checkpoint and video the export stage's artifact:
    a selection without them is a usage error up front, not a KeyError mid-demo."""
    from e3d_eval.demo import NEEDS, STAGES, main

    assert NEEDS["export"] == ("train",) and NEEDS["video"] == ("export",)
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "out"), "--stages", stages])
    assert info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m e3d_eval.demo: error: --stages ") and says in last
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    # every stage's needs come before it in the run order
    order = [n for n, _ in STAGES]
    assert all(order.index(d) < order.index(n) for n, ds in NEEDS.items() for d in ds)
