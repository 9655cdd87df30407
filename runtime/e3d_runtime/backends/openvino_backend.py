"""OpenVINO backend: runs an IR (``.xml`` + ``.bin``) or an ``.onnx`` on the CPU plugin.

Precision is pinned (``INFERENCE_PRECISION_HINT``): on CPUs with bf16 or AMX units
OpenVINO otherwise silently computes in bf16, and a backend verified "at fp32" must
actually run fp32. ``precision="bf16"``/``"f16"`` opts into the faster reduced modes.

``profile=True`` turns on the CPU plugin's per-layer performance counters
(``PERF_COUNT``): after each :meth:`run`, :meth:`layer_times` lists what every
executed layer took and :meth:`kernel_ms` sums them, leaving out layout conversions
(``Reorder``). That sum is what a layer costs inside a network: an isolated unit's
boundary reorders (plain <-> blocked layout) and the call's fixed cost are not in it,
which is why latency tables use it (``e3d_zoo.latency``, statistic ``kernel``).

``cache_dir`` turns on OpenVINO's compiled-model cache (``CACHE_DIR``): the second load
of the same IR with the same settings imports the compiled blob instead of compiling
(E3D-S: ~60 ms instead of ~175 ms, part of e3d-infer's time to first prediction).
"""
from __future__ import annotations

import functools
import os
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import BackendError, MissingDependencyError, install_hint, require
from .base import Backend, register_backend

# Layers that only convert memory layouts: inserted at an isolated unit's boundaries,
# absent between the layers of a whole network.
LAYOUT_NODE_TYPES = ("Reorder",)
_PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def _ov():
    if "openvino" not in sys.modules:
        _import_runtime_only()
    return require("openvino", "openvino", "the OpenVINO backend")


def _import_runtime_only() -> None:
    """``import openvino`` without its model converter.

    The package's ``__init__`` imports ``openvino.tools.ovc`` (the ONNX/PyTorch model
    converter and its telemetry, which pulls in ``urllib.request``) only to offer
    ``openvino.convert_model``, inside ``try: ... except ImportError``: 0.1-0.2 s of
    every ``e3d-infer`` start (``python -X importtime``), for a tool a runtime never uses.
    Marking that one submodule absent while the package initializes skips it;
    ``openvino.convert_model`` stays available, imported on first use.
    """
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return
    sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]
    try:
        import openvino
    except ImportError:  # a release that needs its converter at import: import it whole
        sys.modules.pop("openvino.tools.ovc", None)
        return
    finally:
        if sys.modules.get("openvino.tools.ovc", 0) is None:
            del sys.modules["openvino.tools.ovc"]
    if "convert_model" not in vars(openvino):
        def __getattr__(name: str) -> Any:  # PEP 562: only for names the module lacks
            if name == "convert_model":
                from openvino.tools.ovc import convert_model

                openvino.convert_model = convert_model
                return convert_model
            raise AttributeError(f"module 'openvino' has no attribute {name!r}")

        openvino.__getattr__ = __getattr__


