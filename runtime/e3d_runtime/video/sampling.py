"""Which frames make a clip: one implementation for training, evaluation and inference.

Everything here is a pure function from "how many frames are there (or at which
times)" to integer frame indices, so the same numbers come out whether the frames
come from a decoded file, a live stream's ring buffer or a synthetic dataset.

Vocabulary
----------
* ``num_frames`` (T): frames per clip, the network's input length.
* ``frame_stride``: take every ``frame_stride``-th decoded frame. A clip then spans
  ``span = (T - 1) * frame_stride + 1`` source frames.
* ``sample_fps``: alternatively sample by *time*, one frame every ``1/sample_fps``
  seconds, nearest decoded frame (correct for variable-frame-rate video, where a
  fixed index stride is not a fixed time step). When set, it wins over ``frame_stride``.

Short videos (fewer than ``span`` frames) are handled by the documented policy
``short_video``:

* ``"loop"`` (default): the index grid runs past the end and wraps around to the
  first frame, so a clip of a 5-frame video at T=8, stride 1 is frames
  ``0 1 2 3 4 0 1 2``. Motion keeps its direction, which matters for
  direction-sensitive classes (Something-Something, the synthetic motion benchmark).
* ``"pad"``: indices past the end repeat the last frame (``0 1 2 3 4 4 4 4``).

A video with zero frames has no clip: callers get :class:`~e3d_zoo.errors.VideoError`
from the decoder before sampling is reached; the functions here raise
:class:`~e3d_zoo.errors.ConfigError` on ``num_available < 1`` all the same.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # torch is only needed when a caller passes a torch.Generator
    import torch

from ..errors import ConfigError

SHORT_VIDEO_POLICIES = ("loop", "pad")

GeneratorLike = Union[None, int, np.random.Generator, "torch.Generator"]


@dataclass(frozen=True)
class SamplingConfig:
    """How a clip is sampled from a frame sequence. Build it from a model's config with
    :meth:`from_cfg` so that sampling follows ``model.pretrained_cfg``."""

    num_frames: int
    frame_stride: int = 1
    sample_fps: Optional[float] = None
    short_video: str = "loop"

    def __post_init__(self) -> None:
        if int(self.num_frames) < 1:
            raise ConfigError(f"num_frames: expected an integer >= 1, found {self.num_frames!r}")
        if int(self.frame_stride) < 1:
            raise ConfigError(f"frame_stride: expected an integer >= 1, found {self.frame_stride!r}")
        if self.sample_fps is not None and not float(self.sample_fps) > 0:
            raise ConfigError(f"sample_fps: expected a positive number, found {self.sample_fps!r}")
        if self.short_video not in SHORT_VIDEO_POLICIES:
            raise ConfigError(f"short_video: expected one of {SHORT_VIDEO_POLICIES}, "
                              f"found {self.short_video!r}")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any], **overrides: Any) -> "SamplingConfig":
        """From a ``pretrained_cfg`` dict (keys ``num_frames``, ``frame_stride``, and
        optionally ``sample_fps``, ``short_video``); ``overrides`` win."""
        if "num_frames" not in cfg and "num_frames" not in overrides:
            raise ConfigError("pretrained_cfg: missing 'num_frames' (frames per clip); "
                              "expected a config made by e3d_zoo.create_model")
        values = {"num_frames": cfg.get("num_frames"), "frame_stride": cfg.get("frame_stride", 1),
                  "sample_fps": cfg.get("sample_fps"), "short_video": cfg.get("short_video", "loop")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(num_frames=int(values["num_frames"]), frame_stride=int(values["frame_stride"]),
                   sample_fps=None if values["sample_fps"] is None else float(values["sample_fps"]),
                   short_video=str(values["short_video"]))

    def replace(self, **changes: Any) -> "SamplingConfig":
        return replace(self, **changes)

    @property
    def span(self) -> int:
        """Source frames a clip covers at ``frame_stride`` (index-based sampling)."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def span_seconds(self, fps: float) -> float:
        """Seconds of video a clip covers, for a stream at ``fps``."""
        if self.sample_fps is not None:
            return self.num_frames / self.sample_fps
        return self.num_frames * self.frame_stride / fps


