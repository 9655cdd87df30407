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
    assert out.shape == (3, 5, 24, 24) and out.dtype == np.float32
    flat = np.full((2, 24, 24, 3), 255, np.uint8)
    np.testing.assert_allclose(tf(flat), np.full((3, 2, 24, 24), 2.0), atol=1e-6)
    # per-frame preprocessing (what streaming does) equals whole-clip preprocessing
    per_frame = np.concatenate([tf(clip[i:i + 1]) for i in range(len(clip))], axis=1)
    assert np.array_equal(per_frame, out)
    # a torch tensor clip gives the same result as the numpy one
    assert np.array_equal(tf(torch.from_numpy(clip)), out)
    # float frames in [0, 1] are the same pixels as uint8 / 255
    np.testing.assert_allclose(tf(clip.astype(np.float32) / 255), out, atol=1e-5)


# ---- the numpy preprocessing against torch's own resize (the oracle) ---------------------

def _normalized(x, mean, std):
    """(T, C, H, W) float64 pixels in [0, 255] -> (C, T, H, W) ``(x / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((x / 255 - m) / s).permute(1, 0, 2, 3).numpy()


# (T, H, W) frames: a 360p camera frame, odd sizes, portrait, smaller than the crop, extreme aspect
_FRAMES = [(3, 360, 640), (2, 37, 64), (2, 64, 37), (2, 10, 12), (2, 200, 150), (1, 161, 160),
           (2, 20, 300)]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_eval_transform_equals_torchvision_resize_and_center_crop(interpolation):
    """The numpy implementation against torchvision's resize (antialiased) and center_crop
    (zero padding included) on the same pixels in float64: the preprocessing training and
    every runtime share. bilinear (every model's config) to 1e-6; bicubic's negative lobes
    add float32 rounding (2e-6)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    tol = 1e-6 if interpolation != "bicubic" else 2e-6
    rng = np.random.default_rng(0)
    for t, h, w in _FRAMES:
        clip = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
        for size, pct in [(160, 1.0), (16, 0.8), (24, 1.0), ((20, 30), 1.0)]:
            tf = EvalTransform(input_size=size, crop_pct=pct, interpolation=interpolation)
            x = torch.from_numpy(clip).permute(0, 3, 1, 2).double()
            if min(h, w) != tf.resize_size:
                x = TF.resize(x, [tf.resize_size], interpolation=InterpolationMode(interpolation),
                              antialias=interpolation != "nearest")
            ref = _normalized(TF.center_crop(x, list(tf.input_size)), tf.mean, tf.std)
            got = tf(clip)
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, atol=tol, rtol=0, err_msg=f"{(t, h, w)} {size} {pct}")


def test_multi_crop_and_train_transform_equal_torchvision():
    """Multi-view crops and training augmentation (random scale, crop, flip, padding when
    the resized frame is smaller than the crop) against torchvision, to 1e-6."""
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for t, h, w in _FRAMES:
        clip = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
        mc = MultiCropTransform(input_size=(16, 20) if h < 30 else 24, num_crops=3)
        ch, cw = mc.input_size
        x = torch.from_numpy(clip).permute(0, 3, 1, 2).double()
        x = TF.resize(x, [max(ch, cw)], antialias=True)
        x = TF.center_crop(x, [max(x.shape[-2], ch), max(x.shape[-1], cw)])
        views = mc(clip)
        for v, (top, left) in zip(views, mc.crop_offsets(*x.shape[-2:])):
            ref = _normalized(x[..., top:top + ch, left:left + cw], mean, std)
            np.testing.assert_allclose(v, ref, atol=1e-6, rtol=0)
        tr = TrainTransform(input_size=16, short_side_range=(16, 40), flip=True)
        for seed in range(6):
            p = tr.draw(h, w, seed)
            y = TF.resize(torch.from_numpy(clip).permute(0, 3, 1, 2).double(), list(p["resized"]),
                          antialias=True)
            y = TF.center_crop(y, [max(y.shape[-2], 16), max(y.shape[-1], 16)])
            y = y[..., p["top"]:p["top"] + 16, p["left"]:p["left"] + 16]
            if p["flip"]:
                y = TF.horizontal_flip(y)
            np.testing.assert_allclose(tr(clip, generator=seed), _normalized(y, mean, std),
                                       atol=1e-6, rtol=0)


def test_preprocessing_imports_no_torch():
    """The runtime side never imports torch: checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from e3d_runtime.video.transforms import EvalTransform, MultiCropTransform, TrainTransform\n"
            "x = np.zeros((2, 36, 64, 3), np.uint8)\n"
            "EvalTransform(16)(x); MultiCropTransform(16)(x); TrainTransform(16)(x, generator=0)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_grayscale_clip_is_replicated_to_rgb():
    tf = EvalTransform(input_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    gray = _clip(3, 8, 8)[..., :1]
    out = tf(gray)
    assert out.shape == (3, 3, 8, 8)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])


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
    assert a.shape == (3, 4, 16, 16) and np.array_equal(a, b)
    # one draw per clip: identical frames stay identical after augmentation
    assert all(np.array_equal(a[:, 0], a[:, t]) for t in range(4))
    draws = [tf.draw(30, 40, s) for s in range(100)]
    assert {d["short_side"] for d in draws} <= set(range(18, 25))
    assert {d["flip"] for d in draws} == {True, False}
    assert not any(TrainTransform(input_size=16).draw(30, 40, s)["flip"] for s in range(20))
    # a torch.Generator drives the draw too (training's DataLoader seeds with one)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert np.array_equal(tf(clip, generator=g1), tf(clip, generator=g2))


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
