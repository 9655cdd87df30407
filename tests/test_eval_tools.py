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


def test_pipeline_benchmark_reports_the_machine_ceiling(tmp_path, capsys):
    """The ceilings are what a reader checks the RTF target against: MACs from the spec,
    sgemm and one-thread decoding measured in the same run."""
    import json

    from e3d_eval.bench_pipeline import main
    from tiny_arch import make_tiny_spec

    arch = tmp_path / "tiny.json"
    spec = make_tiny_spec(frames=4, size=32)
    spec.save(arch)
    assert main(["--model", str(arch), "--backend", "onnxruntime", "--threads", "1", "--seconds", "2",
                 "--repeats", "1", "--hop", "0.25", "--cache", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["macs_per_window"] == complexity.macs(spec, 4, 32)
    windows, seconds = r["median"]["windows"], r["video"]["seconds"]
    assert windows >= 4 and r["sgemm_gflops"] > 0 and r["median"]["decode_only_1thread_s"] > 0
    assert r["rtf_ceiling_model_at_sgemm_peak"] == pytest.approx(
        seconds * r["sgemm_gflops"] * 1e9 / (windows * 2 * r["macs_per_window"]))
    # decoding shares the cores, so it can only lower the ceiling
    assert r["rtf_ceiling_with_decode"] < r["rtf_ceiling_model_at_sgemm_peak"]


def test_pipeline_benchmark_pairs_a_streams_comparison(tmp_path, capsys):
    pytest.importorskip("openvino")
    import json

    from e3d_eval.bench_pipeline import main
    from tiny_arch import make_tiny_spec

    arch = tmp_path / "tiny.json"
    make_tiny_spec(frames=4, size=32).save(arch)
    assert main(["--model", str(arch), "--backend", "openvino", "--threads", "2", "--seconds", "2",
                 "--repeats", "2", "--hop", "0.25", "--cache", str(tmp_path), "--compare-streams", "2",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    c = r["compare_streams"]
    assert r["backend"]["streams"] == 1 and c["backend"]["streams"] == 2
    assert len(c["rtf_runs"]) == len(r["rtf_runs"]) == 2 and c["wall_ratio_to_main"] > 0
