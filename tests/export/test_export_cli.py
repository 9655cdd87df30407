"""e3d-export: --json output, one-line errors with non-zero exit, --check."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from tiny_arch import tiny_model
from e3d_export.cli import main


def test_cli_exports_arch_file_with_json(tmp_path, tiny_arch_file, capsys):
    out = tmp_path / "exp"
    rc = main([str(tiny_arch_file), "--openvino", "--lower-2d", "--out", str(out), "--clips", "2", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["artifacts"]) == {"onnx", "onnx_2d", "openvino"}
    assert all(r["passed"] for r in doc["verification"])
    assert (out / "manifest.json").is_file() and (out / "model_2d.onnx").is_file()
    assert main(["--check", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def test_cli_errors_are_one_line_and_exit_2(tmp_path, tiny_arch_file, capsys):
    assert main(["e3d_nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown model 'e3d_nope'" in _err(capsys)

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    assert main([str(bad), "--arch", str(tiny_arch_file), "--out", str(tmp_path / "b")]) == 2
    assert "unreadable checkpoint" in _err(capsys)

    mismatched = tmp_path / "other.pth"
    torch.save(tiny_model(num_classes=3).state_dict(), mismatched)
    assert main([str(mismatched), "--arch", "e3d_s", "--out", str(tmp_path / "c")]) == 2
    assert "does not fit architecture 'e3d_s'" in _err(capsys)

    assert main([str(tiny_arch_file), "--trt", "--out", str(tmp_path / "d")]) == 2
    err = _err(capsys)
    assert "e3d-zoo[trt]" in err or "CUDA" in err

    assert main([str(tiny_arch_file), "--out", str(tmp_path / "e"), "--max-rel-err", "1e-15", "--clips", "1"]) == 2
    assert "verification failed" in _err(capsys)

    assert main([str(tiny_arch_file)]) == 2
    assert "--out" in _err(capsys)
    # no output folder and no staging left: only the (empty, hidden) lock of the tried --out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e.lock", "bad.pth", "e3d_tiny.json",
                                                          "other.pth"]


def test_console_script_exits_nonzero_without_traceback(tmp_path):
    exe = [sys.executable, "-c", "import sys; from e3d_export.cli import main; sys.exit(main())"]
    r = subprocess.run(exe + ["--check", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("e3d-export: error:") and "no manifest.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_verifies_on_a_clip_decoded_from_a_real_video(tmp_path, tiny_arch_file, capsys):
    """A PyAV-encoded video, decoded and normalized by the video pipeline, joins the random clips."""
    import numpy as np
    import pytest

    writers = pytest.importorskip("e3d_zoo.video.writers")
    rng = np.random.default_rng(0)
    video = writers.encode_video(tmp_path / "clip.mp4",
                                 [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(16)], fps=8)
    out = tmp_path / "exp"
    assert main([str(tiny_arch_file), "--video", str(video), "--clips", "1", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["input"]["verification_clips"] == 2
    assert doc["verification"][0]["clips"] == 2 and doc["verification"][0]["passed"]
