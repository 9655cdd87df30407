"""Video in, actions out: whole-video multi-view classification and streaming.

    from e3d_runtime.video import VideoClassifier
    clf = VideoClassifier.from_artifact("exports/e3d_s")       # an e3d-export folder
    clf.classify("clip.mp4")                         # N temporal clips x 3 crops, averaged
    for window in clf.stream("rtsp://cam/live", hop=0.5):           # a prediction every hop
        print(window["end_time"], window["top"][0])

Everything the model needs to see (frames, stride, size, mean/std, crop_pct, labels)
comes from the export folder's manifest (``preprocess``), an artifact's own metadata,
or - with the full e3d-zoo install - a PyTorch model's pretrained config
(:meth:`VideoClassifier.from_model`), through :mod:`.sampling` and :mod:`.transforms`,
the same code training uses.

Inference goes through the shared runtime interface
(:func:`e3d_runtime.backends.base.load_backend`), in batches. Decoding and
preprocessing run in a background thread, overlapped with inference (PyAV, numpy's
BLAS, ONNX Runtime and OpenVINO release the GIL while they work). The two modes live
in :mod:`.multiview` and :mod:`.streaming`.
"""
from __future__ import annotations

import importlib.util
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import Backend, canonical_backend_name, load_backend
from ..atomic import parse_json, read_text_limited
from ..errors import BackendError, ConfigError, DataError, MissingDependencyError
from .. import machine
from ..manifest import MANIFEST_NAME, artifact_entry_for, load_manifest, preprocess_cfg
from . import multiview, streaming
from .sampling import SamplingConfig
from .transforms import EvalTransform, MultiCropTransform

# a folder's artifact when no backend is named: the first of these that is installed
RUNTIME_ORDER = ("openvino", "onnxruntime", "tensorrt")


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
    p = Path(path)
    text = read_text_limited(p, 16 << 20, what="label file", error=DataError)
    if p.suffix.lower() == ".json":
        data = parse_json(text, p, what="label file", error=DataError)
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


def installed_runtimes() -> List[str]:
    """The runtimes of :data:`RUNTIME_ORDER` whose package is installed (not imported)."""
    return [name for name in RUNTIME_ORDER if importlib.util.find_spec(name) is not None]


def artifact_and_cfg(artifact: str | os.PathLike, backend: Optional[str] = None, *,
                     precision: Optional[str] = None
                     ) -> Tuple[str, Path, Optional[Dict[str, Any]], Dict[str, Any]]:
    """(backend, artifact file, preprocessing config or None, backend options) for an
    e3d-export folder or an exported file.

    In a folder the artifact is the one ``e3d-export --precision auto`` chose for the
    backend, or the one of ``precision`` (:func:`e3d_runtime.manifest.artifact_entry_for`);
    the options are how it must run (an IR chosen at bf16 runs with ``precision="bf16"``).
    The config comes from the folder's manifest (None: only the artifact's own metadata
    can say).
    """
    path = Path(artifact)
    options: Dict[str, Any] = {}
    if path.is_dir():
        manifest = load_manifest(path)
        wanted = [canonical_backend_name(backend)] if backend else installed_runtimes()
        if not wanted:
            raise MissingDependencyError("openvino", "openvino", f"running {path}")
        backend, _, entry = artifact_entry_for(path, manifest, wanted, precision=precision)
        file = path / str(entry["file"])
        if entry.get("runtime_precision"):
            options["precision"] = str(entry["runtime_precision"])
    elif path.is_file():
        if precision is not None:
            raise ConfigError(f"{path}: choosing a precision needs an export folder, not one file")
        file = path
        backend = backend or backend_for_artifact(path)
        if backend is None:
            raise ConfigError(f"{path}: cannot tell the runtime from the extension; expected "
                              ".xml, .onnx or .engine, or pass backend= (--backend)")
        manifest = load_manifest(path.parent) if (path.parent / MANIFEST_NAME).is_file() else None
    else:
        raise ConfigError(f"{path}: no such export folder or artifact file")
    section = (manifest or {}).get("preprocess")
    where = str(file.parent / MANIFEST_NAME)
    return backend, file, (preprocess_cfg(section, where) if section is not None else None), options


def default_stream_threads() -> int:
    """Inference threads for stream mode when none are asked for: every core but one, which
    the decoding + preprocessing thread needs (on 2 cores that is as much work as the
    INT8 network). Measured on 2 cores, E3D-S INT8, 60 s 640x360, same run: 1 inference
    thread 2.55 s vs 2 threads 2.71 s (median of 8 paired runs; docs/pipeline.md)."""
    return max(1, machine.usable_cores() - 1)


