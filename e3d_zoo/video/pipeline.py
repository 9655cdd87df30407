"""Video in, actions out: whole-video multi-view classification and streaming.

    from e3d_zoo.video import VideoClassifier
    clf = VideoClassifier.from_model("e3d_s", backend="openvino")   # or from_artifact("m.onnx")
    clf.classify("clip.mp4")                         # N temporal clips x 3 crops, averaged
    for window in clf.stream("rtsp://cam/live", hop=0.5):           # a prediction every hop
        print(window["end_time"], window["top"][0])

Everything the model needs to see (frames, stride, size, mean/std, crop_pct) comes
from its pretrained config (or an exported artifact's metadata) through
:mod:`.sampling` and :mod:`.transforms`, the same code training uses.

Inference goes through the shared runtime interface
(:func:`e3d_zoo.runtime.base.load_backend`), in batches. Decoding and preprocessing
run in a background thread, overlapped with inference (PyAV, ONNX Runtime and
OpenVINO release the GIL while they work).
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from concurrent.futures import Future
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import BackendError, ConfigError, DataError, E3DError, VideoError, WeightsError
from ..runtime.base import Backend, canonical_backend_name, load_backend
from .decode import StreamReader, VideoReader, is_stream_url
from .sampling import (SamplingConfig, TimeGridSampler, clip_indices, multi_view_indices,
                       sampling_grid)
from .transforms import EvalTransform, MultiCropTransform


def backend_for_artifact(path: str | os.PathLike) -> Optional[str]:
    """The runtime an exported file is for, by its extension (None if unknown)."""
    return {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt",
            ".plan": "tensorrt"}.get(Path(path).suffix.lower())


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def load_labels(path: str | os.PathLike) -> List[str]:
    """Class names from a text file (one per line) or JSON (list, or {index: name})."""
    from ..atomic import read_text_limited

    p = Path(path)
    text = read_text_limited(p, 16 << 20, what="label file", error=DataError)
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{p}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            try:
                return [str(data[k]) for k in sorted(data, key=lambda k: int(k))]
            except ValueError:
                raise DataError(f"{p}: expected a list of names or {{index: name}}") from None
        if isinstance(data, list):
            return [str(x) for x in data]
        raise DataError(f"{p}: expected a list of names or {{index: name}}, found {type(data).__name__}")
    return [line.strip() for line in text.splitlines() if line.strip()]


def cfg_from_metadata(md: Mapping[str, Any]) -> Dict[str, Any]:
    """A pretrained-config dict from an exported artifact's metadata (e3d_export)."""
    def get(key: str, default: Any = None) -> Any:
        v = md.get(key, default)
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v

    if get("frames") is None or get("size") is None:
        raise ConfigError("artifact metadata has no 'frames'/'size'; export it with e3d-export "
                          "or pass --model so the preprocessing config is known")
    size = int(get("size"))
    return {"num_frames": int(get("frames")), "frame_stride": int(get("frame_stride") or 1),
            "input_size": (int(get("in_chans") or 3), size, size),
            "mean": tuple(get("mean") or (0.485, 0.456, 0.406)),
            "std": tuple(get("std") or (0.229, 0.224, 0.225)),
            "crop_pct": float(get("crop_pct") or 1.0), "interpolation": "bilinear",
            "label_names": list(get("labels") or []) or None,
            "num_classes": get("num_classes"), "architecture": get("model_name")}


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a ``.safetensors`` or torch checkpoint (plain, or under 'state_dict'/'model')."""
    from ..hub import read_state_dict

    p = Path(path)
    state = read_state_dict(p)  # unwraps checkpoints; refuses pickles of objects and NaN/Inf
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{p}: weights do not fit the model: {str(exc).splitlines()[0]}") from exc


def _prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` results ahead of the consumer.

    Exceptions raised by the producer are re-raised in the consumer at the same point
    of the sequence; closing the consumer stops the producer.
    """
    q: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(("error", exc))

    worker = threading.Thread(target=produce, daemon=True, name="e3d-decode")
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while not q.empty():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        worker.join(timeout=5)


