"""Sampling and preprocessing: the shared implementation training, eval and inference use."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e3d_zoo.errors import ConfigError, VideoError
from e3d_zoo.video.sampling import (SamplingConfig, center_clip_indices, clip_indices,
                                    clip_indices_by_time, multi_view_indices, random_clip_indices,
                                    resample_indices, sampling_grid, temporal_view_starts)
from e3d_zoo.video.transforms import EvalTransform, MultiCropTransform, TrainTransform


def test_sampling_config_follows_pretrained_cfg():
    from e3d_zoo import create_model
    from .helpers import make_tiny_spec

    cfg = create_model(make_tiny_spec(frames=4, size=32), num_classes=3).pretrained_cfg
    sc = SamplingConfig.from_cfg(cfg)
    assert (sc.num_frames, sc.frame_stride) == (cfg["num_frames"], cfg["frame_stride"])
    assert sc.span == (cfg["num_frames"] - 1) * cfg["frame_stride"] + 1
    assert SamplingConfig.from_cfg(cfg, frame_stride=1).frame_stride == 1


def test_clip_indices_stride_and_short_video_policies():
    cfg = SamplingConfig(num_frames=4, frame_stride=2)
    assert clip_indices(20, cfg, start=3).tolist() == [3, 5, 7, 9]
    short = SamplingConfig(num_frames=8, frame_stride=1)
    assert clip_indices(5, short).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert clip_indices(5, short.replace(short_video="pad")).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert clip_indices(1, short).tolist() == [0] * 8


def test_multi_view_clips_are_evenly_spread_and_inside_the_video():
    cfg = SamplingConfig(num_frames=4, frame_stride=2)  # span 7
    idx = multi_view_indices(100, cfg, num_clips=5)
    assert idx.shape == (5, 4)
    assert idx.min() >= 0 and idx.max() <= 99
    starts = idx[:, 0]
    assert np.all(np.diff(starts) > 0)
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1
    # one view is the centred clip
    assert temporal_view_starts(100, cfg, 1)[0] == center_clip_indices(100, cfg)[0]
    assert temporal_view_starts(5, cfg, 3).tolist() == [0, 0, 0]


def test_random_clip_is_seeded_and_in_range():
    cfg = SamplingConfig(num_frames=4, frame_stride=3)
    a = [random_clip_indices(50, cfg, np.random.default_rng(7)).tolist() for _ in range(2)]
    assert a[0] == a[1]
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert random_clip_indices(50, cfg, g1).tolist() == random_clip_indices(50, cfg, g2).tolist()
    starts = {int(random_clip_indices(50, cfg, s)[0]) for s in range(200)}
    assert min(starts) >= 0 and max(starts) <= 50 - cfg.span and len(starts) > 10


def test_resample_by_time_handles_variable_frame_rate():
    # frames bunched at the start then sparse: a 10 fps grid picks the nearest frame
    ts = [0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.33, 0.52, 0.70]
    idx = resample_indices(ts, fps=10)
    assert idx.tolist() == [0, 5, 5, 6, 6, 7, 7, 8]
    cfg = SamplingConfig(num_frames=3, sample_fps=5.0)
    assert clip_indices_by_time(ts, cfg).tolist() == [0, 5, 6]
    assert sampling_grid(ts, SamplingConfig(num_frames=2, frame_stride=4)).tolist() == [0, 4, 8]


@pytest.mark.parametrize("bad", [dict(num_frames=0), dict(num_frames=4, frame_stride=0),
                                 dict(num_frames=4, short_video="wrap"),
                                 dict(num_frames=4, sample_fps=-1.0)])
def test_bad_sampling_config_is_named(bad):
    with pytest.raises(ConfigError, match=next(iter(k for k in bad if k != "num_frames"), "num_frames")):
        SamplingConfig(**bad)


def _clip(t=5, h=37, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_eval_transform_shape_normalization_and_per_frame_equivalence():
    tf = EvalTransform(input_size=(3, 24, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    clip = _clip()
    out = tf(clip)
    assert out.shape == (3, 5, 24, 24) and out.dtype == torch.float32
    flat = np.full((2, 24, 24, 3), 255, np.uint8)
    assert torch.allclose(tf(flat), torch.full((3, 2, 24, 24), 2.0))
    # per-frame preprocessing (what streaming does) equals whole-clip preprocessing
    per_frame = torch.cat([tf(clip[i:i + 1]) for i in range(len(clip))], dim=1)
    assert torch.equal(per_frame, out)
    # a torch tensor clip gives the same result as the numpy one
    assert torch.equal(tf(torch.from_numpy(clip)), out)


def test_eval_transform_matches_reference_resize_and_center_crop():
    import torch.nn.functional as F

    tf = EvalTransform(input_size=16, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.8)
    assert tf.resize_size == 20
    clip = _clip(2, 40, 60)
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
    ref = F.interpolate(x, size=(20, 30), mode="bilinear", antialias=True, align_corners=False)
    ref = ref[..., 2:18, 7:23].permute(1, 0, 2, 3) / 255.0
    assert torch.allclose(tf(clip), ref, atol=1.5 / 255)


def test_grayscale_clip_is_replicated_to_rgb():
    tf = EvalTransform(input_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    gray = _clip(3, 8, 8)[..., :1]
    out = tf(gray)
    assert out.shape == (3, 3, 8, 8)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_multi_crop_covers_the_long_side():
    tf = MultiCropTransform(input_size=16, mean=(0, 0, 0), std=(1, 1, 1), num_crops=3)
    clip = np.zeros((2, 16, 48, 3), np.uint8)
    clip[..., :16, 0] = 255   # left third red
    clip[..., 32:, 2] = 255   # right third blue
    views = tf(clip)
    assert views.shape == (3, 3, 2, 16, 16)
    assert views[0, 0].min() == 1 and views[0, 2].max() == 0
    assert views[1].max() == 0
    assert views[2, 2].min() == 1 and views[2, 0].max() == 0
    assert tf.crop_offsets(48, 16).tolist() == [[0, 0], [16, 0], [32, 0]]  # portrait: along H


def test_train_transform_is_seeded_consistent_over_frames_and_in_range():
    tf = TrainTransform(input_size=16, mean=(0, 0, 0), std=(1, 1, 1), short_side_range=(18, 24),
                        flip=True)
    clip = np.repeat(_clip(1, 30, 40), 4, axis=0)  # four identical frames
    a, b = tf(clip, generator=3), tf(clip, generator=3)
    assert a.shape == (3, 4, 16, 16) and torch.equal(a, b)
    # one draw per clip: identical frames stay identical after augmentation
    assert all(torch.equal(a[:, 0], a[:, t]) for t in range(4))
    draws = [tf.draw(30, 40, s) for s in range(100)]
    assert {d["short_side"] for d in draws} <= set(range(18, 25))
    assert {d["flip"] for d in draws} == {True, False}
    assert not any(TrainTransform(input_size=16).draw(30, 40, s)["flip"] for s in range(20))


def test_bad_clip_and_transform_config_are_named():
    tf = EvalTransform(input_size=8)
    with pytest.raises(VideoError, match=r"\(T, H, W, 3\)"):
        tf(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="crop_pct"):
        EvalTransform(input_size=8, crop_pct=1.5)
    with pytest.raises(ConfigError, match="short_side_range"):
        TrainTransform(input_size=16, short_side_range=(8, 12))


def test_online_time_grid_equals_offline_resampling():
    from e3d_zoo.video.sampling import TimeGridSampler

    rng = np.random.default_rng(0)
    for trial in range(20):
        ts = np.concatenate([[0.0], np.cumsum(rng.uniform(0.005, 0.09, 80))])
        fps = float(rng.choice([5.0, 10.0, 24.0]))
        sampler = TimeGridSampler(fps)
        online = [j for i, t in enumerate(ts) for j in sampler.push(i, t)]
        offline = resample_indices(ts, fps).tolist()
        assert online == offline[:len(online)] and len(offline) - len(online) <= 2
