"""A trained E3D's labels end to end: train on the synthetic motion benchmark (the training
issue's data), encode held-out clips with PyAV, classify the files in both modes on every
backend that runs here, and through e3d-infer.

Training takes about 30 s on 2 cores, so it happens once per test run: the xdist workers
share the trained folder through a file lock (pytest-xdist's documented pattern).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
synthetic = pytest.importorskip("e3d_zoo.data.synthetic")

from e3d_zoo.video.pipeline import VideoClassifier  # noqa: E402
from e3d_zoo.video.writers import encode_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLASSES = synthetic.CLASSES


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory, worker_id):
    from filelock import FileLock

    from e3d_zoo.train import TrainConfig, train

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # one run's workers share it
    folder = shared / "trained_motion" / "model"
    with FileLock(str(shared / "trained_motion.lock")):
        if not (folder / "config.json").is_file():
            # a short run of configs/synthetic_motion.toml: ~90% held-out top-1 over 8 classes
            cfg = TrainConfig.load(str(ROOT / "configs" / "synthetic_motion.toml"), {
                "model": str(ROOT / "configs" / "archs" / "e3d_motion.json"),
                "epochs": 4, "train_clips": 1200, "val_clips": 160,
                "output": str(shared / "trained_motion"), "plot": False})
            run = train(cfg, progress=False)
            assert run["final"]["val_top1"] >= 60.0, run["final"]  # chance: 12.5 %
            assert Path(run["pretrained_folder"]) == folder
    return folder


@pytest.fixture(scope="module")
def held_out_videos(tmp_path_factory):
    # seed 7 "test" split: clips the training run (seed 0, "train"/"val") never saw
    return synthetic.write_videos(tmp_path_factory.mktemp("held_out"), clips_per_class=2, seed=7)


def _backends():
    from e3d_zoo.runtime.base import available_backends

    return [b for b in ("torch", "onnxruntime", "openvino") if b in available_backends()]


def test_trained_model_labels_encoded_videos_on_every_backend(trained_folder, held_out_videos, tmp_path):
    truth = [CLASSES[label] for _, label in held_out_videos]
    probs = {}
    for backend in _backends():
        clf = VideoClassifier.from_model(trained_folder, backend=backend, threads=2, cache_dir=tmp_path)
        assert clf.labels == list(CLASSES)  # label names travel with the trained folder
        recs = [clf.classify(p, return_probs=True) for p, _ in held_out_videos]
        got = [r["top"][0]["label"] for r in recs]
        correct = sum(g == t for g, t in zip(got, truth))
        # observed 16/16; chance is 2/16
        assert correct >= 13, f"{backend}: {correct}/16 correct: {list(zip(got, truth))}"
        probs[backend] = np.array([r["probs"] for r in recs])
    for backend, p in probs.items():
        assert np.allclose(p, probs["torch"], atol=1e-4), backend


def test_stream_mode_follows_an_action_that_changes(trained_folder, tmp_path):
    """Two held-out clips of different classes back to back (8 + 8 frames at 8 fps): the
    first window sees only the first action, the last only the second."""
    ds = synthetic.SyntheticMotion("test", 4 * len(CLASSES), seed=11)
    by_class = {}
    for i in range(len(ds)):
        by_class.setdefault(ds.label(i), []).append(i)
    pairs = [("move_left", "move_right"), ("move_up", "move_down"), ("approach", "recede"),
             ("rotate_cw", "rotate_ccw")]
    clf = VideoClassifier.from_model(trained_folder, backend="openvino" if "openvino" in _backends()
                                     else "torch", threads=2, cache_dir=tmp_path)
    followed = 0
    for k, (a, b) in enumerate(pairs):
        frames = list(ds.frames(by_class[CLASSES.index(a)][0])) + list(ds.frames(by_class[CLASSES.index(b)][0]))
        path = encode_video(tmp_path / f"{a}_then_{b}.mp4", frames, fps=8, options={"crf": "10"})
        wins = list(clf.stream(path, hop=0.25, top_k=1))
        assert len(wins) == 5  # windows start at frames 0, 2, 4, 6, 8
        assert [w["start_time"] for w in wins] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
        followed += wins[0]["top"][0]["label"] == a and wins[-1]["top"][0]["label"] == b
    assert followed >= len(pairs) - 1, f"{followed}/{len(pairs)} changes followed"


def test_e3d_infer_on_a_folder_with_the_trained_model(trained_folder, held_out_videos, tmp_path, capsys):
    from e3d_zoo.cli.infer import main

    folder = held_out_videos[0][0].parent.parent
    out = tmp_path / "preds.jsonl"
    assert main([str(folder), "--model", str(trained_folder), "--backend", "openvino"
                 if "openvino" in _backends() else "torch", "--threads", "2", "--top-k", "1",
                 "--jsonl", str(out), "--no-progress", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    assert len(recs) == len(held_out_videos)
    right = sum(Path(r["source"]).parent.name == r["top"][0]["label"] for r in recs)
    assert right >= 13
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == [r["source"] for r in recs]
