"""A synthetic temporal benchmark: one shape, eight motions, no single-frame cue.

Every clip shows one shape (bar, ellipse, triangle or L) on a noisy background, doing
one of eight things over time:

    move_left, move_right, move_up, move_down, approach, recede, rotate_cw, rotate_ccw

Each motion is a trajectory of (centre, size, angle) over normalised clip time
``tau`` in [-0.5, 0.5]. The trajectory's *midpoint* (centre, size, angle at
``tau = 0``) is drawn from the same distribution for every class (a shape may leave
the frame partly near a clip's ends, in every class alike). A clip
rendered with ``frames=1`` shows exactly the midpoint, so at T = 1 the image carries
no information about the label: only a model that compares frames can solve it.

Clips are a pure function of ``(seed, split, index)``: the same arguments give the
same pixels in any order, in any process, which makes sharded (DDP) loading and
held-out splits deterministic. :func:`write_videos` encodes clips as real video files
(PyAV) in the folder-per-class layout :mod:`e3d_zoo.data.datasets` reads.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..errors import ConfigError, DataError

CLASSES: Tuple[str, ...] = ("move_left", "move_right", "move_up", "move_down",
                            "approach", "recede", "rotate_cw", "rotate_ccw")
SHAPES: Tuple[str, ...] = ("bar", "ellipse", "triangle", "ell")
SPLITS = ("train", "val", "test")
# Classes whose label a horizontal flip changes: the training flip must stay off.
FLIP_SENSITIVE = ("move_left", "move_right", "rotate_cw", "rotate_ccw")


@dataclass(frozen=True)
class MotionConfig:
    """How the benchmark's clips look. Distances are fractions of the frame side."""

    frames: int = 8
    size: int = 32
    travel: float = 0.50      # translation distance over the clip
    zoom: float = 2.0         # size ratio end/start for approach (start/end for recede)
    turn_deg: float = 180.0   # rotation over the clip
    center_spread: float = 0.15  # midpoint centre: uniform in 0.5 +- this
    min_extent: float = 0.16  # shape half-extent range at the midpoint
    max_extent: float = 0.24
    noise: float = 0.06       # per-pixel, per-frame Gaussian noise (0..1 scale)
    supersample: int = 2      # anti-aliasing factor of the renderer

    def __post_init__(self) -> None:
        if not (isinstance(self.frames, int) and self.frames >= 1):
            raise ConfigError(f"synthetic.frames: expected an integer >= 1, found {self.frames!r}")
        if not (isinstance(self.size, int) and self.size >= 8):
            raise ConfigError(f"synthetic.size: expected an integer >= 8, found {self.size!r}")
        if not 0 < self.min_extent <= self.max_extent:
            raise ConfigError("synthetic.min_extent/max_extent: expected 0 < min_extent <= "
                              f"max_extent, found {self.min_extent}, {self.max_extent}")
        if not 0 <= self.center_spread < 0.5:
            raise ConfigError("synthetic.center_spread: expected a fraction in [0, 0.5), "
                              f"found {self.center_spread!r}")
        if self.zoom <= 0 or self.supersample < 1 or self.noise < 0:
            raise ConfigError("synthetic: expected zoom > 0, supersample >= 1, noise >= 0; found "
                              f"{self.zoom}, {self.supersample}, {self.noise}")


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"e3d-motion/{seed}/{split}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership in a unit-size shape in its own coordinates (none has a symmetry the
    motions could hide behind except the bar's and ellipse's 180-degree turn, which is
    larger than any frame-to-frame rotation)."""
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.38)
    if shape == "ellipse":
        return u * u + (v / 0.5) ** 2 <= 1.0
    if shape == "triangle":
        return (v >= -0.6) & (v <= 0.9) & (np.abs(u) <= 0.75 * (0.9 - v) / 1.5)
    if shape == "ell":
        vertical = (u >= -0.8) & (u <= -0.3) & (np.abs(v) <= 0.9)
        foot = (u >= -0.8) & (u <= 0.8) & (v >= -0.9) & (v <= -0.45)
        return vertical | foot
    raise DataError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def clip_params(label: int, rng: np.random.Generator, cfg: MotionConfig) -> Dict[str, object]:
    """The random draws of one clip (midpoint, looks); the label only sets the motion."""
    lo, hi = 0.5 - cfg.center_spread, 0.5 + cfg.center_spread
    return {
        "label": int(label),
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "cx": float(rng.uniform(lo, hi)),
        "cy": float(rng.uniform(lo, hi)),
        "extent": float(rng.uniform(cfg.min_extent, cfg.max_extent)),
        "angle": float(rng.uniform(0, 2 * math.pi)),
        # a bright shape on a dark background, colours random: polarity is fixed so a
        # tiny network learns the motion, not a hundred contrast cases
        "fg": rng.uniform(0.55, 1.0, 3),
        "bg": rng.uniform(0.0, 0.3, 3),
        "noise_seed": int(rng.integers(2 ** 31)),
        # the midpoint's pose jitters by a little per frame, for every class alike
        "jitter": rng.normal(0.0, 0.004, size=(max(cfg.frames, 1), 2)),
    }


def _trajectory(p: Dict[str, object], cfg: MotionConfig) -> List[Tuple[float, float, float, float]]:
    """(cx, cy, extent, angle) per frame."""
    T = cfg.frames
    taus = [0.0] if T == 1 else [i / (T - 1) - 0.5 for i in range(T)]
    name = CLASSES[p["label"]]
    out = []
    for i, tau in enumerate(taus):
        cx, cy, ext, ang = p["cx"], p["cy"], p["extent"], p["angle"]
        if name == "move_left":
            cx -= cfg.travel * tau
        elif name == "move_right":
            cx += cfg.travel * tau
        elif name == "move_up":
            cy -= cfg.travel * tau
        elif name == "move_down":
            cy += cfg.travel * tau
        elif name == "approach":
            ext *= cfg.zoom ** tau
        elif name == "recede":
            ext *= cfg.zoom ** (-tau)
        elif name == "rotate_cw":  # image y points down, so +angle turns clockwise on screen
            ang += math.radians(cfg.turn_deg) * tau
        elif name == "rotate_ccw":
            ang -= math.radians(cfg.turn_deg) * tau
        jx, jy = p["jitter"][i]
        out.append((cx + jx, cy + jy, ext, ang))
    return out


def render_clip(label: int, rng: np.random.Generator, cfg: MotionConfig) -> np.ndarray:
    """One clip as uint8 frames shaped (T, H, W, 3)."""
    p = clip_params(label, rng, cfg)
    S = cfg.size * cfg.supersample
    grid = (np.arange(S, dtype=np.float32) + 0.5) / S
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    noise_rng = np.random.default_rng(p["noise_seed"])
    fg = np.asarray(p["fg"], np.float32)
    bg = np.asarray(p["bg"], np.float32)
    frames = np.empty((cfg.frames, cfg.size, cfg.size, 3), np.uint8)
    for t, (cx, cy, ext, ang) in enumerate(_trajectory(p, cfg)):
        dx, dy = gx - cx, gy - cy
        c, s = math.cos(ang), math.sin(ang)
        u = (c * dx + s * dy) / ext
        v = (-s * dx + c * dy) / ext
        mask = _inside(p["shape"], u, v).astype(np.float32)
        k = cfg.supersample
        mask = mask.reshape(cfg.size, k, cfg.size, k).mean(axis=(1, 3))[..., None]
        img = bg * (1 - mask) + fg * mask
        img = img + noise_rng.normal(0.0, cfg.noise, img.shape).astype(np.float32)
        frames[t] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames


class SyntheticMotion(torch.utils.data.Dataset):
    """The motion benchmark as an in-memory dataset of ``(clip, label)``.

    ``clip`` is float32 (C, T, H, W), normalised with ``mean``/``std`` (0..1 pixel
    scale; ImageNet's by default, like the zoo's pretrained configs, so a trained
    model's config describes the video pipeline's preprocessing too). Labels are balanced: index ``i`` has label ``i % 8``. Clips are rendered
    on first access and kept (``cache=True``), so an epoch after the first is cheap.
    """

    classes = CLASSES
    frame_stride = 1  # a clip is consecutive frames; its encoded video is exactly the clip

    def __init__(self, split: str = "train", num_clips: int = 800, seed: int = 0,
                 config: Optional[MotionConfig] = None, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 std: Sequence[float] = IMAGENET_DEFAULT_STD, cache: bool = True, **overrides):
        if split not in SPLITS:
            raise ConfigError(f"synthetic.split: expected one of {list(SPLITS)}, found {split!r}")
        if not (isinstance(num_clips, int) and num_clips >= 1):
            raise ConfigError(f"synthetic.num_clips: expected an integer >= 1, found {num_clips!r}")
        self.config = MotionConfig(**{**(asdict(config) if config else {}), **overrides})
        self.split, self.num_clips, self.seed = split, num_clips, int(seed)
        self.mean, self.std = tuple(mean), tuple(std)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
        self._cache: Optional[Dict[int, torch.Tensor]] = {} if cache else None

    def __len__(self) -> int:
        return self.num_clips

    def label(self, index: int) -> int:
        return index % len(CLASSES)

    def frames(self, index: int) -> np.ndarray:
        """The raw uint8 clip (T, H, W, 3)."""
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range (the split has {self.num_clips})")
        return render_clip(self.label(index), _clip_rng(self.seed, self.split, index), self.config)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if self._cache is not None and index in self._cache:
            return self._cache[index], self.label(index)
        x = torch.from_numpy(self.frames(index)).permute(3, 0, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        if self._cache is not None:
            self._cache[index] = x
        return x, self.label(index)

    def views(self, index: int, temporal: int = 1, spatial: int = 1) -> torch.Tensor:
        """Multi-view testing: a synthetic clip is exactly one view, repeated."""
        x, _ = self[index]
        return x.unsqueeze(0).expand(temporal * spatial, *x.shape)


def write_videos(root: str | os.PathLike, clips_per_class: int = 2, seed: int = 0,
                 split: str = "test", config: Optional[MotionConfig] = None, fps: int = 8,
                 codec: str = "libx264", list_file: Optional[str] = "labels.csv") -> List[Tuple[Path, int]]:
    """Encode benchmark clips as real video files: ``root/<class>/<split>_<i>.mp4``.

    Also writes ``root/<list_file>`` (``path,label`` rows relative to ``root``) and
    ``root/classes.txt``. Returns ``[(path, label), ...]``. Files appear atomically.
    """
    from ..atomic import atomic_path, atomic_write_text
    from ..errors import require

    av = require("av", "video", "writing synthetic videos")
    cfg = config or MotionConfig()
    root = Path(root)
    ds = SyntheticMotion(split, clips_per_class * len(CLASSES), seed=seed, config=cfg, cache=False)
    written: List[Tuple[Path, int]] = []
    for i in range(len(ds)):
        label = ds.label(i)
        path = root / CLASSES[label] / f"{split}_{i:05d}.mp4"
        frames = ds.frames(i)
        with atomic_path(path) as tmp:
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = cfg.size, cfg.size
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":  # near-lossless: the motion must survive encoding
                    stream.options = {"crf": "10", "preset": "veryfast"}
                for frame in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        written.append((path, label))
    atomic_write_text(root / "classes.txt", "\n".join(CLASSES) + "\n")
    if list_file:
        rows = [f"{p.relative_to(root).as_posix()},{CLASSES[lab]}" for p, lab in written]
        atomic_write_text(root / list_file, "path,label\n" + "\n".join(rows) + "\n")
    return written
