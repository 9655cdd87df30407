"""Whole-video classification: N temporal clips x M spatial crops per video, averaged.

The multi-view test protocol of the 3D-CNN papers. Functions of a
:class:`~e3d_runtime.video.pipeline.VideoClassifier` (its sampling, transforms,
batching and backend); the classifier's ``classify``/``classify_many``/``views``
methods call them.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional

import numpy as np

from ..errors import E3DError
from .decode import VideoReader
from .prefetch import prefetch
from .sampling import multi_view_indices, sampling_grid
from .transforms import MultiCropTransform

if TYPE_CHECKING:
    from .pipeline import VideoClassifier


def video_views(clf: "VideoClassifier", source: str, num_clips: int, num_crops: int) -> Dict[str, Any]:
    """Decode + preprocess: every view of one video, ``(clips*crops, C, T, H, W)``."""
    t0 = time.perf_counter()
    sc = clf.sampling
    with VideoReader(source, threads=clf.decode_threads) as reader:
        info = reader.info
        n = info.num_frames
        ts = None
        if sc.sample_fps is not None or n is None:
            ts = reader.scan()  # frame count / times are not in the header: one cheap pass
            n = int(ts.size)
    if ts is not None and sc.sample_fps is not None:
        grid = sampling_grid(ts, sc)
        idx = grid[multi_view_indices(grid.size, sc.replace(frame_stride=1, sample_fps=None),
                                      num_clips)]
    else:
        idx = multi_view_indices(n, sc, num_clips)
    uniq, inverse = np.unique(idx, return_inverse=True)
    with VideoReader(source, threads=clf.decode_threads) as reader:
        spans = idx.max(axis=1) - idx.min(axis=1) + 1
        if ts is None and reader.is_constant_rate() and spans.sum() * 2 < n:
            # clips cover little of a long video: seek to each clip instead of
            # decoding everything in between
            parts = [reader.read_seek(np.unique(row)) for row in idx]
            lookup = {int(i): (f, t) for row, (fs, tt) in zip(idx, parts)
                      for i, f, t in zip(np.unique(row), fs, tt)}
            frames = np.stack([lookup[int(i)][0] for i in uniq])
            times = np.asarray([lookup[int(i)][1] for i in uniq])
        else:
            frames, times = reader.read(uniq)
        decoded = reader.frames_decoded
    t1 = time.perf_counter()
    crops = clf.crops if num_crops == clf.num_crops else MultiCropTransform.from_cfg(
        clf.cfg, num_crops=num_crops)
    views = []
    for clip_idx in inverse.reshape(idx.shape):
        clip = frames[clip_idx]
        views.append(crops(clip) if num_crops > 1 else clf.transform(clip)[None])
    x = np.concatenate(views)  # clip-major: view = clip * crops + crop
    t2 = time.perf_counter()
    return {"source": source, "clips": x, "info": info, "frames_total": int(n),
            "frames_decoded": int(decoded),
            "view_times": times[inverse.reshape(idx.shape)][:, [0, -1]],
            "decode_s": t1 - t0, "preprocess_s": t2 - t1}


def finish_video(clf: "VideoClassifier", views: Dict[str, Any], top_k: Optional[int],
                 return_probs: bool, probs: Optional[np.ndarray] = None,
                 infer_s: float = 0.0) -> Dict[str, Any]:
    """The record of one video from its views (run now unless ``probs`` are given)."""
    if probs is None:
        t0 = time.perf_counter()
        probs = clf.predict(views["clips"])
        infer_s = time.perf_counter() - t0
    mean = probs.mean(axis=0)
    info = views["info"]
    rec = {"source": views["source"], "kind": "video", "top": clf.top(mean, top_k),
           "num_views": int(probs.shape[0]), "num_frames": views["frames_total"],
           "frames_decoded": views["frames_decoded"],
           "duration": info.duration, "fps": info.fps, "width": info.width,
           "height": info.height, "rotation": info.rotation,
           "mirrored": info.mirrored,
           "timing": {"decode_s": views["decode_s"], "preprocess_s": views["preprocess_s"],
                      "infer_s": infer_s}}
    if return_probs:
        rec["probs"] = mean.tolist()
    return rec


def classify_many(clf: "VideoClassifier", sources: Iterable[str | os.PathLike], *,
                  num_clips: Optional[int] = None, num_crops: Optional[int] = None,
                  top_k: Optional[int] = None, return_probs: bool = False) -> Iterator[Dict[str, Any]]:
    """Records for many inputs, in order, decoding the next videos while the current
    ones run. Views of consecutive videos share inference batches (``batch_size``
    clips per call), which matters when a video has fewer views than a batch. A
    failing input yields ``{"source", "kind": "error", "error"}``; the rest go on."""
    nc, ncr = num_clips or clf.num_clips, num_crops or clf.num_crops
    views_per_video = nc * ncr
    src_list = list(sources)

    def decoded() -> Iterator[Dict[str, Any]]:
        for src in src_list:
            try:
                yield video_views(clf, os.fspath(src), nc, ncr)
            except E3DError as exc:
                yield {"source": os.fspath(src), "error": exc}

    pending: List[Dict[str, Any]] = []

    def flush() -> Iterator[Dict[str, Any]]:
        ready = [it for it in pending if "error" not in it]
        probs_all: Optional[np.ndarray] = None
        infer_s = 0.0
        failure: Optional[E3DError] = None
        if ready:
            t0 = time.perf_counter()
            try:
                probs_all = clf.predict(np.concatenate([it["clips"] for it in ready]))
            except E3DError as exc:
                failure = exc
            infer_s = time.perf_counter() - t0
        offset = 0
        for it in pending:
            if "error" in it:
                yield {"source": it["source"], "kind": "error", "error": str(it["error"])}
                continue
            n = int(it["clips"].shape[0])
            if failure is not None:
                yield {"source": it["source"], "kind": "error", "error": str(failure)}
            else:
                assert probs_all is not None
                yield finish_video(clf, it, top_k, return_probs, probs_all[offset:offset + n],
                                   infer_s * n / max(probs_all.shape[0], 1))
            offset += n
        pending.clear()

    depth = max(2, -(-clf.batch_size // max(views_per_video, 1)))
    for item in prefetch(decoded(), depth=depth):
        pending.append(item)
        if sum(int(it["clips"].shape[0]) for it in pending if "error" not in it) >= clf.batch_size:
            yield from flush()
    if pending:
        yield from flush()
