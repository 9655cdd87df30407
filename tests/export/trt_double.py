"""A recording test double of ``tensorrt`` and ``cuda-python``: NOT TensorRT.

TensorRT needs an NVIDIA GPU, which no machine of this project has, so these stand-ins
let the tests check what our code asks of TensorRT and CUDA, in what order, with what
arguments; they prove nothing about what TensorRT does (docs/export.md: unverified).

Each stand-in exposes only the names its version's Python API reference documents for
what we use: the TensorRT 11 double has no ``BuilderFlag.FP16/INT8`` (removed in 11), so
code touching them fails here as it would there. The "engine" it serializes is the ONNX
file itself, and "executing" it runs that ONNX on ONNX Runtime with the bytes the code
copied into the double's device memory, so the host<->device data path is checked with
real numbers.
"""
from __future__ import annotations

import ctypes
import enum
import sys
import types
from typing import Any, Dict, List, Tuple

import numpy as np


class Recorder:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []

    def add(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def names(self) -> List[str]:
        return [c[0] for c in self.calls]


# ---- cuda-python (cuda.bindings.runtime) -----------------------------------------------
class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


def make_cudart(rec: Recorder) -> types.ModuleType:
    """A cuda.bindings.runtime stand-in; "device" memory is host memory it owns."""
    m = types.ModuleType("cuda.bindings.runtime")
    buffers: Dict[int, Any] = {}
    ok = cudaError_t.cudaSuccess

    def alloc(n):
        buf = ctypes.create_string_buffer(int(n))
        buffers[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    class Props:
        name = b"Recording double (not a GPU)"

    def memcpy_async(dst, src, count, kind, stream):
        rec.add("cudaMemcpyAsync", kind, int(stream))
        ctypes.memmove(int(dst), int(src), int(count))
        return (ok,)

    m.cudaError_t = cudaError_t
    m.cudaMemcpyKind = cudaMemcpyKind
    m.cudaGetDeviceCount = lambda: (ok, 1)
    m.cudaGetDeviceProperties = lambda i: (ok, Props())
    m.cudaRuntimeGetVersion = lambda: (ok, 12060)
    m.cudaMalloc = lambda n: (rec.add("cudaMalloc", n), (ok, alloc(n)))[1]
    m.cudaMallocHost = lambda n: (rec.add("cudaMallocHost", n), (ok, alloc(n)))[1]
    m.cudaFree = lambda p: (buffers.pop(int(p), None), (ok,))[1]
    m.cudaFreeHost = lambda p: (buffers.pop(int(p), None), (ok,))[1]
    m.cudaStreamCreate = lambda: (rec.add("cudaStreamCreate"), (ok, 7001))[1]
    m.cudaStreamDestroy = lambda s: (rec.add("cudaStreamDestroy", s), (ok,))[1]
    m.cudaStreamSynchronize = lambda s: (rec.add("cudaStreamSynchronize", int(s)), (ok,))[1]
    m.cudaMemcpyAsync = memcpy_async
    return m


# ---- tensorrt ------------------------------------------------------------------------------
def make_tensorrt(major: int, rec: Recorder, *, profile_index: int = 0, parse_ok: bool = True,
                  build_ok: bool = True, input_dtype: str = "FLOAT") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = f"{major}.4.0.26"

    class Severity(enum.IntEnum):
        ERROR = 1
        WARNING = 2

    class Logger:
        WARNING = Severity.WARNING

        def __init__(self, severity=Severity.WARNING):
            rec.add("Logger", severity)

    flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
             "SPARSE_WEIGHTS": 7}
    if major == 10:  # present in 10.x, removed in 11.x
        flags.update({"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 9, "BF16": 17})
    BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3})
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Network:
        def __init__(self):
            self.inputs: List[Tensor] = []
            self.outputs: List[Tensor] = []
            self.onnx = b""

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            rec.add("OnnxParser.parse_from_file", path)
            import onnx

            model = onnx.load(path)
            dim = lambda d: d.dim_value if d.HasField("dim_value") else -1  # noqa: E731
            for vi, into in ((model.graph.input, self.network.inputs), (model.graph.output, self.network.outputs)):
                for v in vi:
                    dtype = DataType[input_dtype] if into is self.network.inputs else DataType.FLOAT
                    into.append(Tensor(v.name, [dim(d) for d in v.type.tensor_type.shape.dim], dtype))
            self.network.onnx = open(path, "rb").read()
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Conv): double-made parser error"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            rec.add("IOptimizationProfile.set_shape", name, tuple(lo), tuple(opt), tuple(hi))
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def serialize(self):
            return b"timing-cache"

    class Config:
        def __init__(self):
            self.flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
            self.profiles: List[Profile] = []

        def set_memory_pool_limit(self, pool, size):
            rec.add("IBuilderConfig.set_memory_pool_limit", pool, size)

        def set_flag(self, flag):
            rec.add("IBuilderConfig.set_flag", flag)
            self.flags.add(flag)

        def clear_flag(self, flag):
            rec.add("IBuilderConfig.clear_flag", flag)
            self.flags.discard(flag)

        def add_optimization_profile(self, profile):
            rec.add("IBuilderConfig.add_optimization_profile")
            self.profiles.append(profile)
            return profile_index

        def create_timing_cache(self, data):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.add("IBuilderConfig.set_timing_cache", ignore_mismatch)
            return True

        def get_timing_cache(self):
            return TimingCache()

    class Builder:
        def __init__(self, logger):
            rec.add("Builder")

        def create_network(self, flags=0):
            rec.add("Builder.create_network", flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.add("Builder.build_serialized_network", frozenset(config.flags))
            if not build_ok:
                return None
            shapes = config.profiles[0].shapes
            header = repr({k: v for k, v in shapes.items()}).encode()
            return b"E3DDOUBLE" + len(header).to_bytes(4, "little") + header + network.onnx

    class Engine:
        def __init__(self, blob):
            n = int.from_bytes(blob[9:13], "little")
            self.profile = eval(blob[13:13 + n].decode())  # noqa: S307 - our own test bytes
            import onnxruntime as ort

            self.session = ort.InferenceSession(blob[13 + n:], providers=["CPUExecutionProvider"])
            self.in_name = self.session.get_inputs()[0].name
            self.out_name = self.session.get_outputs()[0].name
            self.classes = self.session.get_outputs()[0].shape[1]

        num_io_tensors = 2

        def get_tensor_name(self, i):
            return (self.in_name, self.out_name)[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == self.in_name else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name, index):
            return [list(s) for s in self.profile[name]]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.shape = None
            self.addr: Dict[str, int] = {}

        def set_input_shape(self, name, shape):
            rec.add("IExecutionContext.set_input_shape", name, tuple(shape))
            lo, _, hi = self.engine.profile[name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return (self.shape[0], self.engine.classes)

        def set_tensor_address(self, name, ptr):
            rec.add("IExecutionContext.set_tensor_address", name)
            self.addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            rec.add("IExecutionContext.execute_async_v3", int(stream_handle))
            n = int(np.prod(self.shape))
            x = np.ctypeslib.as_array(ctypes.cast(self.addr[self.engine.in_name], ctypes.POINTER(ctypes.c_float)),
                                      (n,)).reshape(self.shape).copy()
            y = self.engine.session.run(None, {self.engine.in_name: x})[0].astype(np.float32)
            ctypes.memmove(self.addr[self.engine.out_name], y.ctypes.data, y.nbytes)
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            rec.add("Runtime.deserialize_cuda_engine")
            return Engine(bytes(blob)) if bytes(blob).startswith(b"E3DDOUBLE") else None

    for name, value in dict(Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
                            BuilderFlag=BuilderFlag, MemoryPoolType=MemoryPoolType, DataType=DataType,
                            TensorIOMode=TensorIOMode,
                            NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag).items():
        setattr(trt, name, value)
    return trt


def install(monkeypatch, major: int = 10, **kwargs: Any) -> Recorder:
    """Put the doubles in ``sys.modules`` for one test; returns their recorder."""
    rec = Recorder()
    cudart = make_cudart(rec)
    cuda_pkg = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda_pkg.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(major, rec, **kwargs))
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return rec