def default_decode_threads() -> int:
    """FFmpeg decoder threads when none are asked for. On <= 2 cores one: inference already
    uses every core, and FFmpeg's frame threads only add switching and synchronization
    (E3D-S INT8 stream, 60 s 640x360: 20.3x vs 18.9x real time with FFmpeg's choice,
    docs/pipeline.md). With more cores FFmpeg's own choice (0), which was not measured here."""
    return 1 if machine.usable_cores() <= 2 else 0


class VideoClassifier:
    """A model (on any runtime backend) plus the preprocessing its config prescribes."""

    def __init__(self, backend: Backend, cfg: Mapping[str, Any], *,
                 labels: Optional[Sequence[str]] = None, batch_size: int = 8, top_k: int = 5,
                 num_clips: int = 4, num_crops: int = 3, decode_threads: Optional[int] = None,
                 sampling: Optional[SamplingConfig] = None, decoder_resize: bool = False):
        if batch_size < 1:
            raise ConfigError(f"batch_size: expected >= 1, found {batch_size}")
        if top_k < 1:
            raise ConfigError(f"top_k: expected >= 1, found {top_k}")
        # a Future while the backend compiles in the background (from_artifact's
        # compile_in_background): decoding starts meanwhile; first use waits for it
        self._backend = backend
        self.cfg = dict(cfg)
        self.sampling = sampling or SamplingConfig.from_cfg(self.cfg)
        self.transform = EvalTransform.from_cfg(self.cfg)
        self.num_clips = int(num_clips)
        self.num_crops = int(num_crops)
        self.crops = MultiCropTransform.from_cfg(self.cfg, num_crops=self.num_crops)
        self.batch_size = int(batch_size)
        self.top_k = int(top_k)
        self.decode_threads = default_decode_threads() if decode_threads is None else int(decode_threads)
        # stream mode: let FFmpeg's swscale shrink frames to the resize size while it converts
        # them to RGB (about half the preprocessing CPU at 640x360; its bilinear filter and
        # uint8 rounding differ from the training transform's, so it is opt-in)
        self.decoder_resize = bool(decoder_resize)
        names = labels if labels is not None else self.cfg.get("label_names")
        self.labels: Optional[List[str]] = list(names) if names else None
        # from_model(artifact=...): how the artifact was checked against the model
        self.artifact_check: Optional[Dict[str, Any]] = None
        n_cls = self.cfg.get("num_classes")
        if self.labels and n_cls and len(self.labels) != int(n_cls):
            raise DataError(f"labels: the model has {n_cls} classes, found {len(self.labels)} "
                            "label names")

    @property
    def backend(self) -> Backend:
        if isinstance(self._backend, Future):
            self._backend = self._backend.result()  # re-raises the compile's error here
        return self._backend

    @backend.setter
    def backend(self, value: Backend) -> None:
        self._backend = value

    @property
    def backend_ready(self) -> bool:
        return not isinstance(self._backend, Future) or self._backend.done()

    # ---- construction --------------------------------------------------------------
    @classmethod
    def from_artifact(cls, artifact: str | os.PathLike, *, backend: Optional[str] = None,
                      threads: Optional[int] = None,
                      backend_options: Optional[Mapping[str, Any]] = None,
                      precision: Optional[str] = None, compile_in_background: bool = False,
                      **kwargs: Any) -> "VideoClassifier":
        """A classifier over an e3d-export folder or one exported file (``.xml``, ``.onnx``,
        ``.engine``).

        A folder runs its artifact for ``backend`` (default: the first installed of
        OpenVINO, ONNX Runtime, TensorRT): the one ``e3d-export --precision auto`` chose
        for it, else full precision first; ``precision`` (fp32, bf16, int8) asks for
        another. Preprocessing comes from the folder's ``manifest.json`` (``preprocess``),
        for a file from the manifest beside it, else from the file's own metadata.

        ``compile_in_background``: return at once and load/compile the artifact on a
        thread (when a manifest gives the preprocessing), so the caller's first video is
        opened and decoded meanwhile (e3d-infer's start-up); a load error is raised where
        the backend is first used.
        """
        backend, file, cfg, options = artifact_and_cfg(artifact, backend, precision=precision)
        opts = {**options, **dict(backend_options or {})}
        if compile_in_background and cfg is not None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e3d-compile")
            future = pool.submit(load_backend, backend, file, threads=threads, **opts)
            pool.shutdown(wait=False)
            return cls(future, cfg, **kwargs)  # type: ignore[arg-type]
        be = load_backend(backend, file, threads=threads, **opts)
        if cfg is None:
            cfg = cfg_from_metadata(getattr(be, "metadata", None) or {})
        return cls(be, cfg, **kwargs)

    @classmethod
    def from_model(cls, model: Any = "e3d_s", *, backend: str = "torch", **kwargs: Any) -> "VideoClassifier":
        """A classifier over a PyTorch model (zoo name, arch file, ``hf-hub:`` id,
        save-pretrained folder or ``nn.Module``): needs the full e3d-zoo install.

        See :func:`e3d_zoo.video.model_source.classifier_parts` for the options
        (``pretrained``, ``weights``, ``artifact``, ``threads``, ``cache_dir``, ...). With
        an ``artifact`` the artifact is what runs and the model must be the same network
        (checked there); how it was checked is in ``artifact_check``.
        """
        if importlib.util.find_spec("e3d_zoo") is None:
            raise ConfigError("a PyTorch model (--model) needs the full install: pip install e3d-zoo; "
                              "this edge install runs exported folders (--artifact FOLDER)")
        from e3d_zoo.video.model_source import classifier_parts

        parts, rest = classifier_parts(model, backend=backend, **kwargs)
        clf = cls(parts["backend"], parts["cfg"], **rest)
        if parts.get("check_artifact") is not None:
            clf.artifact_check = parts["check_artifact"](clf)
        return clf

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

    def predict(self, clips: np.ndarray) -> np.ndarray:
        """Softmax probabilities for clips ``(N, C, T, H, W)``, run in batches.

        An artifact exported with a static batch gets exactly that many clips per call
        (the last call padded with zeros, whose outputs are dropped).
        """
        return self.collect(self.submit(clips))

    def submit(self, clips: np.ndarray) -> List[Tuple[int, "Future[np.ndarray]"]]:
        """Start inference on ``clips`` in backend-sized batches; :meth:`collect` waits.

        With a backend that runs requests concurrently (OpenVINO ``streams``) the batches
        run in parallel; otherwise each runs as it is submitted.
        """
        x = np.asarray(clips, np.float32)
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

    def collect(self, started: List[Tuple[int, "Future[np.ndarray]"]],
                probabilities: bool = True) -> np.ndarray:
        """Wait for :meth:`submit`'s batches: softmax probabilities (or the raw logits)."""
        out = []
        for n, f in started:
            logits = np.asarray(f.result())[:n]
            if not np.isfinite(logits).all():
                # softmax of NaN is NaN and argsort still ranks it: a label with score nan
                raise BackendError(f"{self.backend.name}: the model produced non-finite outputs "
                                   "(NaN or Inf); its weights or the exported artifact are corrupt")
            out.append(softmax(logits) if probabilities else logits)
        return np.concatenate(out, axis=0)

    def logits(self, clips: np.ndarray) -> np.ndarray:
        """Raw logits for clips ``(N, C, T, H, W)`` (what :meth:`predict` turns into probabilities)."""
        return self.collect(self.submit(clips), probabilities=False)

    # ---- the two modes ---------------------------------------------------------------
    def views(self, source: str | os.PathLike, *, num_clips: Optional[int] = None,
              num_crops: Optional[int] = None) -> np.ndarray:
        """The network input for one video, as whole-video mode builds it:
        ``(num_clips * num_crops, C, T, H, W)`` float32, clip-major (e.g. real clips
        for verifying an export)."""
        return multiview.video_views(self, os.fspath(source), num_clips or self.num_clips,
                                     num_crops or self.num_crops)["clips"]

    def classify(self, source: str | os.PathLike, *, num_clips: Optional[int] = None,
                 num_crops: Optional[int] = None, top_k: Optional[int] = None,
                 return_probs: bool = False) -> Dict[str, Any]:
        """One record for one video: top-k labels of the averaged view probabilities."""
        views = multiview.video_views(self, os.fspath(source), num_clips or self.num_clips,
                                      num_crops or self.num_crops)
        return multiview.finish_video(self, views, top_k, return_probs)

    def classify_many(self, sources: Iterable[str | os.PathLike], **options: Any) -> Iterator[Dict[str, Any]]:
        """Records for many inputs, in order (:func:`.multiview.classify_many`)."""
        return multiview.classify_many(self, sources, **options)

    def stream(self, source: str | os.PathLike, **options: Any) -> Iterator[Dict[str, Any]]:
        """A record every ``hop`` seconds of video (:func:`.streaming.stream`)."""
        return streaming.stream(self, source, **options)
