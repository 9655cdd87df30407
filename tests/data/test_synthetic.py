"""The synthetic motion benchmark: deterministic, no single-frame cue, real videos."""
from __future__ import annotations

import numpy as np
import pytest

from e3d_zoo.data.synthetic import CLASSES, MotionConfig, SyntheticMotion, _clip_rng, render_clip, write_videos
from e3d_zoo.errors import ConfigError

CFG = MotionConfig(frames=8, size=32, noise=0.0)


def _centroid_and_area(frames: np.ndarray, bg: np.ndarray):
    mask = np.abs(frames.astype(float) - bg).sum(-1) > 60
    out = []
    for m in mask:
        ys, xs = np.nonzero(m)
        out.append((xs.mean(), ys.mean(), m.sum()))
    return np.array(out)


def test_clips_are_a_pure_function_of_seed_split_and_index():
    a = SyntheticMotion("train", 16, seed=3, frames=4, size=32)
    b = SyntheticMotion("train", 16, seed=3, frames=4, size=32)
    assert np.array_equal(a.frames(5), b.frames(5))
    assert not np.array_equal(a.frames(5), SyntheticMotion("val", 16, seed=3, frames=4, size=32).frames(5))
    assert not np.array_equal(a.frames(5), SyntheticMotion("train", 16, seed=4, frames=4, size=32).frames(5))
    assert [a.label(i) for i in range(16)] == [i % 8 for i in range(16)]


def test_a_single_frame_carries_no_label_information():
    # At T=1 every class renders the trajectory's midpoint, drawn label-independently:
    # the very same random draws give the very same image whatever the label.
    cfg = MotionConfig(frames=1, size=32)
    for seed in range(5):
        images = [render_clip(label, _clip_rng(seed, "train", 0), cfg) for label in range(len(CLASSES))]
        for img in images[1:]:
            assert np.array_equal(img, images[0])


def test_each_class_moves_as_its_name_says():
    from e3d_zoo.data.synthetic import clip_params

    tracks = {}
    for label, name in enumerate(CLASSES):
        p = clip_params(label, _clip_rng(0, "t", label), CFG)
        frames = render_clip(label, _clip_rng(0, "t", label), CFG)
        tracks[name] = _centroid_and_area(frames, np.asarray(p["bg"]) * 255)
    dx = {n: t[-1, 0] - t[0, 0] for n, t in tracks.items()}
    dy = {n: t[-1, 1] - t[0, 1] for n, t in tracks.items()}
    area = {n: t[-1, 2] / t[0, 2] for n, t in tracks.items()}
    assert dx["move_left"] < -6 and dx["move_right"] > 6
    assert dy["move_up"] < -6 and dy["move_down"] > 6
    assert area["approach"] > 2.5 and area["recede"] < 0.4
    for name in ("rotate_cw", "rotate_ccw"):  # turning in place: area constant within aliasing
        assert 0.8 < area[name] < 1.25


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="frames"):
        MotionConfig(frames=0)
    with pytest.raises(ConfigError, match="split"):
        SyntheticMotion("holdout", 8)


def test_written_videos_decode_to_the_rendered_clips(tmp_path):
    from e3d_zoo.video.decode import VideoReader

    written = write_videos(tmp_path, clips_per_class=1, seed=0, split="test", config=CFG)
    assert len(written) == len(CLASSES)
    rows = (tmp_path / "labels.csv").read_text().splitlines()
    assert rows[0] == "path,label" and len(rows) == 1 + len(CLASSES)
    ds = SyntheticMotion("test", len(CLASSES), seed=0, config=CFG)
    for i, (path, label) in enumerate(written):
        assert path.parent.name == CLASSES[label]
        with VideoReader(path) as reader:
            frames, _ = reader.read()
        assert frames.shape == (8, 32, 32, 3)
        err = np.abs(frames.astype(float) - ds.frames(i).astype(float)).mean()
        assert err < 6.0, f"{path}: mean abs error {err:.1f} after encoding"
