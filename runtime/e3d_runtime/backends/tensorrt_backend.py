"""TensorRT backend: runs a serialized engine built by ``e3d_export.build_trt_engine``.

One code path for TensorRT 10.x (JetPack 6) and 11.x, using only names both versions'
Python API references document (docs/export.md lists each and where it was checked):
the name-based tensor API (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_profile_shape``,
``set_input_shape``, ``set_tensor_address``) and ``execute_async_v3``.

No torch: device memory, pinned host buffers and the stream come from NVIDIA's
``cuda-python`` (``cuda.bindings.runtime``, or ``cuda.cudart`` in cuda-python < 12.6),
so the backend runs on an edge box with only numpy, tensorrt and cuda-python. Every
inference is stream-ordered on one stream: copy in, execute, copy out, then one
synchronize. :meth:`TensorRTBackend.run_torch` takes CUDA torch tensors instead
(torch imported only there) and runs on torch's current stream.

**Unverified on our machines** (no CUDA GPU; tensorrt cannot be installed): without
tensorrt, cuda-python or a GPU, loading fails before touching the engine, naming the
``[trt]`` extra or the missing GPU.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import BackendError, MissingDependencyError
from .base import Backend, register_backend

#: TensorRT majors this code is written and checked against (the [trt] extra pins the same)
SUPPORTED_TRT_MAJORS = (10, 11)
SUPPORTED_TRT_RANGE = "tensorrt>=10,<12"


def import_tensorrt(purpose: str = "TensorRT engines"):
    """``tensorrt`` of a supported major version, or a clear error naming the range."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", purpose) from exc
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = -1
    if major not in SUPPORTED_TRT_MAJORS:
        raise BackendError(f"TensorRT {version} is installed; {purpose} support TensorRT 10.x and 11.x "
                           f"only ({SUPPORTED_TRT_RANGE}: pip install 'e3d-zoo[trt]')")
    return trt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def import_cudart(purpose: str = "TensorRT"):
    """cuda-python's CUDA runtime bindings (new and pre-12.6 module names)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise MissingDependencyError("cuda-python", "trt", purpose) from exc
    return cudart


def cuda_call(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result, raising BackendError on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:
        name = getattr(err, "name", str(err))
        raise BackendError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_status() -> Tuple[bool, str]:
    """(a CUDA GPU is usable, its name or why not). Never raises."""
    try:
        cudart = import_cudart()
    except MissingDependencyError as exc:
        return False, str(exc)
    try:
        count = cuda_call(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except BackendError as exc:
        return False, f"no usable CUDA GPU ({exc})"
    except Exception as exc:  # pragma: no cover - broken driver installs
        return False, f"CUDA probe failed: {exc}"
    if not count:
        return False, "no CUDA GPU is visible"
    try:
        props = cuda_call(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    except Exception:  # the name is for reports only
        name = "CUDA device 0"
    return True, name


class _PinnedDeviceBuffer:
    """A pinned host buffer and a device buffer of the same size, grown on demand."""

    def __init__(self, cudart: Any):
        self._cudart = cudart
        self.nbytes = 0
        self.host = 0
        self.device = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.host = cuda_call(self._cudart.cudaMallocHost(nbytes), "cudaMallocHost")
        self.device = cuda_call(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
        self.nbytes = nbytes

    def host_array(self, shape: Tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        ptr = ctypes.cast(int(self.host), ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(ptr, (count,)).reshape(shape)

    def free(self) -> None:
        if self.device:
            self._cudart.cudaFree(self.device)
        if self.host:
            self._cudart.cudaFreeHost(self.host)
        self.nbytes, self.host, self.device = 0, 0, 0


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    artifact_kinds = (".engine", ".plan")

    def __init__(self, artifact: Any, *, threads: Optional[int] = None, **options: Any):
        trt = import_tensorrt("the TensorRT backend")
        cudart = import_cudart("the TensorRT backend")
        ok, why = cuda_status()
        if not ok:
            raise BackendError(f"the TensorRT backend needs an NVIDIA GPU with CUDA: {why}")
        super().__init__(artifact, threads=threads, **options)
        path = Path(os.fspath(artifact))
        if not path.is_file():
            raise BackendError(f"{path}: no such TensorRT engine file")
        self.path = path
        self.trt_version = trt.__version__
        self.gpu = why
        self._trt, self._cudart = trt, cudart
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT {trt.__version__} could not deserialize the engine "
                               "(engines only load on the TensorRT version and GPU that built them)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{path}: expected one input and one output, found {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        for name in (self.input_name, self.output_name):
            dtype = self.engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:  # our engines keep float32 I/O at every precision
                raise BackendError(f"{path}: tensor {name!r} is {getattr(dtype, 'name', dtype)}, expected float32 I/O")
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0)]
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda_call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._in = _PinnedDeviceBuffer(cudart)
        self._out = _PinnedDeviceBuffer(cudart)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import_tensorrt()
            import_cudart()
        except (MissingDependencyError, BackendError) as exc:
            return False, str(exc)
        return cuda_status()

    def _bind(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if not self.context.set_input_shape(self.input_name, shape):
            lo, _, hi = self.profile
            raise BackendError(f"{self.path.name}: input shape {shape} is outside the engine's "
                               f"optimization profile (min {lo}, max {hi})")
        return tuple(self.context.get_tensor_shape(self.output_name))

    def _execute(self, stream: Any, in_ptr: int, out_ptr: int) -> None:
        if not (self.context.set_tensor_address(self.input_name, int(in_ptr))
                and self.context.set_tensor_address(self.output_name, int(out_ptr))):
            raise BackendError(f"{self.path.name}: TensorRT refused the I/O buffer addresses")
        if not self.context.execute_async_v3(int(stream)):
            raise BackendError(f"{self.path.name}: TensorRT execution failed")

    def run(self, clips: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        out_shape = self._bind(tuple(clips.shape))
        out_bytes = int(np.prod(out_shape)) * 4
        self._in.ensure(clips.nbytes)
        self._out.ensure(out_bytes)
        self._in.host_array(clips.shape)[...] = clips
        # one stream for copy-in, execute and copy-out: each starts after the previous
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart.cudaMemcpyAsync(self._in.device, self._in.host, clips.nbytes, h2d, self.stream),
                  "cudaMemcpyAsync (input)")
        self._execute(self.stream, self._in.device, self._out.device)
        cuda_call(cudart.cudaMemcpyAsync(self._out.host, self._out.device, out_bytes, d2h, self.stream),
                  "cudaMemcpyAsync (output)")
        cuda_call(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return self._out.host_array(out_shape).copy()

    def run_torch(self, clips: Any) -> Any:
        """Logits for a float32 CUDA torch tensor, as a CUDA tensor; no host copies.

        Runs on torch's current stream, so it is ordered after whatever produced
        ``clips`` and before whatever the caller does with the result.
        """
        import torch

        if not (isinstance(clips, torch.Tensor) and clips.is_cuda and clips.dtype == torch.float32):
            raise BackendError(f"{self.path.name}: run_torch expects a float32 CUDA tensor")
        clips = clips.contiguous()
        out = torch.empty(self._bind(tuple(clips.shape)), dtype=torch.float32, device=clips.device)
        self._execute(torch.cuda.current_stream(clips.device).cuda_stream, clips.data_ptr(), out.data_ptr())
        return out

    def close(self) -> None:
        for buf in (getattr(self, "_in", None), getattr(self, "_out", None)):
            if buf is not None:
                buf.free()
        if getattr(self, "stream", None) is not None:
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "runtime_version": self.trt_version, "device": self.gpu,
                "threads": self.threads, "artifact": str(self.path), "profile": self.profile}
