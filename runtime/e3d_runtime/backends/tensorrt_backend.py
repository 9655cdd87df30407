"""TensorRT backend: runs a serialized engine built by ``e3d_export.build_trt_engine``.

Written against TensorRT 10's name-based tensor API (``num_io_tensors``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with torch CUDA
tensors as device buffers. **Unverified on our machines** (no CUDA GPU; tensorrt
cannot be installed): without tensorrt or CUDA, loading fails before touching the
engine, naming the ``[trt]`` extra.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..errors import BackendError, MissingDependencyError
from .base import Backend, register_backend


def _cuda_ok() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, ""
        return False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except Exception as exc:  # pragma: no cover
        return False, f"CUDA probe failed: {exc}"


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    artifact_kinds = (".engine", ".plan")

    def __init__(self, artifact: Any, *, threads: Optional[int] = None, **options: Any):
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingDependencyError("tensorrt", "trt", "the TensorRT backend") from exc
        ok, why = _cuda_ok()
        if not ok:
            raise BackendError(f"the TensorRT backend needs an NVIDIA GPU with CUDA: {why}")
        super().__init__(artifact, threads=threads, **options)
        import torch

        path = Path(os.fspath(artifact))
        if not path.is_file():
            raise BackendError(f"{path}: no such TensorRT engine file")
        self.path = path
        self._torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT could not deserialize the engine (built with another "
                               f"TensorRT version or GPU? this is TensorRT {trt.__version__})")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{path}: expected one input and one output, found {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.stream = torch.cuda.Stream()
        self.trt_version = trt.__version__

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return False, "tensorrt is not installed (pip install 'e3d-zoo[trt]')"
        return _cuda_ok()

    def run(self, clips: np.ndarray) -> np.ndarray:
        torch = self._torch
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        x = torch.from_numpy(clips).cuda()
        if not self.context.set_input_shape(self.input_name, tuple(clips.shape)):
            raise BackendError(f"{self.path.name}: input shape {clips.shape} is outside the engine's "
                               "optimization profile")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        y = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.path.name}: TensorRT execution failed")
        self.stream.synchronize()
        return y.cpu().numpy()

    def describe(self) -> Dict[str, Any]:
        torch = self._torch
        return {"backend": self.name, "runtime_version": self.trt_version,
                "device": torch.cuda.get_device_name(0), "threads": self.threads,
                "artifact": str(self.path)}