def _check_available(num_available: int) -> int:
    n = int(num_available)
    if n < 1:
        raise ConfigError(f"cannot sample a clip from {num_available} frames; expected >= 1")
    return n


def _apply_short_policy(idx: np.ndarray, n: int, policy: str) -> np.ndarray:
    if policy == "loop":
        return np.mod(idx, n)
    return np.minimum(idx, n - 1)


def clip_indices(num_available: int, cfg: SamplingConfig, start: int = 0) -> np.ndarray:
    """Frame indices (int64, length ``num_frames``) of the clip starting at ``start``.

    ``start`` is clamped to ``[0, num_available - 1]``; indices past the end follow
    ``cfg.short_video``.
    """
    n = _check_available(num_available)
    start = min(max(int(start), 0), n - 1)
    idx = start + np.arange(cfg.num_frames, dtype=np.int64) * cfg.frame_stride
    return _apply_short_policy(idx, n, cfg.short_video)


def center_clip_indices(num_available: int, cfg: SamplingConfig) -> np.ndarray:
    """The single clip centred in the video (the one-view evaluation protocol)."""
    n = _check_available(num_available)
    return clip_indices(n, cfg, int(temporal_view_starts(n, cfg, 1)[0]))


def temporal_view_starts(num_available: int, cfg: SamplingConfig, num_clips: int) -> np.ndarray:
    """Start indices of ``num_clips`` clips spread evenly over the video.

    The video is cut into ``num_clips`` equal segments of the range of valid starts
    and each clip starts at its segment's centre (the multi-view test protocol of
    the 3D-CNN papers; e.g. ``num_clips=1`` gives the centred clip). When the video
    is shorter than one clip every view starts at 0.
    """
    n = _check_available(num_available)
    if int(num_clips) < 1:
        raise ConfigError(f"num_clips: expected an integer >= 1, found {num_clips!r}")
    free = n - cfg.span + 1  # number of valid start positions
    if free <= 1:
        return np.zeros(int(num_clips), dtype=np.int64)
    step = free / num_clips
    return np.floor(step * (np.arange(num_clips) + 0.5)).astype(np.int64)


def multi_view_indices(num_available: int, cfg: SamplingConfig, num_clips: int) -> np.ndarray:
    """Indices of ``num_clips`` evenly spread clips, shaped ``(num_clips, num_frames)``."""
    n = _check_available(num_available)
    starts = temporal_view_starts(n, cfg, num_clips)
    idx = starts[:, None] + np.arange(cfg.num_frames, dtype=np.int64)[None, :] * cfg.frame_stride
    return _apply_short_policy(idx, n, cfg.short_video)


def as_numpy_rng(generator: GeneratorLike) -> np.random.Generator:
    """One random source from whatever the caller seeds with (None: fresh entropy)."""
    if generator is None:
        return np.random.default_rng()
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    torch = sys.modules.get("torch")  # a torch.Generator implies torch is loaded: never import it
    if torch is not None and isinstance(generator, torch.Generator):
        # Draw a seed from the torch generator so that it alone drives the result.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return np.random.default_rng(seed)
    raise ConfigError(f"generator: expected None, an int seed, numpy Generator or torch.Generator, "
                      f"found {type(generator).__name__}")


def random_clip_indices(num_available: int, cfg: SamplingConfig,
                        generator: GeneratorLike = None) -> np.ndarray:
    """Training: a clip at a uniformly random start (seeded by ``generator``)."""
    n = _check_available(num_available)
    rng = as_numpy_rng(generator)
    free = max(n - cfg.span + 1, 1)
    return clip_indices(n, cfg, int(rng.integers(0, free)))


