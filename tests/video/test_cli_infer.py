"""e3d-infer end to end: folders with a failing file, outputs, resume, streams, annotation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from e3d_zoo.cli.infer import main
from e3d_zoo.video.decode import VideoReader
from e3d_zoo.video.writers import encode_video

from .helpers import FileServer, RTSPPublisher, faststart_mp4, make_tiny_spec, moving_bar


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    make_tiny_spec(frames=4, size=32).save(path)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    encode_video(d / "a.mp4", moving_bar(20, 32, 48), fps=30)
    encode_video(d / "sub" / "b.mkv", moving_bar(12, 40, 30, seed=1), fps=24, codec="ffv1")
    (d / "broken.mp4").write_bytes(b"not a video at all" * 50)
    return d


def test_folder_run_lists_failures_writes_outputs_and_exits_nonzero(arch, folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([str(folder), "--model", arch, "--random-weights", "--num-classes", "3", "--clips", "2", "--threads", "1",
               "--jsonl", str(out / "r.jsonl"), "--csv", str(out / "r.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "1 input(s) failed" in err and "broken.mp4" in err and "Traceback" not in err
    recs = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    assert sorted(r["kind"] for r in recs) == ["error", "video", "video"]
    assert not (out / "r.jsonl.partial").exists()
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert {r["source"].rsplit("/", 1)[-1] for r in rows} == {"a.mp4", "b.mkv"}
    assert all(r["label"].startswith("class_") and 0 < float(r["score"]) <= 1 for r in rows)


def test_rerun_resumes_from_the_jsonl_and_only_retries_failures(arch, folder, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    args = [str(folder), "--model", arch, "--random-weights", "--num-classes", "3", "--clips", "1", "--crops", "1",
            "--threads", "1", "--jsonl", str(out), "--json"]
    assert main(args) == 1
    capsys.readouterr()
    (folder / "broken.mp4").unlink()
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_done"] == 2 and summary["records"] == [] and summary["failures"] == []


def test_json_output_for_scripts_in_stream_mode_with_annotation(arch, tmp_path, capsys):
    src = encode_video(tmp_path / "clip.mp4", moving_bar(45, 36, 64), fps=30)
    ann = tmp_path / "labelled.mp4"
    rc = main([str(src), "--model", arch, "--random-weights", "--num-classes", "4", "--mode", "stream", "--hop", "0.5",
               "--top-k", "2", "--threads", "1", "--annotate", str(ann), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    wins = summary["records"]
    assert len(wins) >= 2 and all(w["kind"] == "window" and len(w["top"]) == 2 for w in wins)
    assert summary["backend"]["backend"] == "torch"
    with VideoReader(ann) as r:
        assert r.info.num_frames == 45 and (r.info.width, r.info.height) == (64, 36)
        frames, _ = r.read([0, 44])
    # the label band is drawn once a window has been emitted: dark band + white text pixels
    band = frames[1, :6]
    assert (band < 40).mean() > 0.5 and band.max() > 200


def test_live_http_stream_in_stream_mode(arch, tmp_path, capsys):
    data = faststart_mp4(tmp_path / "live.mp4", moving_bar(30, 32, 32)).read_bytes()
    server = FileServer(data, drops=1, cut=len(data) // 2)
    try:
        rc = main([server.url, "--model", arch, "--random-weights", "--random-weights", "--num-classes", "3", "--threads", "1", "--hop", "0.25",
                   "--max-reconnects", "2", "--json"])
    finally:
        server.close()
    assert rc == 0
    wins = json.loads(capsys.readouterr().out)["records"]
    ends = [w["end_time"] for w in wins]
    assert len(wins) >= 3 and ends == sorted(ends)


def test_unreachable_stream_and_bad_options_exit_nonzero_without_traceback(arch, tmp_path, capsys):
    rc = main(["http://127.0.0.1:9/live.ts", "--model", arch, "--random-weights", "--timeout", "2", "--max-reconnects", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot connect to stream" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:  # a range error is argparse's usage error
        main([str(tmp_path), "--model", arch, "--random-weights", "--hop", "0"])
    assert usage.value.code == 2 and "argument --hop: expected a finite number > 0" in capsys.readouterr().err
    assert main([str(tmp_path), "--model", arch, "--random-weights", "--csv", str(tmp_path / "x.txt")]) == 2
    assert "--csv" in capsys.readouterr().err


def test_trained_model_folder_with_label_names(tmp_path, capsys):
    """A save-pretrained folder (what e3d-train writes) carries weights and class names."""
    import torch

    from e3d_zoo import create_model
    from e3d_zoo.hub import save_pretrained
    from e3d_zoo.video.decode import VideoReader
    from e3d_zoo.video.pipeline import softmax
    from e3d_zoo.video.sampling import SamplingConfig, multi_view_indices
    from e3d_zoo.video.transforms import EvalTransform

    torch.manual_seed(3)
    model = create_model(make_tiny_spec(frames=4, size=32), num_classes=3).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)
    names = ["wave", "jump", "sit"]
    save_pretrained(model, tmp_path / "model", label_names=names)
    src = encode_video(tmp_path / "v.mp4", moving_bar(30, 40, 40), fps=30)
    rc = main([str(src), "--model", str(tmp_path / "model"), "--clips", "1", "--crops", "1",
               "--threads", "1", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    with VideoReader(src) as r:
        frames, _ = r.read(multi_view_indices(30, SamplingConfig.from_cfg(model.pretrained_cfg), 1)[0])
    with torch.no_grad():
        p = softmax(model(torch.from_numpy(EvalTransform.from_cfg(model.pretrained_cfg)(frames)[None])).numpy())[0]
    assert rec["top"][0]["label"] == names[int(np.argmax(p))]
    assert rec["top"][0]["score"] == pytest.approx(float(p.max()), abs=1e-5)


def test_exported_backend_from_the_cli_uses_the_artifact_cache(arch, tmp_path, monkeypatch, capsys):
    pytest.importorskip("e3d_export")
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("E3D_CACHE", str(tmp_path / "cache"))
    src = encode_video(tmp_path / "v.mp4", moving_bar(20, 32, 32), fps=30)
    args = [str(src), "--model", arch, "--random-weights", "--num-classes", "3", "--backend", "ort",
            "--threads", "1", "--clips", "1", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"]["backend"] == "onnxruntime"
    cached = list((tmp_path / "cache" / "artifacts").glob("*.onnx"))
    assert len(cached) == 1 and out["backend"]["artifact"] == str(cached[0])
    # the exported file alone reproduces the result (preprocessing from its metadata)
    assert main([str(src), "--artifact", str(cached[0]), "--threads", "1", "--clips", "1", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["records"][0]["top"][0]["score"] == pytest.approx(out["records"][0]["top"][0]["score"], abs=1e-5)


def test_live_rtsp_stream_in_stream_mode(arch, capsys):
    """e3d-infer on a real RTSP session (FFmpeg publisher -> listening reader over loopback),
    FFmpeg options passed with --input-option as a user would for a pushed camera stream."""
    pub = RTSPPublisher(moving_bar(45, 32, 32), fps=30)
    opts = [f"--input-option={k}={v}" for k, v in RTSPPublisher.READER_OPTIONS.items()]
    rc = main([pub.url, "--model", arch, "--random-weights", "--num-classes", "3", "--threads", "1",
               "--hop", "0.25", "--timeout", "10", "--max-reconnects", "0", *opts, "--json"])
    pub.join()
    assert rc == 0
    wins = json.loads(capsys.readouterr().out)["records"]
    ends = [w["end_time"] for w in wins]
    # 45 frames at 30 fps, stride 2, windows of 4 sampled frames, hop 0.25 s: a window ends
    # every ~4 sampled frames from the 4th on
    assert len(wins) >= 4 and ends == sorted(ends) and all(w["source"] == pub.url for w in wins)
    assert all(len(w["top"]) == 3 for w in wins)


def test_capture_device_in_stream_mode_and_a_missing_one(arch, capsys):
    """--format selects FFmpeg's device layer; lavfi's test source plays the camera."""
    rc = main(["testsrc2=size=48x32:rate=30:duration=1.5", "--format", "lavfi", "--model", arch,
               "--random-weights", "--num-classes", "3", "--threads", "1", "--hop", "0.25", "--json"])
    assert rc == 0
    wins = json.loads(capsys.readouterr().out)["records"]
    # 45 frames, stride 2: windows of 4 sampled frames end at 0.2 s, then every 0.25 s
    assert len(wins) >= 4 and all(w["kind"] == "window" for w in wins)
    assert [w["end_time"] for w in wins] == sorted(w["end_time"] for w in wins)
    rc = main(["/dev/video9", "--format", "v4l2", "--model", arch, "--random-weights",
               "--max-reconnects", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "/dev/video9: cannot open as a v4l2 input" in err and "Traceback" not in err


def test_openvino_streams_and_decode_threads_from_the_cli(arch, tmp_path, monkeypatch, capsys):
    pytest.importorskip("e3d_export")
    pytest.importorskip("openvino")
    monkeypatch.setenv("E3D_CACHE", str(tmp_path / "cache"))
    src = encode_video(tmp_path / "v.mp4", moving_bar(40, 32, 32), fps=30)
    base = [str(src), "--model", arch, "--random-weights", "--num-classes", "3", "--mode", "stream",
            "--hop", "0.25", "--backend", "openvino", "--threads", "2", "--json"]
    assert main(base) == 0
    one = json.loads(capsys.readouterr().out)
    xml = one["backend"]["artifact"]  # the same weights again, from the artifact cache
    assert main([str(src), "--artifact", xml, "--mode", "stream", "--hop", "0.25", "--threads", "2",
                 "--streams", "2", "--decode-threads", "1", "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["backend"]["streams"] == 2 and one["backend"]["streams"] == 1
    assert [w["top"][0]["score"] for w in two["records"]] == pytest.approx(
        [w["top"][0]["score"] for w in one["records"]], abs=1e-5)
    assert [w["end_time"] for w in two["records"]] == [w["end_time"] for w in one["records"]]
    assert main([str(src), "--model", arch, "--random-weights", "--streams", "2"]) == 2
    err = capsys.readouterr().err
    assert "--streams: only the openvino backend" in err and "Traceback" not in err


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (4, 0), (16, 0)])
def test_decoder_threads_default_from_the_machine(monkeypatch, cores, expected):
    # one decoder thread where inference already takes every core; FFmpeg's choice beyond
    from e3d_runtime import machine
    from e3d_runtime.video.pipeline import default_decode_threads

    monkeypatch.setattr(machine, "usable_cores", lambda: cores)
    assert default_decode_threads() == expected


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (8, 7)])
def test_stream_mode_leaves_a_core_to_decoding(monkeypatch, cores, expected):
    from e3d_runtime import machine
    from e3d_runtime.video.pipeline import default_stream_threads

    monkeypatch.setattr(machine, "usable_cores", lambda: cores)
    assert default_stream_threads() == expected


def test_stream_mode_threads_reach_the_backend(tmp_path, capsys, monkeypatch):
    pytest.importorskip("openvino")
    e3d_export = pytest.importorskip("e3d_export")
    from e3d_runtime import machine
    from tiny_arch import tiny_model

    folder = tmp_path / "exp"
    e3d_export.export(tiny_model(num_classes=3, frames=4, size=32), folder, openvino=True)
    src = encode_video(tmp_path / "v.mp4", moving_bar(20, 32, 32), fps=30)
    monkeypatch.setattr(machine, "usable_cores", lambda: 3)
    run = [str(src), "--artifact", str(folder), "--json", "--no-progress"]
    assert main(run + ["--mode", "stream"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"]["threads"] == 2   # every core but one
    assert main(run + ["--mode", "stream", "--threads", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"]["threads"] == 3   # asked for
    assert main(run + ["--mode", "video", "--clips", "1", "--crops", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"]["threads"] in (None, 0)  # the runtime's choice
