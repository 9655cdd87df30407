"""e3d-infer --model M --artifact A: A runs, and it must be M; non-finite outputs are errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e3d_runtime.cli.infer import main
from e3d_runtime.errors import BackendError, ConfigError
from e3d_runtime.video.pipeline import VideoClassifier
from e3d_runtime.video.writers import encode_video
from e3d_zoo import create_model
from e3d_zoo.hub import save_pretrained
from tiny_arch import tiny_model

from .helpers import make_tiny_spec, moving_bar

pytest.importorskip("onnxruntime")
e3d_export = pytest.importorskip("e3d_export")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifact")
    spec = make_tiny_spec(frames=4, size=32)
    model = tiny_model(num_classes=3, seed=0, frames=4, size=32)  # trained-like: logits of O(1)
    save_pretrained(model, root / "model", label_names=["left", "right", "still"])
    e3d_export.export_onnx(model, root / "same.onnx", frames=4, size=32)
    other = tiny_model(num_classes=3, seed=1, frames=4, size=32)
    e3d_export.export_onnx(other, root / "other.onnx", frames=4, size=32)
    spec.save(root / "arch.json")
    encode_video(root / "clip.mp4", moving_bar(16, 32, 48), fps=16)
    return root


def test_the_artifact_runs_and_is_checked_against_the_model(assets, capsys):
    rc = main([str(assets / "clip.mp4"), "--model", str(assets / "model"), "--artifact",
               str(assets / "same.onnx"), "--clips", "1", "--crops", "1", "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["backend"]["backend"] == "onnxruntime"  # what ran, not the PyTorch model
    check = out["artifact_check"]
    assert check["outputs"] == "match" and check["max_abs_err"] < 1e-3 * check["logit_scale"]
    assert out["records"][0]["top"][0]["label"] in ("left", "right", "still")


def test_an_unrelated_artifact_is_refused(assets, capsys):
    rc = main([str(assets / "clip.mp4"), "--model", str(assets / "model"), "--artifact",
               str(assets / "other.onnx"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "other.onnx: not an export of --model" in err and "Traceback" not in err


def test_random_weights_compare_shapes_only(assets):
    clf = VideoClassifier.from_model(str(assets / "arch.json"), artifact=assets / "other.onnx",
                                     num_classes=3)
    assert clf.backend.name == "onnxruntime"
    assert clf.artifact_check["outputs"].startswith("not compared")
    with pytest.raises(ConfigError, match="outputs 3 classes, the model 5"):
        VideoClassifier.from_model(str(assets / "arch.json"), artifact=assets / "other.onnx",
                                   num_classes=5)


def test_non_finite_outputs_are_an_error_not_a_label(assets):
    model = create_model(make_tiny_spec(frames=4, size=32), num_classes=3).eval()
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")
    e3d_export.export_onnx(model, assets / "nan.onnx", frames=4, size=32)
    clf = VideoClassifier.from_artifact(assets / "nan.onnx", num_clips=1, num_crops=1)
    with pytest.raises(BackendError, match="non-finite outputs"):
        clf.predict(np.zeros((1, 3, 4, 32, 32), np.float32))
    rec = next(clf.classify_many([str(assets / "clip.mp4")]))
    assert rec["kind"] == "error" and "non-finite" in rec["error"]


class NaNArtifactDouble:
    """Test double of a classifier whose artifact returns NaN logits (a corrupt export that
    ONNX Runtime would run without complaint; VideoClassifier.collect refuses it earlier)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def logits(self, clips):
        return np.full((len(clips), 3), np.nan, np.float32)


def test_nan_artifact_logits_are_not_a_match(assets):
    from e3d_zoo.video.model_source import check_artifact

    model = create_model(make_tiny_spec(frames=4, size=32), num_classes=3).eval()
    double = NaNArtifactDouble({"input_size": (3, 32, 32), "num_frames": 4})
    with pytest.raises(ConfigError, match=r"nan\.onnx: not an export of --model .*non-finite"):
        check_artifact(double, model, "nan.onnx", compare_outputs=True)
