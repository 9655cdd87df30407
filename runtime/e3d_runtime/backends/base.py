"""One interface for every runtime: load an artifact, run a batch of clips, time it.

Backends register themselves by name; :func:`load_backend` imports the backend's
module lazily so that ``import e3d_zoo`` never pulls in onnxruntime, openvino or
tensorrt. Inputs are float32 numpy arrays shaped (N, C, T, H, W), already
normalized; outputs are float32 logits (N, num_classes).
"""
from __future__ import annotations

import importlib
import os
import statistics
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import BackendError

# name -> module that defines it (imported on first use)
_BACKEND_MODULES: Dict[str, str] = {
    "torch": "e3d_zoo.runtime.torch_backend",
    "onnxruntime": "e3d_runtime.backends.onnxruntime_backend",
    "openvino": "e3d_runtime.backends.openvino_backend",
    "tensorrt": "e3d_runtime.backends.tensorrt_backend",
}
_ALIASES = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt", "pytorch": "torch"}
_REGISTRY: Dict[str, type] = {}


def register_backend(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def canonical_backend_name(name: str) -> str:
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in _BACKEND_MODULES:
        raise BackendError(f"unknown backend {name!r}; expected one of {sorted(_BACKEND_MODULES)}")
    return name


def backend_class(name: str) -> type:
    name = canonical_backend_name(name)
    if name not in _REGISTRY:
        importlib.import_module(_BACKEND_MODULES[name])
    return _REGISTRY[name]


def available_backends() -> List[str]:
    """Backends whose runtime is installed and usable on this machine."""
    out = []
    for name in _BACKEND_MODULES:
        try:
            cls = backend_class(name)
        except ImportError:
            continue
        ok, _ = cls.availability()
        if ok:
            out.append(name)
    return out


@dataclass
class TimingStats:
    backend: str
    batch: int
    runs: int
    threads: Optional[int]
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    clips_per_s: float
    spread_p90_p50: float
    times_ms: List[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_times: bool = False) -> Dict[str, Any]:
        d = asdict(self)
        if not with_times:
            d.pop("times_ms")
        return d

    @classmethod
    def from_times(cls, backend: str, batch: int, times_ms: Sequence[float],
                   threads: Optional[int]) -> "TimingStats":
        ts = sorted(times_ms)
        med = statistics.median(ts)
        q = lambda p: float(np.percentile(ts, p))  # noqa: E731
        return cls(backend=backend, batch=batch, runs=len(ts), threads=threads,
                   median_ms=med, p90_ms=q(90), p99_ms=q(99), mean_ms=statistics.fmean(ts),
                   min_ms=ts[0], clips_per_s=1000.0 * batch / med if med > 0 else float("inf"),
                   spread_p90_p50=q(90) / med if med > 0 else float("nan"), times_ms=list(times_ms))


class Backend(ABC):
    """A loaded artifact on one runtime."""

    name: str = "?"
    #: the artifact kinds this backend loads, e.g. (".onnx",) or ("module",)
    artifact_kinds: Sequence[str] = ()

    def __init__(self, artifact: Any, *, threads: Optional[int] = None, **options: Any):
        ok, why = self.availability()
        if not ok:
            raise BackendError(f"backend {self.name!r} is not usable here: {why}")
        self.artifact = artifact
        self.threads = threads
        self.options = options

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable, reason if not). Must be cheap and must not raise."""
        return True, ""

    @abstractmethod
    def run(self, clips: np.ndarray) -> np.ndarray:
        """Logits for a float32 batch (N, C, T, H, W)."""

    #: how many :meth:`submit` calls can usefully run at once (OpenVINO streams)
    max_in_flight: int = 1

    def submit(self, clips: np.ndarray) -> "Future[np.ndarray]":
        """Start :meth:`run` on ``clips``; the future's result is the logits.

        Backends that run requests concurrently (``max_in_flight > 1``) return at once
        while a request is free; the default runs synchronously and returns a done future.
        """
        future: "Future[np.ndarray]" = Future()
        try:
            future.set_result(self.run(clips))
        except Exception as exc:  # delivered through the future; Ctrl-C is not
            future.set_exception(exc)
        return future

    def describe(self) -> Dict[str, Any]:
        """Runtime, version, device and threads: recorded with every measurement."""
        return {"backend": self.name, "threads": self.threads}

    def time(self, clips: np.ndarray, *, warmup: int = 3, runs: int = 20) -> TimingStats:
        """Median-based latency of :meth:`run` on ``clips`` (wall clock, ms)."""
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        for _ in range(max(warmup, 0)):
            self.run(clips)
        times = []
        for _ in range(max(runs, 1)):
            t0 = time.perf_counter()
            self.run(clips)
            times.append((time.perf_counter() - t0) * 1000.0)
        return TimingStats.from_times(self.name, int(clips.shape[0]), times, self.threads)


def time_interleaved(runners: Dict[str, Callable[[], Any]], *, runs: int = 20,
                     warmup: int = 3) -> Dict[str, List[float]]:
    """Wall-clock ms of each runner over ``runs`` rounds, one call of every runner per
    round: on a shared machine load changes hit them all alike, so their medians compare.
    """
    for fn in runners.values():
        for _ in range(max(warmup, 0)):
            fn()
    times: Dict[str, List[float]] = {k: [] for k in runners}
    for _ in range(max(runs, 1)):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return times


def load_backend(name: str, artifact: Any, **options: Any) -> Backend:
    """Load ``artifact`` (a path, or a module for torch) on backend ``name``."""
    return backend_class(name)(artifact, **options)


def default_threads() -> int:
    return int(os.environ.get("E3D_THREADS", os.cpu_count() or 1))