class VideoClassifier:
    """A model (on any runtime backend) plus the preprocessing its config prescribes."""

    def __init__(self, backend: Backend, cfg: Mapping[str, Any], *,
                 labels: Optional[Sequence[str]] = None, batch_size: int = 8, top_k: int = 5,
                 num_clips: int = 4, num_crops: int = 3, decode_threads: int = 0,
                 sampling: Optional[SamplingConfig] = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size: expected >= 1, found {batch_size}")
        if top_k < 1:
            raise ConfigError(f"top_k: expected >= 1, found {top_k}")
        self.backend = backend
        self.cfg = dict(cfg)
        self.sampling = sampling or SamplingConfig.from_cfg(self.cfg)
        self.transform = EvalTransform.from_cfg(self.cfg)
        self.num_clips = int(num_clips)
        self.num_crops = int(num_crops)
        self.crops = MultiCropTransform.from_cfg(self.cfg, num_crops=self.num_crops)
        self.batch_size = int(batch_size)
        self.top_k = int(top_k)
        self.decode_threads = decode_threads
        names = labels if labels is not None else self.cfg.get("label_names")
        self.labels: Optional[List[str]] = list(names) if names else None
        self.artifact_check: Optional[Dict[str, Any]] = None  # from_model(artifact=...)
        n_cls = self.cfg.get("num_classes")
        if self.labels and n_cls and len(self.labels) != int(n_cls):
            raise DataError(f"labels: the model has {n_cls} classes, found {len(self.labels)} "
                            "label names")

    # ---- construction --------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any = "e3d_s", *, backend: str = "torch",
                   artifact: Optional[str | os.PathLike] = None, threads: Optional[int] = None,
                   weights: Optional[str | os.PathLike] = None, pretrained: bool = False,
                   num_classes: Optional[int] = None,
                   cache_dir: Optional[str | os.PathLike] = None,
                   backend_options: Optional[Mapping[str, Any]] = None,
                   **kwargs: Any) -> "VideoClassifier":
        """A classifier over a zoo name, arch file, ``hf-hub:`` id, save-pretrained folder
        (its weights included) or an ``nn.Module``.

        ``pretrained`` loads the published weights (zoo names, ``hf-hub:`` ids);
        ``weights`` loads a local checkpoint instead; with neither the weights are
        random (speed tests only). With ``backend`` other than torch and no
        ``artifact``, the model is exported
        (e3d_export) into ``cache_dir`` first and that artifact is loaded.

        With an ``artifact``, the artifact is what runs (on the backend its extension
        names when ``backend`` is torch) and the model supplies the preprocessing; the
        two must be the same network: :meth:`check_artifact` compares input and output
        shapes, and, when the model has trained weights (``weights``, ``pretrained`` or a
        save-pretrained folder), their logits on a probe clip. The result is in
        ``artifact_check``.
        """
        from ..zoo import create_model

        if artifact is not None and canonical_backend_name(backend) == "torch":
            backend = backend_for_artifact(artifact) or ""
            if not backend:
                raise ConfigError(f"{artifact}: cannot tell the artifact's runtime from its "
                                  "extension (.onnx, .xml, .engine); pass backend=")
        name = canonical_backend_name(backend)
        if isinstance(model, torch.nn.Module):
            module = model
        elif Path(os.fspath(model)).is_dir():  # a save_pretrained folder (e3d-train's output)
            from ..hub import from_pretrained

            module = from_pretrained(model, num_classes=num_classes, pretrained=weights is None)
        else:
            extra = {"num_classes": num_classes} if num_classes else {}
            module = create_model(model, pretrained=pretrained, **extra)
        if weights is not None:
            load_weights(module, weights)
        module.eval()
        cfg = dict(module.pretrained_cfg)
        cfg["num_classes"] = getattr(module, "num_classes", cfg.get("num_classes"))
        opts = dict(backend_options or {})
        given_artifact = artifact
        if name == "torch":
            be = load_backend("torch", module, threads=threads, **opts)
        else:
            if artifact is None:
                artifact = _export_for(module, name, cfg, cache_dir)
            be = load_backend(name, artifact, threads=threads, **opts)
        clf = cls(be, cfg, **kwargs)
        if given_artifact is not None:
            trained = weights is not None or pretrained or (
                not isinstance(model, torch.nn.Module) and Path(os.fspath(model)).is_dir())
            clf.artifact_check = clf.check_artifact(module, given_artifact, compare_outputs=trained)
        return clf

    @classmethod
    def from_artifact(cls, artifact: str | os.PathLike, *, backend: Optional[str] = None,
                      threads: Optional[int] = None,
                      backend_options: Optional[Mapping[str, Any]] = None,
                      **kwargs: Any) -> "VideoClassifier":
        """A classifier over an exported ``.onnx`` / ``.xml``; preprocessing from its metadata."""
        path = Path(artifact)
        if backend is None:
            backend = backend_for_artifact(path)
            if backend is None:
                raise ConfigError(f"{path}: cannot tell the backend from the extension; pass backend=")
        be = load_backend(backend, path, threads=threads, **dict(backend_options or {}))
        md = getattr(be, "metadata", None) or {}
        return cls(be, cfg_from_metadata(md), **kwargs)

    # ---- the model ---------------------------------------------------------------------
    def label(self, index: int) -> str:
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class_{index}"

    def top(self, probs: np.ndarray, k: Optional[int] = None) -> List[Dict[str, Any]]:
        k = min(k or self.top_k, probs.shape[-1])
        order = np.argsort(-probs, kind="stable")[:k]
        return [{"index": int(i), "label": self.label(int(i)), "score": float(probs[i])} for i in order]

    def _fixed_batch(self) -> Optional[int]:
        """The batch size an artifact was exported with, when it is static."""
        shape = getattr(self.backend, "input_shape", None)
        if shape is None:
            return None
        try:
            first = shape[0]
            if hasattr(first, "is_static"):  # openvino.Dimension
                return int(first.get_length()) if first.is_static else None
            return int(first) if isinstance(first, (int, np.integer)) else None
        except (TypeError, IndexError):
            return None

    def predict(self, clips: torch.Tensor | np.ndarray) -> np.ndarray:
        """Softmax probabilities for clips ``(N, C, T, H, W)``, run in batches.

        An artifact exported with a static batch gets exactly that many clips per call
        (the last call padded with zeros, whose outputs are dropped).
        """
        return self._collect(self._submit(clips))

    def _submit(self, clips: torch.Tensor | np.ndarray) -> List[Tuple[int, "Future[np.ndarray]"]]:
        """Start inference on ``clips`` in backend-sized batches; ``_collect`` waits.

        With a backend that runs requests concurrently (OpenVINO ``streams``) the batches
        run in parallel; otherwise each runs as it is submitted.
        """
        x = clips.numpy() if isinstance(clips, torch.Tensor) else np.asarray(clips, np.float32)
        fixed = self._fixed_batch()
        step = fixed or self.batch_size
        started = []
        for i in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[i:i + step], dtype=np.float32)
            n = len(chunk)
            if fixed and n < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - n,) + chunk.shape[1:], np.float32)])
            started.append((n, self.backend.submit(chunk)))
        return started

    def _collect(self, started: List[Tuple[int, "Future[np.ndarray]"]],
                 probabilities: bool = True) -> np.ndarray:
        out = []
        for n, f in started:
            logits = np.asarray(f.result())[:n]
            if not np.isfinite(logits).all():
                # softmax of NaN is NaN and argsort still ranks it: a label with score nan
                raise BackendError(f"{self.backend.name}: the model produced non-finite outputs "
                                   "(NaN or Inf); its weights or the exported artifact are corrupt")
            out.append(softmax(logits) if probabilities else logits)
        return np.concatenate(out, axis=0)

    def logits(self, clips: torch.Tensor | np.ndarray) -> np.ndarray:
        """Raw logits for clips ``(N, C, T, H, W)`` (what :meth:`predict` turns into probabilities)."""
        return self._collect(self._submit(clips), probabilities=False)

    def check_artifact(self, module: torch.nn.Module, artifact: str | os.PathLike, *,
                       compare_outputs: bool, rtol: float = 0.25) -> Dict[str, Any]:
        """ConfigError unless the loaded artifact is ``module``'s network: same input clip
        shape and classes; with ``compare_outputs``, logits on two seeded clips within
        ``rtol`` of the logits' scale. fp32 exports differ by ~1e-5 of it, fp16 ~1e-2,
        INT8 a few 1e-2; another network (or other weights) differs by about its scale."""
        name = getattr(getattr(module, "spec", None), "name", None) or type(module).__name__
        c, h, w = (int(v) for v in self.cfg["input_size"])
        x = np.random.default_rng(0).standard_normal((2, c, int(self.cfg["num_frames"]), h, w),
                                                     dtype=np.float32)
        what = f"{artifact}: not an export of --model {name}"
        try:
            got = self.logits(x)
        except BackendError as exc:
            raise ConfigError(f"{what}: it cannot take the model's {tuple(x.shape[1:])} clips "
                              f"({exc})") from None
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).float().numpy()
        if got.shape != ref.shape:
            raise ConfigError(f"{what}: it outputs {got.shape[-1]} classes, the model {ref.shape[-1]}")
        report: Dict[str, Any] = {"artifact": str(artifact), "model": name, "shapes": "match"}
        if not compare_outputs:
            report["outputs"] = "not compared (the model has no trained weights)"
            return report
        err = float(np.max(np.abs(got - ref)))
        scale = float(np.max(np.abs(ref))) or 1.0
        if err > rtol * scale:
            raise ConfigError(f"{what}: on the same probe clips their logits differ by up to "
                              f"{err:.3g} (the model's logits reach {scale:.3g}); export the "
                              "model again (e3d-export) or drop --model")
        report.update(outputs="match", max_abs_err=err, logit_scale=scale)
        return report

    # ---- whole video: multi-view --------------------------------------------------------
    def _video_views(self, source: str, num_clips: int, num_crops: int) -> Dict[str, Any]:
        """Decode + preprocess: every view of one video, ``(clips*crops, C, T, H, W)``."""
        t0 = time.perf_counter()
        sc = self.sampling
        with VideoReader(source, threads=self.decode_threads) as reader:
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
        with VideoReader(source, threads=self.decode_threads) as reader:
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
        crops = self.crops if num_crops == self.num_crops else MultiCropTransform.from_cfg(
            self.cfg, num_crops=num_crops)
        views = []
        for clip_idx in inverse.reshape(idx.shape):
            clip = frames[clip_idx]
            views.append(crops(clip) if num_crops > 1 else self.transform(clip)[None])
        x = torch.cat(views)  # clip-major: view = clip * crops + crop
        t2 = time.perf_counter()
        return {"source": source, "clips": x, "info": info, "frames_total": int(n),
                "frames_decoded": int(decoded),
                "view_times": times[inverse.reshape(idx.shape)][:, [0, -1]],
                "decode_s": t1 - t0, "preprocess_s": t2 - t1}

    def views(self, source: str | os.PathLike, *, num_clips: Optional[int] = None,
              num_crops: Optional[int] = None) -> torch.Tensor:
        """The network input for one video, as whole-video mode builds it:
        ``(num_clips * num_crops, C, T, H, W)`` float32, clip-major (e.g. real clips
        for verifying an export)."""
        return self._video_views(os.fspath(source), num_clips or self.num_clips,
                                 num_crops or self.num_crops)["clips"]

    def classify(self, source: str | os.PathLike, *, num_clips: Optional[int] = None,
                 num_crops: Optional[int] = None, top_k: Optional[int] = None,
                 return_probs: bool = False) -> Dict[str, Any]:
        """One record for one video: top-k labels of the averaged view probabilities."""
        views = self._video_views(os.fspath(source), num_clips or self.num_clips,
                                  num_crops or self.num_crops)
        return self._finish_video(views, top_k, return_probs)

    def _finish_video(self, views: Dict[str, Any], top_k: Optional[int], return_probs: bool,
                      probs: Optional[np.ndarray] = None, infer_s: float = 0.0) -> Dict[str, Any]:
        if probs is None:
            t0 = time.perf_counter()
            probs = self.predict(views["clips"])
            infer_s = time.perf_counter() - t0
        mean = probs.mean(axis=0)
        info = views["info"]
        rec = {"source": views["source"], "kind": "video", "top": self.top(mean, top_k),
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

    def classify_many(self, sources: Iterable[str | os.PathLike], *, num_clips: Optional[int] = None,
                      num_crops: Optional[int] = None, top_k: Optional[int] = None,
                      return_probs: bool = False) -> Iterator[Dict[str, Any]]:
        """Records for many inputs, in order, decoding the next videos while the current
        ones run. Views of consecutive videos share inference batches (``batch_size``
        clips per call), which matters when a video has fewer views than a batch. A
        failing input yields ``{"source", "kind": "error", "error"}``; the rest go on."""
        nc, ncr = num_clips or self.num_clips, num_crops or self.num_crops
        views_per_video = nc * ncr
        src_list = list(sources)

        def decoded() -> Iterator[Dict[str, Any]]:
            for src in src_list:
                try:
                    yield self._video_views(os.fspath(src), nc, ncr)
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
                    probs_all = self.predict(torch.cat([it["clips"] for it in ready]))
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
                    yield self._finish_video(it, top_k, return_probs, probs_all[offset:offset + n],
                                             infer_s * n / max(probs_all.shape[0], 1))
                offset += n
            pending.clear()

        depth = max(2, -(-self.batch_size // max(views_per_video, 1)))
        for item in _prefetch(decoded(), depth=depth):
            pending.append(item)
            if sum(int(it["clips"].shape[0]) for it in pending if "error" not in it) >= self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    # ---- streaming ---------------------------------------------------------------------
    def _windows(self, source: str, hop: float, max_reconnects: int,
                 start_time: Optional[float], timing: Dict[str, float],
                 reader_options: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
        """Decode + preprocess on the producer side: windows ready for the network."""
        live = is_stream_url(source) or reader_options.get("format") is not None
        if live:
            reader: Any = StreamReader(source, max_reconnects=max_reconnects,
                                       threads=self.decode_threads, **reader_options)
        else:
            reader = VideoReader(source, threads=self.decode_threads, **reader_options)
        try:
            info = reader.info
            sc = self.sampling
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
                    x = self.transform(np.stack([img for _, _, img in raw]))  # (C, n, H, W)
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
                    out = self._window_item(source, state["emitted"], list(ring))
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
                idx = clip_indices(len(ring), self.sampling.replace(frame_stride=1))
                items = list(ring)
                yield self._window_item(source, 0, [items[i] for i in idx])
                emitted = 1
            if not live and start_time is None and info.num_frames and n_decoded < info.num_frames:
                raise VideoError(f"{source}: truncated: the header says {info.num_frames} frames, "
                                 f"only {n_decoded} were decodable")
            if n_decoded == 0:
                raise VideoError(f"{source}: no decodable video frames")
        finally:
            reader.close()

    @staticmethod
    def _window_item(source: str, index: int, items: List[Tuple[float, float, torch.Tensor]]) -> Dict[str, Any]:
        clip = torch.stack([x for _, _, x in items], dim=1)  # (C, T, H, W)
        return {"source": source, "window": index, "start_time": items[0][0],
                "end_time": items[-1][0] + items[-1][1], "clip": clip}

    def stream(self, source: str | os.PathLike, *, hop: float = 0.5, top_k: Optional[int] = None,
               smoothing: float = 0.0, batch_windows: Optional[int] = None,
               max_reconnects: int = 3, start_time: Optional[float] = None,
               return_probs: bool = False, timing: Optional[Dict[str, float]] = None,
               reader_options: Optional[Mapping[str, Any]] = None) -> Iterator[Dict[str, Any]]:
        """Sliding-window predictions: one record every ``hop`` seconds of video.

        The ring buffer holds the last ``num_frames`` sampled frames, preprocessed once
        each. ``smoothing`` in [0, 1) is the weight an exponential moving average keeps
        from the past (0: off). ``batch_windows`` windows are run together (default: 1
        for live streams, ``batch_size`` for files). ``timing`` (a dict) is filled with
        decode/preprocess/inference seconds.
        """
        if not hop > 0:
            raise ConfigError(f"hop: expected seconds > 0, found {hop!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing: expected 0 <= smoothing < 1, found {smoothing!r}")
        source = os.fspath(source)
        opts = dict(reader_options or {})
        live = is_stream_url(source) or opts.get("format") is not None
        batch = int(batch_windows or (1 if live else self.batch_size))
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
        depth = 1 if live else max(1, int(getattr(self.backend, "max_in_flight", 1)))

        def flush(drain: bool = False) -> Iterator[Dict[str, Any]]:
            # inference time as the pipeline sees it: submitting (all of it for a backend
            # that runs synchronously) plus waiting for results, on this thread only
            if pending:
                t0 = time.perf_counter()
                started = self._submit(torch.stack([w["clip"] for w in pending]))
                timing["infer_s"] += time.perf_counter() - t0
                in_flight.append((list(pending), started))
                pending.clear()
            while in_flight and (drain or len(in_flight) >= depth):
                yield from emit(*in_flight.popleft())

        def emit(batch_windows: List[Dict[str, Any]], started: List[Tuple[int, Any]]) -> Iterator[Dict[str, Any]]:
            nonlocal ema
            t0 = time.perf_counter()
            probs = self._collect(started)
            timing["infer_s"] += time.perf_counter() - t0
            for w, p in zip(batch_windows, probs):
                ema = p if ema is None or smoothing == 0 else smoothing * ema + (1 - smoothing) * p
                rec = {"source": source, "kind": "window", "window": w["window"],
                       "start_time": round(w["start_time"], 6), "end_time": round(w["end_time"], 6),
                       "top": self.top(ema, top_k)}
                if return_probs:
                    rec["probs"] = ema.tolist()
                yield rec

        windows = self._windows(source, hop, max_reconnects, start_time, timing, opts)
        for w in _prefetch(windows, depth=max(2, batch * depth)):
            pending.append(w)
            if len(pending) >= batch:
                yield from flush()
        yield from flush(drain=True)


def _export_for(module: torch.nn.Module, backend: str, cfg: Mapping[str, Any],
                cache_dir: Optional[str | os.PathLike]) -> Path:
    """Export ``module`` for ``backend`` once; reuse the file while the weights are the same."""
    import hashlib

    try:
        import e3d_export
    except ImportError as exc:
        raise ConfigError(f"backend {backend!r} needs an exported artifact: pass artifact= "
                          "(--artifact) or install the e3d_export package") from exc
    h = hashlib.sha1()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    spec = getattr(module, "spec", None)
    if spec is not None:
        h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    root = Path(cache_dir) if cache_dir else (
        Path(os.environ.get("E3D_CACHE", Path.home() / ".cache" / "e3d_zoo")) / "artifacts")
    stem = f"{cfg.get('architecture') or 'model'}-{h.hexdigest()[:12]}"
    onnx_path = root / f"{stem}.onnx"
    frames, size = int(cfg["num_frames"]), int(cfg["input_size"][-1])
    if not onnx_path.is_file():
        e3d_export.export_onnx(module, onnx_path, frames=frames, size=size)
    if backend == "onnxruntime":
        return onnx_path
    if backend == "openvino":
        xml = root / f"{stem}.xml"
        if not xml.is_file():
            e3d_export.export_openvino(onnx_path, xml)
        return xml
    raise ConfigError(f"backend {backend!r}: build its engine with e3d-export and pass "
                      "artifact= (--artifact)")