def resample_indices(timestamps: Sequence[float], fps: float,
                     start_time: Optional[float] = None,
                     end_time: Optional[float] = None) -> np.ndarray:
    """Indices of the frames nearest to a constant-rate time grid at ``fps``.

    ``timestamps`` are the presentation times (seconds, non-decreasing) of the decoded
    frames, e.g. of a variable-frame-rate video. The grid runs from ``start_time``
    (default: the first frame) in steps of ``1/fps`` while it stays before
    ``end_time`` (default: the last frame's time plus one median frame duration).
    A frame may be picked twice when the grid is denser than the video.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ConfigError("timestamps: expected a non-empty 1-D sequence of frame times")
    if not fps > 0:
        raise ConfigError(f"fps: expected a positive number, found {fps!r}")
    t0 = ts[0] if start_time is None else float(start_time)
    if end_time is None:
        last_dur = float(np.median(np.diff(ts))) if ts.size > 1 else 1.0 / fps
        end_time = ts[-1] + last_dur
    count = max(int(np.ceil((float(end_time) - t0) * fps - 1e-9)), 1)
    grid = t0 + np.arange(count) / fps
    # nearest neighbour on a sorted array: compare the left and right candidate
    right = np.clip(np.searchsorted(ts, grid), 0, ts.size - 1)
    left = np.clip(right - 1, 0, ts.size - 1)
    pick_left = np.abs(grid - ts[left]) <= np.abs(ts[right] - grid)
    return np.where(pick_left, left, right).astype(np.int64)


def clip_indices_by_time(timestamps: Sequence[float], cfg: SamplingConfig,
                         start_time: Optional[float] = None) -> np.ndarray:
    """A clip sampled by time at ``cfg.sample_fps`` (VFR-safe); short-video policy applies.

    Falls back to index-based :func:`clip_indices` when ``cfg.sample_fps`` is None.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if cfg.sample_fps is None:
        start = 0 if start_time is None else int(np.searchsorted(ts, float(start_time)))
        return clip_indices(ts.size, cfg, start)
    grid_idx = resample_indices(ts, cfg.sample_fps, start_time=start_time)
    return grid_idx[_apply_short_policy(np.arange(cfg.num_frames), grid_idx.size, cfg.short_video)]


def sampling_grid(timestamps: Sequence[float], cfg: SamplingConfig) -> np.ndarray:
    """The indices of every frame a clip can ever use, in order.

    Index-based: every ``frame_stride``-th frame; time-based: the nearest frames of a
    ``sample_fps`` grid. A clip is then ``num_frames`` consecutive grid entries, which
    is what the streaming ring buffer holds.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    if cfg.sample_fps is not None:
        return resample_indices(ts, cfg.sample_fps)
    return np.arange(0, ts.size, cfg.frame_stride, dtype=np.int64)


class TimeGridSampler:
    """:func:`resample_indices` computed online, for streams whose end is unknown.

    Feed frame ``(index, time)`` in presentation order to :meth:`push`; it returns the
    indices picked for the grid slots that the new frame settles (a slot at time
    ``g`` is settled once a frame at or after ``g`` has arrived: the nearest frame is
    then either that one or the one before it, ties going to the earlier frame, as
    offline). The result equals :func:`resample_indices` on the same times, except
    that the grid's end is the last frame's time plus its own duration (offline: plus
    the median frame duration).
    """

    def __init__(self, fps: float, start_time: Optional[float] = None):
        if not fps > 0:
            raise ConfigError(f"fps: expected a positive number, found {fps!r}")
        self.fps = float(fps)
        self.start = start_time
        self.slot = 0
        self.prev: Optional[tuple] = None

    def _grid(self, k: int) -> float:
        return self.start + k / self.fps  # type: ignore[operator]

    def push(self, index: int, time: float) -> list:
        if self.start is None:
            self.start = float(time)
        picks = []
        while self._grid(self.slot) <= time:
            g = self._grid(self.slot)
            if self.prev is not None and abs(g - self.prev[1]) <= abs(time - g):
                picks.append(self.prev[0])
            else:
                picks.append(index)
            self.slot += 1
        self.prev = (index, float(time))
        return picks

    def finish(self, last_duration: float) -> list:
        """Slots after the last frame, up to its end: they all get the last frame."""
        picks = []
        if self.prev is None:
            return picks
        end = self.prev[1] + float(last_duration)
        while self._grid(self.slot) < end - 1e-9:
            picks.append(self.prev[0])
            self.slot += 1
        return picks
