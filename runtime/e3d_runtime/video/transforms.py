"""Clip preprocessing: one numpy implementation for training, evaluation and inference.

Input of every transform: a clip of RGB frames shaped ``(T, H, W, 3)`` (or ``(T, H, W, 1)``
grayscale), ``uint8`` as the decoder and the synthetic dataset produce it, or float in
``[0, 1]``; anything numpy can view as an array (a torch tensor too). Output: a
normalized ``float32`` numpy array shaped ``(C, T, H, W)``; stack clips for the
network's ``(N, C, T, H, W)`` (``torch.from_numpy`` shares the memory in training).

Resizing is antialiased exactly as ``torch.nn.functional.interpolate(..., antialias=True,
align_corners=False)`` computes it on float input (PIL's separable filters: a triangle
for bilinear, Keys' cubic with a = -0.5 for bicubic, widened by the scale factor when
downscaling); cropping and zero padding follow torchvision's ``resize`` /
``center_crop``. tests/video/test_sampling_transforms.py holds the outputs to 1e-6 of
that torch path. Every operation is per frame, so transforming a clip equals
transforming its frames one by one and concatenating along T: the streaming pipeline
relies on that to preprocess each frame once.

Only what ends up in the crop is computed: each output pixel is a weighted sum of a few
source pixels, so resize + crop + ``(x / 255 - mean) / std`` is two small banded matrix
products per frame (rows, then columns), with the normalization folded into the second.
No pixel outside the crop's footprint is even converted to float.

* :class:`EvalTransform` - deterministic: resize the short side to
  ``floor(crop / crop_pct)``, centre crop ``crop x crop``, normalize with ``mean``/``std``
  (timm's eval convention, from ``model.pretrained_cfg`` or an export's manifest).
* :class:`MultiCropTransform` - the multi-view test protocol: resize the short side to
  ``crop``, take ``num_crops`` (3) crops along the long side -> ``(num_crops, C, T, H, W)``.
* :class:`TrainTransform` - random short-side scale, random crop, optional horizontal
  flip, all drawn from a seeded generator; one draw per clip (every frame of a clip
  gets the same geometry, or motion would be destroyed).

Horizontal flip is off by default: it swaps left/right motion, which changes the
label of direction-sensitive classes.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, VideoError
from .sampling import GeneratorLike, as_numpy_rng

ClipLike = Any  # (T, H, W, C) array-like: numpy array, torch tensor, nested lists
Box = Tuple[int, int, int, int]  # top, left, height, width, in resized-frame pixels

_CUBIC_A = -0.5  # PIL's and torch's antialiased bicubic


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    a = _CUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


# name -> (filter, its support at scale 1); nearest is plain index picking
_FILTERS: Dict[str, Tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0)}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _interp(name: str) -> str:
    key = str(name).lower()
    if key not in INTERPOLATIONS:
        raise ConfigError(f"interpolation: expected one of {list(INTERPOLATIONS)}, found {name!r}")
    return key


def resize_matrix(in_size: int, out_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """``(out_size, in_size)`` float64 weights: output sample i = row i . input samples.

    torch's antialiased kernel (``_compute_indices_weights_aa``): output i is centred at
    ``scale * (i + 0.5)`` in input coordinates, the filter is stretched by ``scale`` when
    downscaling, and each row is normalized to sum to 1.
    """
    interpolation = _interp(interpolation)
    scale = in_size / out_size
    out = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if interpolation == "nearest":  # torch "nearest": floor(i * scale), computed in float32
        src = np.floor(rows.astype(np.float32) * np.float32(scale)).astype(np.int64)
        out[rows, np.minimum(src, in_size - 1)] = 1.0
        return out
    flt, base_support = _FILTERS[interpolation]
    support = base_support * scale if scale >= 1.0 else base_support
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (rows + 0.5)
    lo = np.maximum(np.trunc(centers - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), in_size)
    taps = lo[:, None] + np.arange(int((hi - lo).max()))[None, :]
    weights = flt((taps - centers[:, None] + 0.5) * inv)
    weights[taps >= hi[:, None]] = 0.0
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    np.add.at(out, (np.repeat(rows, taps.shape[1]), np.minimum(taps, in_size - 1).ravel()),
              weights.ravel())
    return out


def _box_rows(matrix: np.ndarray, start: int, length: int) -> np.ndarray:
    """Rows ``start .. start + length`` of a resize matrix; rows outside it are zero
    (torchvision's zero padding when the crop is larger than the resized frame)."""
    out = np.zeros((length, matrix.shape[1]), np.float64)
    lo, hi = max(start, 0), min(start + length, matrix.shape[0])
    if hi > lo:
        out[lo - start:hi - start] = matrix[lo:hi]
    return out


# Rows per banded block: each block multiplies only the source rows its outputs touch.
# 8 was the fastest of 8, 16 and 32 in an ad hoc timing (640x360 -> 160, Zen 4).
_BLOCK = 8


def _blocks(matrix: np.ndarray, rows_per_block: int) -> List[Tuple[int, int, int, int, np.ndarray]]:
    """(out0, out1, in0, in1, weights float32) for the non-zero bands of ``matrix``."""
    blocks = []
    for r0 in range(0, matrix.shape[0], rows_per_block):
        r1 = min(r0 + rows_per_block, matrix.shape[0])
        used = np.flatnonzero(matrix[r0:r1].any(axis=0))
        if used.size:
            c0, c1 = int(used[0]), int(used[-1]) + 1
            blocks.append((r0, r1, c0, c1, np.ascontiguousarray(matrix[r0:r1, c0:c1], np.float32)))
    return blocks


@dataclass(frozen=True)
class _Plan:
    rows: Tuple[int, int]  # source rows / columns the crop reads
    cols: Tuple[int, int]
    height_blocks: list
    width_blocks: list
    offset: np.ndarray  # per channel: -mean / std
    out_hw: Tuple[int, int]


@functools.lru_cache(maxsize=64)
def _plan(src_hw: Tuple[int, int], resized_hw: Tuple[int, int], box: Box, channels: int,
          scale: Tuple[float, ...], offset: Tuple[float, ...], interpolation: str,
          flip: bool) -> _Plan:
    (h, w), (rh, rw), (top, left, bh, bw) = src_hw, resized_hw, box
    my = _box_rows(resize_matrix(h, rh, interpolation), top, bh)
    mx = _box_rows(resize_matrix(w, rw, interpolation), left, bw)
    if flip:
        mx = mx[::-1]
    used_rows, used_cols = np.flatnonzero(my.any(axis=0)), np.flatnonzero(mx.any(axis=0))
    rows = (int(used_rows[0]), int(used_rows[-1]) + 1) if used_rows.size else (0, 0)
    cols = (int(used_cols[0]), int(used_cols[-1]) + 1) if used_cols.size else (0, 0)
    my, mx = my[:, rows[0]:rows[1]], mx[:, cols[0]:cols[1]]
    # columns act on channels-last rows (x0 c0 x0 c1 x0 c2 x1 c0 ...): kron with the
    # per-channel scale applies 1 / (255 * std) in the same product
    kx = np.kron(mx, np.diag(np.asarray(scale, np.float64)))
    return _Plan(rows=rows, cols=cols, height_blocks=_blocks(my, _BLOCK),
                 width_blocks=_blocks(kx, _BLOCK * channels),
                 offset=np.asarray(offset, np.float32), out_hw=(bh, bw))


def as_frames(clip: ClipLike) -> np.ndarray:
    """A ``(T, H, W, 3)`` array view of ``clip`` (grayscale replicated to 3 channels)."""
    x = np.asarray(clip)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise VideoError(f"clip: expected frames shaped (T, H, W, 3), found {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise VideoError("clip: expected at least one frame, found 0")
    if min(x.shape[1:3]) < 1:
        raise VideoError(f"clip: expected frames of at least 1x1 pixels, found {tuple(x.shape)}")
    if x.shape[-1] == 1:  # grayscale: the RGB stem sees 3 equal channels
        x = np.broadcast_to(x, x.shape[:-1] + (3,))
    return x


def resize_crop(clip: ClipLike, resized_hw: Tuple[int, int], box: Box, mean: Sequence[float],
                std: Sequence[float], *, interpolation: str = "bilinear",
                flip: bool = False) -> np.ndarray:
    """Resize every frame to ``resized_hw``, cut ``box`` (top, left, height, width; parts
    outside the resized frame are zero pixels), optionally mirror it, and normalize:
    ``(C, T, height, width)`` float32 with ``(pixel / 255 - mean) / std``.
    """
    frames = as_frames(clip)
    t, h, w, c = frames.shape
    if len(mean) != c or len(std) != c:
        raise ConfigError(f"mean/std: expected {c} values each (one per channel), found "
                          f"mean={tuple(mean)}, std={tuple(std)}")
    unit = 1.0 if np.issubdtype(frames.dtype, np.floating) else 255.0
    scale = tuple(1.0 / (unit * float(s)) for s in std)
    offset = tuple(-float(m) / float(s) for m, s in zip(mean, std))
    plan = _plan((h, w), (int(resized_hw[0]), int(resized_hw[1])), tuple(int(v) for v in box), c,
                 scale, offset, _interp(interpolation), bool(flip))
    return _run(plan, frames)


def _run(plan: _Plan, frames: np.ndarray) -> np.ndarray:
    t, _, _, c = frames.shape
    (r0, r1), (c0, c1), (bh, bw) = plan.rows, plan.cols, plan.out_hw
    out = np.empty((c, t, bh, bw), np.float32)
    rows_out = np.zeros((bh, (c1 - c0) * c), np.float32)
    cols_out = np.zeros((bh, bw * c), np.float32)
    for i in range(t):
        src = frames[i, r0:r1, c0:c1].astype(np.float32).reshape(r1 - r0, (c1 - c0) * c)
        for o0, o1, a, b, weights in plan.height_blocks:
            np.matmul(weights, src[a:b], out=rows_out[o0:o1])
        for o0, o1, a, b, weights in plan.width_blocks:
            np.matmul(rows_out[:, a:b], weights.T, out=cols_out[:, o0:o1])
        pixels = cols_out.reshape(bh, bw, c)
        for ch in range(c):
            np.add(pixels[..., ch], plan.offset[ch], out=out[ch, i])
    return out


def resized_short_side(height: int, width: int, size: int) -> Tuple[int, int]:
    """torchvision's ``resize(x, [size])`` output: short side ``size``, long side
    ``int(size * long / short)`` (truncated)."""
    if width <= height:
        return int(size * height / width), int(size)
    return int(size), int(size * width / height)


def _center_start(crop: int, size: int) -> int:
    """torchvision's centre-crop anchor along one axis (negative: zero padding)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


def _crop_hw(input_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """(H, W) from timm's ``input_size`` (C, H, W), an (H, W) pair or an int."""
    if isinstance(input_size, (int, np.integer)):
        return int(input_size), int(input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"input_size: expected (C, H, W), (H, W) or an int, found {input_size!r}")
    return size  # type: ignore[return-value]


def _resize_size_for_crop(crop: Tuple[int, int], crop_pct: float) -> int:
    return int(math.floor(min(crop) / crop_pct))


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic preprocessing, as ``model.pretrained_cfg`` says."""

    input_size: Tuple[int, int]
    mean: Tuple[float, ...] = (0.485, 0.456, 0.406)
    std: Tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _crop_hw(self.input_size))
        if not 0 < float(self.crop_pct) <= 1.0:
            raise ConfigError(f"crop_pct: expected 0 < crop_pct <= 1, found {self.crop_pct!r}")
        _interp(self.interpolation)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], **overrides: Any) -> "EvalTransform":
        """From a ``pretrained_cfg`` (``input_size``, ``mean``, ``std``, ``crop_pct``,
        ``interpolation``)."""
        if "input_size" not in cfg and "input_size" not in overrides:
            raise ConfigError("pretrained_cfg: missing 'input_size'; expected a config made by "
                              "e3d_zoo.create_model or an e3d-export manifest")
        kw = {"input_size": cfg.get("input_size"), "mean": tuple(cfg.get("mean", cls.mean)),
              "std": tuple(cfg.get("std", cls.std)), "crop_pct": float(cfg.get("crop_pct") or 1.0),
              "interpolation": cfg.get("interpolation") or "bilinear"}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    @property
    def resize_size(self) -> int:
        return _resize_size_for_crop(self.input_size, self.crop_pct)

    def geometry(self, height: int, width: int) -> Tuple[Tuple[int, int], Box]:
        """(resized (H, W), crop box) for frames of ``height x width``."""
        size = self.resize_size
        resized = (height, width) if min(height, width) == size else \
            resized_short_side(height, width, size)
        ch, cw = self.input_size
        return resized, (_center_start(ch, resized[0]), _center_start(cw, resized[1]), ch, cw)

    def __call__(self, clip: ClipLike) -> np.ndarray:
        frames = as_frames(clip)
        resized, box = self.geometry(frames.shape[1], frames.shape[2])
        return resize_crop(frames, resized, box, self.mean, self.std,
                           interpolation=self.interpolation)


@dataclass(frozen=True)
class MultiCropTransform:
    """Spatial views for multi-view testing: ``(num_crops, C, T, H, W)``.

    The short side is resized to the crop size, and ``num_crops`` crops are spread
    evenly along the long side (3: left/top, centre, right/bottom), so together they
    cover the whole frame. ``num_crops=1`` is the centre crop.
    """

    input_size: Tuple[int, int]
    mean: Tuple[float, ...] = (0.485, 0.456, 0.406)
    std: Tuple[float, ...] = (0.229, 0.224, 0.225)
    num_crops: int = 3
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _crop_hw(self.input_size))
        if int(self.num_crops) < 1:
            raise ConfigError(f"num_crops: expected an integer >= 1, found {self.num_crops!r}")
        _interp(self.interpolation)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], num_crops: int = 3, **overrides: Any) -> "MultiCropTransform":
        base = EvalTransform.from_cfg(cfg)
        kw = {"input_size": base.input_size, "mean": base.mean, "std": base.std,
              "interpolation": base.interpolation, "num_crops": num_crops}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def crop_offsets(self, height: int, width: int) -> np.ndarray:
        """(top, left) of each crop in a frame already resized to ``height x width``."""
        ch, cw = self.input_size
        n = self.num_crops
        frac = np.full(n, 0.5) if n == 1 else np.linspace(0.0, 1.0, n)
        if width >= height:
            lefts = np.round(frac * max(width - cw, 0)).astype(int)
            tops = np.full(n, max(height - ch, 0) // 2)
        else:
            tops = np.round(frac * max(height - ch, 0)).astype(int)
            lefts = np.full(n, max(width - cw, 0) // 2)
        return np.stack([tops, lefts], axis=1)

    def __call__(self, clip: ClipLike) -> np.ndarray:
        frames = as_frames(clip)
        ch, cw = self.input_size
        size = max(ch, cw)
        h, w = frames.shape[1:3]
        rh, rw = (h, w) if min(h, w) == size else resized_short_side(h, w, size)
        # a frame narrower than a non-square crop is first zero-padded to fit it
        pad_top, pad_left = -_center_start(max(rh, ch), rh), -_center_start(max(rw, cw), rw)
        tops_lefts = self.crop_offsets(max(rh, ch), max(rw, cw)) - np.array([pad_top, pad_left])
        # one pass over the union of the crops, then views of it
        top, left = int(tops_lefts[:, 0].min()), int(tops_lefts[:, 1].min())
        union = (top, left, int(tops_lefts[:, 0].max()) + ch - top, int(tops_lefts[:, 1].max()) + cw - left)
        x = resize_crop(frames, (rh, rw), union, self.mean, self.std, interpolation=self.interpolation)
        return np.stack([x[:, :, t - top:t - top + ch, l - left:l - left + cw] for t, l in tops_lefts])


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation: random short-side scale, random crop, optional flip.

    ``short_side_range`` is the closed range of integer short-side lengths to draw
    from (default: ``input_size * (8/7, 10/7)``, i.e. 256-320 for a 224 crop, the
    usual 3D-CNN recipe). One draw per clip, from ``generator`` (an int seed, a numpy
    Generator or a torch.Generator): the same generator state gives the same clip.
    """

    input_size: Tuple[int, int]
    mean: Tuple[float, ...] = (0.485, 0.456, 0.406)
    std: Tuple[float, ...] = (0.229, 0.224, 0.225)
    short_side_range: Optional[Tuple[int, int]] = None
    flip: bool = False
    flip_prob: float = 0.5
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        hw = _crop_hw(self.input_size)
        object.__setattr__(self, "input_size", hw)
        rng = self.short_side_range
        if rng is None:
            rng = (int(round(max(hw) * 8 / 7)), int(round(max(hw) * 10 / 7)))
        rng = (int(rng[0]), int(rng[1]))
        if not max(hw) <= rng[0] <= rng[1]:
            raise ConfigError(f"short_side_range: expected crop size {max(hw)} <= min <= max, "
                              f"found {rng}")
        object.__setattr__(self, "short_side_range", rng)
        if not 0.0 <= float(self.flip_prob) <= 1.0:
            raise ConfigError(f"flip_prob: expected a probability in [0, 1], found {self.flip_prob!r}")
        _interp(self.interpolation)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], **overrides: Any) -> "TrainTransform":
        base = EvalTransform.from_cfg(cfg)
        kw = {"input_size": base.input_size, "mean": base.mean, "std": base.std,
              "interpolation": base.interpolation}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def draw(self, height: int, width: int, generator: GeneratorLike = None) -> dict:
        """The random parameters for one clip of ``height x width`` frames."""
        rng = as_numpy_rng(generator)
        short = int(rng.integers(self.short_side_range[0], self.short_side_range[1] + 1))
        if height <= width:
            rh, rw = short, max(int(round(width * short / height)), short)
        else:
            rh, rw = max(int(round(height * short / width)), short), short
        ch, cw = self.input_size
        top = int(rng.integers(0, max(rh - ch, 0) + 1))
        left = int(rng.integers(0, max(rw - cw, 0) + 1))
        flip = bool(self.flip and rng.random() < self.flip_prob)
        return {"short_side": short, "resized": (rh, rw), "top": top, "left": left, "flip": flip}

    def __call__(self, clip: ClipLike, generator: GeneratorLike = None) -> np.ndarray:
        frames = as_frames(clip)
        p = self.draw(frames.shape[1], frames.shape[2], generator)
        (rh, rw), (ch, cw) = p["resized"], self.input_size
        # a resized frame smaller than the crop is zero-padded around its centre first
        top = p["top"] + _center_start(max(rh, ch), rh)
        left = p["left"] + _center_start(max(rw, cw), rw)
        return resize_crop(frames, (rh, rw), (top, left, ch, cw), self.mean, self.std,
                           interpolation=self.interpolation, flip=p["flip"])
