"""ONNX Runtime backend: runs an exported ``.onnx`` (3D, lowered 2D or INT8) on the CPU.

The session is built once with a fixed intra-op thread count and one inter-op thread,
because the measurements this backend feeds (latency tables, benchmarks) must mean
"this many cores", not whatever the runtime picks.

On the CPU provider at the full optimization level the graph ONNX Runtime optimized
here is post-processed (:mod:`.ort_nchwc`): the frame shifts of a 2D-lowered E3D then
run on ONNX Runtime's blocked layout instead of converting out of it and back around
every temporal conv (needs the ``onnx`` package; without it the session is ONNX
Runtime's own). ``fold_reorders=False`` turns that off.
"""
from __future__ import annotations

import os
import tempfile
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
                 spin: bool = False, fold_reorders: bool = True, **options: Any):
        ort = _ort()
        super().__init__(artifact, threads=threads, **options)
        path = Path(os.fspath(artifact))
        if not path.is_file():
            raise BackendError(f"{path}: no such ONNX file")
        if optimization not in _OPT_LEVELS:
            raise BackendError(f"optimization: expected one of {_OPT_LEVELS}, found {optimization!r}")
        self._spin = spin
        self.providers: List[str] = list(providers or ["CPUExecutionProvider"])
        self.nchwc_folded: Optional[int] = None  # None: not attempted
        try:
            self.session = None
            if fold_reorders and optimization == "all" and self.providers == ["CPUExecutionProvider"]:
                self.session = self._folded_session(ort, path)
            if self.session is None:
                self.session = ort.InferenceSession(str(path), sess_options=self._options(ort, optimization),
                                                    providers=self.providers)
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

    def _options(self, ort: Any, optimization: str, optimized_path: Optional[str] = None) -> Any:
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not self._spin:
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
        if optimized_path:
            so.optimized_model_filepath = optimized_path
            # its warning (the saved graph is specific to this CPU) is exactly why it is used here
            so.log_severity_level = 3
        return so

    def _folded_session(self, ort: Any, path: Path) -> Any:
        """ONNX Runtime's optimized graph for this CPU with the frame-shift reorders folded
        (:func:`.ort_nchwc.fold_reorders`), or its own session when nothing folds."""
        try:
            import onnx
        except ImportError:
            return None
        from .ort_nchwc import fold_reorders

        with tempfile.TemporaryDirectory(prefix="e3d-ort-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            session = ort.InferenceSession(str(path), sess_options=self._options(ort, "all", str(optimized)),
                                           providers=self.providers)
            model = onnx.load(str(optimized))
        self.nchwc_folded = fold_reorders(model)
        if not self.nchwc_folded:
            return session
        # already optimized for this machine: running the optimizers again has nothing left to do
        return ort.InferenceSession(model.SerializeToString(), sess_options=self._options(ort, "disable"),
                                    providers=self.providers)

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
                "artifact": str(self.path), "nchwc_reorders_folded": self.nchwc_folded}
