"""Streaming: a prediction every ``hop`` seconds of a file, camera or network stream.

A ring buffer holds the last ``num_frames`` sampled frames, each preprocessed once;
decoding and preprocessing run on a background thread (:func:`.prefetch.prefetch`),
inference on the caller's. Functions of a :class:`~e3d_runtime.video.pipeline.VideoClassifier`;
its ``stream`` method calls :func:`stream`.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional,
                    Tuple)

import numpy as np

from ..errors import ConfigError, VideoError
from .decode import StreamReader, VideoReader, is_stream_url
from .prefetch import prefetch
from .sampling import TimeGridSampler, clip_indices

if TYPE_CHECKING:
    from .pipeline import VideoClassifier


def windows(clf: "VideoClassifier", source: str, hop: float, max_reconnects: int,
            start_time: Optional[float], timing: Dict[str, float],
            reader_options: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
    """Decode + preprocess on the producer side: windows ready for the network."""
    live = is_stream_url(source) or reader_options.get("format") is not None
    # decoder_resize: FFmpeg scales frames to the transform's resize size while converting
    # them to RGB, so the numpy transform only crops and normalizes (not bit-exact)
    size = clf.transform.resize_size if clf.decoder_resize else None
    if live:
        reader: Any = StreamReader(source, max_reconnects=max_reconnects,
                                   threads=clf.decode_threads, short_side=size, **reader_options)
    else:
        reader = VideoReader(source, threads=clf.decode_threads, short_side=size, **reader_options)
    try:
        info = reader.info
        sc = clf.sampling
        grid: Optional[TimeGridSampler] = None
        if sc.sample_fps is None:
            stride = sc.frame_stride
            keep: Optional[Callable[[int, float], bool]] = lambda i, t: i % stride == 0
            grid_rate = (info.fps or 30.0) / stride
        else:
            # by time: which frame fills a slot is known one frame later, so every
            # frame is converted (sample_fps is the opt-in, VFR-exact mode)
            keep, grid_rate = None, sc.sample_fps
            grid = TimeGridSampler(sc.sample_fps)
        hop_frames = max(1, int(round(hop * grid_rate)))
        T = sc.num_frames
        ring: deque = deque(maxlen=T)
        raw: List[Tuple[float, float, np.ndarray]] = []  # sampled, not yet preprocessed
        state = {"since": 0, "emitted": 0}

        def preprocess_pending() -> None:
            # Frames are only needed when a window is due, so they are preprocessed
            # then, as one batch (several times faster per frame than one by one,
            # same result: the transform is per frame). No added latency.
            if raw:
                t_pre = time.perf_counter()
                x = clf.transform(np.stack([img for _, _, img in raw]))  # (C, n, H, W)
                for j, (t, d, _) in enumerate(raw):
                    ring.append((t, d, x[:, j]))
                raw.clear()
                timing["preprocess_s"] += time.perf_counter() - t_pre

        def add(frame: Any) -> Iterator[Dict[str, Any]]:
            raw.append((frame.time, frame.duration or 1.0 / grid_rate, frame.image))
            if len(raw) > T:  # a long hop: only the newest T frames can be used
                del raw[0]
            state["since"] += 1
            if len(ring) + len(raw) >= T and (state["emitted"] == 0 or state["since"] >= hop_frames):
                preprocess_pending()
                t_pre = time.perf_counter()
                out = window_item(source, state["emitted"], list(ring))
                timing["preprocess_s"] += time.perf_counter() - t_pre
                state["since"] = 0
                state["emitted"] += 1
                yield out  # may block while the consumer is busy: not decode time

        it = reader.frames(keep=keep) if live else reader.frames(keep=keep, start_time=start_time)
        n_decoded, prev = 0, None
        t_dec = time.perf_counter()
        for fr in it:
            n_decoded += 1
            if grid is None:
                if fr.image is None:
                    continue
                picked = [fr]
            else:
                picked = [fr if j == fr.index else prev for j in grid.push(fr.index, fr.time)]
                prev = fr
            timing["decode_s"] += time.perf_counter() - t_dec
            for frame in picked:
                yield from add(frame)
            t_dec = time.perf_counter()
        timing["decode_s"] += time.perf_counter() - t_dec
        if grid is not None and prev is not None:
            for _ in grid.finish(prev.duration or 1.0 / grid_rate):
                yield from add(prev)
        emitted = state["emitted"]
        if emitted == 0:
            preprocess_pending()
        if emitted == 0 and ring:
            # shorter than one window: the documented short-video policy fills it
            idx = clip_indices(len(ring), clf.sampling.replace(frame_stride=1))
            items = list(ring)
            yield window_item(source, 0, [items[i] for i in idx])
            emitted = 1
        if not live and start_time is None and info.num_frames and n_decoded < info.num_frames:
            raise VideoError(f"{source}: truncated: the header says {info.num_frames} frames, "
                             f"only {n_decoded} were decodable")
        if n_decoded == 0:
            raise VideoError(f"{source}: no decodable video frames")
    finally:
        reader.close()


def window_item(source: str, index: int, items: List[Tuple[float, float, np.ndarray]]) -> Dict[str, Any]:
    clip = np.stack([x for _, _, x in items], axis=1)  # (C, T, H, W)
    return {"source": source, "window": index, "start_time": items[0][0],
            "end_time": items[-1][0] + items[-1][1], "clip": clip}


def stream(clf: "VideoClassifier", source: str | os.PathLike, *, hop: float = 0.5,
           top_k: Optional[int] = None, smoothing: float = 0.0, batch_windows: Optional[int] = None,
           max_reconnects: int = 3, start_time: Optional[float] = None,
           return_probs: bool = False, timing: Optional[Dict[str, float]] = None,
           reader_options: Optional[Mapping[str, Any]] = None) -> Iterator[Dict[str, Any]]:
    """Sliding-window predictions: one record every ``hop`` seconds of video.

    The ring buffer holds the last ``num_frames`` sampled frames, preprocessed once
    each. ``smoothing`` in [0, 1) is the weight an exponential moving average keeps
    from the past (0: off). ``batch_windows`` windows are run together (default 1, files
    included: one window per call lets decoding the next window overlap inference best; a
    batch of 8 ran ~1.6x slower end to end on 2 cores). ``timing`` (a dict) is filled with
    decode/preprocess/inference seconds.
    """
    if not hop > 0:
        raise ConfigError(f"hop: expected seconds > 0, found {hop!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"smoothing: expected 0 <= smoothing < 1, found {smoothing!r}")
    source = os.fspath(source)
    opts = dict(reader_options or {})
    live = is_stream_url(source) or opts.get("format") is not None
    if batch_windows is not None and not (isinstance(batch_windows, int) and batch_windows >= 1):
        raise ConfigError(f"batch_windows: expected an integer >= 1, found {batch_windows!r}")
    batch = int(batch_windows or 1)
    timing = timing if timing is not None else {}
    for key in ("decode_s", "preprocess_s", "infer_s"):
        timing.setdefault(key, 0.0)
    ema: Optional[np.ndarray] = None
    pending: List[Dict[str, Any]] = []
    # batches submitted and not yet emitted, oldest first: with a backend that runs
    # several requests at once (OpenVINO streams) the next windows of a file start
    # before the previous one's result is read. A live source keeps one in flight, so
    # each result is emitted as soon as it is ready, not a hop later.
    in_flight: Deque[Tuple[List[Dict[str, Any]], List[Tuple[int, Any]]]] = deque()
    # The backend may still be compiling while the first window is decoded
    # (VideoClassifier.from_artifact's compile_in_background): how many requests it runs
    # at once is read when known, and at the latest after the first submit.
    def backend_depth() -> int:
        return 1 if live else max(1, int(getattr(clf.backend, "max_in_flight", 1)))

    depth: Optional[int] = backend_depth() if clf.backend_ready else None

    def flush(drain: bool = False) -> Iterator[Dict[str, Any]]:
        # inference time as the pipeline sees it: submitting (all of it for a backend
        # that runs synchronously) plus waiting for results, on this thread only
        nonlocal depth
        if pending:
            t0 = time.perf_counter()
            # one window needs no stacking copy: the producer already made it contiguous
            clips = pending[0]["clip"][None] if len(pending) == 1 else np.stack([w["clip"] for w in pending])
            started = clf.submit(clips)
            timing["infer_s"] += time.perf_counter() - t0
            in_flight.append((list(pending), started))
            pending.clear()
        if depth is None:
            depth = backend_depth()
        while in_flight and (drain or len(in_flight) >= depth):
            yield from emit(*in_flight.popleft())

    def emit(batch_windows: List[Dict[str, Any]], started: List[Tuple[int, Any]]) -> Iterator[Dict[str, Any]]:
        nonlocal ema
        t0 = time.perf_counter()
        probs = clf.collect(started)
        timing["infer_s"] += time.perf_counter() - t0
        for w, p in zip(batch_windows, probs):
            ema = p if ema is None or smoothing == 0 else smoothing * ema + (1 - smoothing) * p
            rec = {"source": source, "kind": "window", "window": w["window"],
                   "start_time": round(w["start_time"], 6), "end_time": round(w["end_time"], 6),
                   "top": clf.top(ema, top_k)}
            if return_probs:
                rec["probs"] = ema.tolist()
            yield rec

    produced = windows(clf, source, hop, max_reconnects, start_time, timing, opts)
    started_any = False
    for w in prefetch(produced, depth=max(2, batch * (depth or 2))):
        pending.append(w)
        # the first window runs alone: the first prediction comes one window after the
        # start, not `batch` windows (4 s of video at hop 0.5) later; batches follow
        if len(pending) >= (batch if started_any else 1):
            started_any = True
            yield from flush()
    yield from flush(drain=True)
