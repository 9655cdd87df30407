"""ONNX Runtime backend: runs an exported ``.onnx`` (3D, lowered 2D or INT8) on the CPU.

The session is built once with a fixed intra-op thread count and one inter-op thread,
because the measurements this backend feeds (latency tables, benchmarks) must mean
"this many cores", not whatever the runtime picks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import BackendError, install_hint, require
from .base import Backend, register_backend

_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    return require("onnxruntime", "onnx", "the ONNX Runtime backend")


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    artifact_kinds = (".onnx",)

    def __init__(self, artifact: Any, *, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, optimization: str = "all",
                 spin: bool = False, **options: Any):
        ort = _ort()
        super().__init__(artifact, threads=threads, **options)
        path = Path(os.fspath(artifact))
        if not path.is_file():
            raise BackendError(f"{path}: no such ONNX file")
        if optimization not in _OPT_LEVELS:
            raise BackendError(f"optimization: expected one of {_OPT_LEVELS}, found {optimization!r}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not spin:
            # ORT's idle worker threads busy-wait after each run by default; on 2 cores that
            # steals the CPU from whatever runs next (video decoding, another backend in an
            # interleaved benchmark) and inflates its latency.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        self.providers: List[str] = list(providers or ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"{path}: ONNX Runtime cannot load this model: {exc}") from exc
        self.path = path
        inp = self.session.get_inputs()
        if len(inp) != 1:
            raise BackendError(f"{path}: expected a model with one input (clips), found {len(inp)}")
        self.input_name = inp[0].name
        self.input_shape = list(inp[0].shape)  # ints for static dims, str/None for dynamic
        self.output_name = self.session.get_outputs()[0].name
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, f"onnxruntime is not installed ({install_hint('onnxruntime', 'onnx')})"
        return True, ""

    def _check(self, clips: np.ndarray) -> np.ndarray:
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        if clips.ndim != len(self.input_shape):
            raise BackendError(f"{self.path.name}: expected input shaped {self.input_shape}, "
                               f"found {clips.shape}")
        for i, (want, got) in enumerate(zip(self.input_shape, clips.shape)):
            if isinstance(want, int) and want != got:
                raise BackendError(f"{self.path.name}: expected input shaped {self.input_shape} "
                                   f"(dim {i} is fixed at {want} in this export), found {clips.shape}")
        return clips

    def run(self, clips: np.ndarray) -> np.ndarray:
        clips = self._check(clips)
        return self.session.run([self.output_name], {self.input_name: clips})[0]

    def describe(self) -> Dict[str, Any]:
        ort = _ort()
        return {"backend": self.name, "runtime_version": ort.__version__, "device": "cpu",
                "providers": self.session.get_providers(), "threads": self.threads,
                "artifact": str(self.path)}