@register_backend("openvino")
class OpenVINOBackend(Backend):
    artifact_kinds = (".xml", ".onnx")

    def __init__(self, artifact: Any, *, threads: Optional[int] = None, device: str = "CPU",
                 precision: str = "fp32", hint: str = "LATENCY", profile: bool = False,
                 streams: Optional[int] = None, cache_dir: Optional[str | os.PathLike] = None,
                 **options: Any):
        ov = _ov()
        super().__init__(artifact, threads=threads, **options)
        path = Path(os.fspath(artifact))
        if path.suffix not in (".xml", ".onnx"):
            raise BackendError(f"{path}: expected an OpenVINO IR (.xml) or an .onnx file")
        if not path.is_file():
            raise BackendError(f"{path}: no such file")
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise BackendError(f"{path}: the IR's weights file {path.with_suffix('.bin').name} is missing")
        if precision not in _PRECISIONS:
            raise BackendError(f"precision: expected one of {sorted(_PRECISIONS)}, found {precision!r}")
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise BackendError(f"hint: expected 'LATENCY' or 'THROUGHPUT', found {hint!r}")
        self.core = ov.Core()
        if cache_dir is not None:
            self.core.set_property({"CACHE_DIR": os.fspath(cache_dir)})
        config: Dict[str, Any] = {"PERFORMANCE_HINT": hint,
                                  "INFERENCE_PRECISION_HINT": _PRECISIONS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if streams is not None and (not isinstance(streams, int) or streams < 1):
            raise BackendError(f"streams: expected an integer >= 1, found {streams!r}")
        if streams is not None:
            # concurrent requests, each on its own share of the threads: no barrier between
            # cores, so a core busy with decoding stalls one request instead of every layer
            config["NUM_STREAMS"] = int(streams)
        elif hint == "LATENCY":
            config["NUM_STREAMS"] = 1
        if profile:
            config["PERF_COUNT"] = True
        self.profile = bool(profile)
        try:
            # from the path, not a read model: with CACHE_DIR a cache hit then skips reading
            # and hashing the IR (~30 ms of e3d-infer's start-up on E3D-S)
            self.compiled = self.core.compile_model(str(path), device, config)
        except Exception as exc:  # openvino raises RuntimeError with the plugin's message
            raise BackendError(f"{path}: OpenVINO cannot compile this model on {device}: {exc}") from exc
        self._ov = ov
        self.path = path
        self.device = device
        self.precision = _PRECISIONS[precision]
        if len(self.compiled.inputs) != 1:
            raise BackendError(f"{path}: expected a model with one input (clips), "
                               f"found {len(self.compiled.inputs)}")
        self.input_shape = self.compiled.input(0).get_partial_shape()
        self.request = self.compiled.create_infer_request()
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.max_in_flight = self.streams
        self._pool = None  # worker threads for submit(), made on the first call

    @functools.cached_property
    def metadata(self) -> Dict[str, str]:
        """The IR's ``model_info`` entries (read on first use: start-up does not need them)."""
        rt_info = self.core.read_model(str(self.path)).get_rt_info()
        if not rt_info.__contains__("model_info"):
            return {}
        return {str(k): v.astype(str) for k, v in rt_info["model_info"].items()}

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            _ov()
        except MissingDependencyError:
            return False, f"openvino is not installed ({install_hint('openvino', 'openvino')})"
        return True, ""

    def _checked(self, clips: np.ndarray) -> np.ndarray:
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        if not self.input_shape.compatible(self._ov.PartialShape(list(clips.shape))):
            raise BackendError(f"{self.path.name}: expected input shaped {self.input_shape}, "
                               f"found {clips.shape}")
        return clips

    def run(self, clips: np.ndarray) -> np.ndarray:
        # share_inputs: the request reads the (contiguous float32) array in place instead
        # of copying 4 MB per E3D-S window into its own tensor first
        self.request.infer({0: self._checked(clips)}, share_inputs=True)
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def submit(self, clips: np.ndarray) -> "Future[np.ndarray]":
        """:meth:`run` on one of ``streams`` infer requests, each driven by its own worker
        thread (``infer`` releases the GIL); submissions beyond that wait their turn.

        Not ``AsyncInferQueue``: its Python callback is skipped when a request fails, so a
        future waiting on it would never resolve; here a failure reaches the future as a
        :class:`BackendError`.
        """
        if self.max_in_flight == 1:
            return super().submit(clips)
        clips = self._checked(clips)
        if self._pool is None:
            import queue
            from concurrent.futures import ThreadPoolExecutor

            self._idle = queue.SimpleQueue()
            for _ in range(self.max_in_flight):
                self._idle.put(self.compiled.create_infer_request())
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="e3d-ov")
        return self._pool.submit(self._run_on_idle_request, clips)

    def _run_on_idle_request(self, clips: np.ndarray) -> np.ndarray:
        request = self._idle.get()
        try:
            request.infer({0: clips}, share_inputs=True)
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        except Exception as exc:  # openvino raises RuntimeError with the plugin's message
            raise BackendError(f"{self.path.name}: inference failed: {exc}") from exc
        finally:
            self._idle.put(request)

    def layer_times(self) -> List[Dict[str, Any]]:
        """Per executed layer of the last :meth:`run`: name, node and kernel type, ms."""
        if not self.profile:
            raise BackendError(f"{self.path.name}: per-layer times need load_backend(..., profile=True)")
        return [{"name": info.node_name, "node_type": info.node_type, "exec_type": info.exec_type,
                 "ms": info.real_time.total_seconds() * 1000.0}
                for info in self.request.profiling_info]

    def kernel_ms(self) -> float:
        """The last run's layer times summed, layout conversions (Reorder) left out."""
        return sum(t["ms"] for t in self.layer_times() if t["node_type"] not in LAYOUT_NODE_TYPES)

    def describe(self) -> Dict[str, Any]:
        ov = _ov()
        return {"backend": self.name, "runtime_version": ov.get_version(), "device": self.device,
                "precision": self.precision, "threads": self.threads, "streams": self.streams,
                "artifact": str(self.path),
                "profile": self.profile}
