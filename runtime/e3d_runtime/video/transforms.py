"""Clip preprocessing: one implementation for training, evaluation and inference.

Input of every transform: a clip of RGB frames, ``uint8`` shaped ``(T, H, W, 3)``
(numpy array or torch tensor; what the decoder and the synthetic dataset produce).
A float clip is taken to be in ``[0, 1]``. Output: a normalized ``float32`` torch
tensor shaped ``(C, T, H, W)``; stack clips for the network's ``(N, C, T, H, W)``.

All operations are per frame and vectorized over the whole clip (torchvision's
tensor kernels on a ``(T, C, H, W)`` batch), so transforming a clip equals
transforming its frames one by one and concatenating them along T: the streaming
pipeline relies on that to preprocess each frame only once.

* :class:`EvalTransform` - deterministic: resize the short side to
  ``floor(crop / crop_pct)``, centre crop ``crop x crop``, scale to [0, 1], normalize
  with ``mean``/``std`` (timm's eval convention, from ``model.pretrained_cfg``).
* :class:`MultiCropTransform` - the multi-view test protocol: resize the short side to
  ``crop``, take ``num_crops`` (3) crops along the long side -> ``(num_crops, C, T, H, W)``.
* :class:`TrainTransform` - random short-side scale, random crop, optional horizontal
  flip, all drawn from a seeded generator; one draw per clip (every frame of a clip
  gets the same geometry, or motion would be destroyed).

Horizontal flip is off by default: it swaps left/right motion, which changes the
label of direction-sensitive classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, VideoError
from .sampling import GeneratorLike, as_numpy_rng

ClipLike = Union[np.ndarray, torch.Tensor]

_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def _interp(name: str) -> InterpolationMode:
    try:
        return _INTERPOLATIONS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"interpolation: expected one of {sorted(_INTERPOLATIONS)}, "
                          f"found {name!r}") from None


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


def to_tchw(clip: ClipLike) -> torch.Tensor:
    """A ``(T, H, W, 3)`` clip as a ``(T, 3, H, W)`` tensor view (no copy when possible)."""
    x = torch.from_numpy(np.ascontiguousarray(clip)) if isinstance(clip, np.ndarray) else clip
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] not in (1, 3):
        shape = tuple(getattr(clip, "shape", ()))
        raise VideoError(f"clip: expected frames shaped (T, H, W, 3), found {shape}")
    if x.shape[0] < 1:
        raise VideoError("clip: expected at least one frame, found 0")
    if x.shape[-1] == 1:  # grayscale: replicate so the RGB stem sees 3 equal channels
        x = x.expand(*x.shape[:-1], 3)
    return x.permute(0, 3, 1, 2)


def resize_short_side(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize ``(..., C, H, W)`` so that min(H, W) == ``size``, keeping the aspect ratio."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    # antialias: downscaling 640x360 to 160 without it aliases fine texture
    return TF.resize(x, [int(size)], interpolation=_interp(interpolation), antialias=True)


def center_crop(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Centre ``size`` = (H, W) crop of ``(..., C, H, W)``, zero-padded if the frame is smaller."""
    return TF.center_crop(x, list(size))


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(T, C, H, W)`` uint8 (or float in [0, 1]) -> normalized float32 ``(C, T, H, W)``.

    ``(x / 255 - mean) / std`` folded into one multiply-subtract per channel, written
    straight into the output layout: on 2 cores this is several times faster than
    converting the (channels-last) crop to float and permuting it in torch.
    """
    if x.shape[1] != len(mean) or len(mean) != len(std):
        raise ConfigError(f"mean/std: expected {x.shape[1]} values each (one per channel), "
                          f"found mean={tuple(mean)}, std={tuple(std)}")
    frames = x.permute(0, 2, 3, 1).contiguous().numpy()  # (T, H, W, C)
    unit = 1.0 if x.is_floating_point() else 255.0
    out = np.empty((frames.shape[3],) + frames.shape[:3], dtype=np.float32)
    for ch, (m, s) in enumerate(zip(mean, std)):
        np.multiply(frames[..., ch], np.float32(1.0 / (unit * s)), out=out[ch], dtype=np.float32)
        out[ch] -= np.float32(m / s)
    return torch.from_numpy(out)


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
                              "e3d_zoo.create_model")
        kw = {"input_size": cfg.get("input_size"), "mean": tuple(cfg.get("mean", cls.mean)),
              "std": tuple(cfg.get("std", cls.std)), "crop_pct": float(cfg.get("crop_pct") or 1.0),
              "interpolation": cfg.get("interpolation") or "bilinear"}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    @property
    def resize_size(self) -> int:
        return _resize_size_for_crop(self.input_size, self.crop_pct)

    def __call__(self, clip: ClipLike) -> torch.Tensor:
        x = resize_short_side(to_tchw(clip), self.resize_size, self.interpolation)
        return normalize(center_crop(x, self.input_size), self.mean, self.std)


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

    def __call__(self, clip: ClipLike) -> torch.Tensor:
        ch, cw = self.input_size
        x = resize_short_side(to_tchw(clip), max(ch, cw), self.interpolation)
        h, w = x.shape[-2:]
        if h < ch or w < cw:  # non-square crops on a frame narrower than the crop
            x = center_crop(x, (max(h, ch), max(w, cw)))
            h, w = x.shape[-2:]
        views = [x[..., t:t + ch, l:l + cw] for t, l in self.crop_offsets(h, w)]
        return torch.stack([normalize(v, self.mean, self.std) for v in views])


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

    def __call__(self, clip: ClipLike, generator: GeneratorLike = None) -> torch.Tensor:
        x = to_tchw(clip)
        p = self.draw(int(x.shape[-2]), int(x.shape[-1]), generator)
        x = TF.resize(x, list(p["resized"]), interpolation=_interp(self.interpolation), antialias=True)
        ch, cw = self.input_size
        if x.shape[-2] < ch or x.shape[-1] < cw:
            x = center_crop(x, (max(x.shape[-2], ch), max(x.shape[-1], cw)))
        x = x[..., p["top"]:p["top"] + ch, p["left"]:p["left"] + cw]
        if p["flip"]:
            x = TF.horizontal_flip(x)
        return normalize(x, self.mean, self.std)
