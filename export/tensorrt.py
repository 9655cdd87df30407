"""ONNX -> TensorRT engine (TensorRT 10 Python API), plus a static ONNX-op support check.

Two halves with different guarantees:

* :func:`check_trt_support` is pure ONNX inspection and runs anywhere. It checks every
  node against onnx-tensorrt's published operator support matrix
  (``onnx/onnx-tensorrt``, ``docs/operators.md``, the opset-17 matrix; TensorRT 10
  supports a superset) including the restrictions that matter for E3D graphs: Conv
  and pooling only 2D/3D, Conv weights as initializers, Slice/Squeeze axes as
  constants, zero zero-points on Q/DQ, and tensor dtypes TensorRT handles.
* :func:`build_trt_engine` needs the ``tensorrt`` package and a CUDA GPU. It was
  written against TensorRT 10's documented API and is **unverified here** (no GPU);
  without tensorrt or CUDA it raises before doing any work.

The engine is written with a JSON sidecar (``<engine>.json``): TensorRT/CUDA
versions, GPU, precision, optimization profile shapes, I/O names.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from e3d_zoo.atomic import atomic_write_bytes, atomic_write_text
from e3d_zoo.errors import BackendError, ExportError, MissingDependencyError

# Operators marked "Y" in onnx-tensorrt's docs/operators.md (opset <= 17 matrix).
TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GRU HardSwish HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Ops the matrix lists as unsupported ("N"); named so the report can say "unsupported" vs "unknown".
TRT_UNSUPPORTED_OPS = frozenset("""
Bernoulli BitShift BlackmanWindow Compress ConcatFromSequence ConvInteger DFT Det
DynamicQuantizeLinear HammingWindow HannWindow Hardmax IsInf LayerNormalization MatMulInteger
MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul STFT SequenceAt SequenceConstruct
SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss
SplitToSequence StringNormalizer TfIdfVectorizer Unique
""".split())

TRT_MAX_OPSET = 17  # the opset the support matrix is stated for; newer parsers accept more
# ONNX TensorProto dtypes TensorRT takes (INT64/DOUBLE are cast down by the parser).
_TRT_DTYPES = {1: "FLOAT", 10: "FLOAT16", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL",
               11: "DOUBLE", 2: "UINT8", 16: "BFLOAT16"}


def check_trt_support(model: Any) -> Dict[str, Any]:
    """Static check of an ONNX model (path or ModelProto) against TensorRT's ONNX parser.

    Returns ``{"supported": bool, "ops": {op: count}, "problems": [...], "opset": n}``;
    never raises on unsupported content (the caller decides), only on unreadable files.
    """
    import onnx

    if isinstance(model, (str, os.PathLike)):
        try:
            model = onnx.load(os.fspath(model))
        except Exception as exc:
            raise ExportError(f"{model}: cannot read ONNX model: {exc}") from exc
    inits = {i.name for i in model.graph.initializer}
    const_outputs = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    constant = inits | const_outputs
    init_by_name = {i.name: i for i in model.graph.initializer}
    problems: List[str] = []
    ops: Dict[str, int] = {}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > TRT_MAX_OPSET:
        problems.append(f"opset {opset} is newer than the support matrix's opset {TRT_MAX_OPSET}; "
                        "TensorRT 10 parsers accept it, older ones may not")
    try:
        shaped = onnx.shape_inference.infer_shapes(model)
        ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
                 for vi in list(shaped.graph.value_info) + list(shaped.graph.input)
                 + list(shaped.graph.output) if vi.type.HasField("tensor_type")}
    except Exception:
        ranks = {}
    for i in model.graph.initializer:
        ranks.setdefault(i.name, len(i.dims))
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        where = f"node {node.name or node.op_type!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r} needs a TensorRT plugin")
            continue
        if node.op_type in TRT_UNSUPPORTED_OPS:
            problems.append(f"{where}: not supported by TensorRT's ONNX parser")
            continue
        if node.op_type not in TRT_SUPPORTED_OPS:
            problems.append(f"{where}: not in TensorRT's ONNX operator support matrix")
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            if len(node.input) > 1 and node.input[1] not in constant:
                problems.append(f"{where}: weights {node.input[1]!r} must be an initializer")
        if node.op_type in ("Conv", "ConvTranspose", "AveragePool", "MaxPool"):
            r = ranks.get(node.input[0])
            if r is not None and r not in (4, 5):
                problems.append(f"{where}: only 2D or 3D is supported, input rank is {r}")
        if node.op_type in ("Slice", "Squeeze", "Unsqueeze", "TopK", "CumSum"):
            idx = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "TopK": 1, "CumSum": 1}[node.op_type]
            if len(node.input) > idx and node.input[idx] and node.input[idx] not in constant:
                problems.append(f"{where}: input {node.input[idx]!r} must be a constant")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = init_by_name.get(node.input[2])
            if zp is not None:
                from onnx import numpy_helper

                if numpy_helper.to_array(zp).any():
                    problems.append(f"{where}: zero point must be 0 (TensorRT uses symmetric "
                                    "quantization); quantize with symmetric activations")
    for vi in list(model.graph.input) + list(model.graph.output):
        et = vi.type.tensor_type.elem_type
        if et not in _TRT_DTYPES:
            problems.append(f"graph I/O {vi.name!r}: dtype {et} is not supported by TensorRT")
    return {"supported": not [p for p in problems if not p.startswith("opset")],
            "ops": ops, "problems": problems, "opset": opset}


# ---- engine build (needs tensorrt + CUDA) -------------------------------------------
def cuda_status() -> Tuple[bool, str]:
    """(CUDA usable, why not). Uses torch's CUDA probe; never raises."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        return True, torch.cuda.get_device_name(0)
    except Exception as exc:  # pragma: no cover - broken CUDA installs
        return False, f"CUDA probe failed: {exc}"


def require_tensorrt(purpose: str = "TensorRT engines"):
    """Import tensorrt (>= 10) and check CUDA, or raise before any work is done."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", purpose) from exc
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise BackendError(f"TensorRT {trt.__version__} found; {purpose} need TensorRT 10 or newer "
                           "(pip install 'e3d-zoo[trt]')")
    ok, why = cuda_status()
    if not ok:
        raise BackendError(f"{purpose} need an NVIDIA GPU with CUDA: {why}")
    return trt


def _profile_shapes(input_shape: Sequence[int], batch: Tuple[int, int, int]) -> Dict[str, List[int]]:
    _, c, t, h, w = input_shape
    return {k: [b, c, t, h, w] for k, b in zip(("min", "opt", "max"), batch)}


def build_trt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *,
                     fp16: bool = False, int8: bool = False, calibration_clips: Any = None,
                     batch: Tuple[int, int, int] = (1, 1, 8), workspace_mb: int = 2048,
                     timing_cache: Optional[str | os.PathLike] = None,
                     check_ops: bool = True) -> Path:
    """Build a serialized TensorRT engine from ``onnx_path``; writes the engine + JSON sidecar.

    ``batch``: (min, opt, max) of the optimization profile on the dynamic batch axis
    (ignored for static-batch exports). ``int8`` needs ``calibration_clips``
    (N, C, T, H, W) float32 for TensorRT's entropy calibrator. ``timing_cache``: a
    file that is read if present and updated after the build, so rebuilds are fast.
    """
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: no such ONNX file")
    if int8 and calibration_clips is None:
        raise ExportError("int8: TensorRT INT8 needs calibration_clips (N, C, T, H, W)")
    if not (1 <= batch[0] <= batch[1] <= batch[2]):
        raise ExportError(f"batch: expected min <= opt <= max, all >= 1, found {batch}")
    trt = require_tensorrt("building a TensorRT engine")  # before any work
    if check_ops:
        report = check_trt_support(onnx_path)
        if not report["supported"]:
            raise ExportError(f"{onnx_path}: TensorRT cannot parse this model: "
                              + "; ".join(report["problems"]))

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: " + "; ".join(errs))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    precision = "fp32"
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16"
    profiles: Dict[str, Dict[str, List[int]]] = {}
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            if any(d < 0 for d in shape[1:]):
                raise ExportError(f"{onnx_path}: input {tensor.name!r} has dynamic dims {shape} "
                                  "other than batch; export with static frames for TensorRT")
            shapes = _profile_shapes(shape, batch)
            profile.set_shape(tensor.name, shapes["min"], shapes["opt"], shapes["max"])
        else:
            shapes = {k: shape for k in ("min", "opt", "max")}
        profiles[tensor.name] = shapes
    config.add_optimization_profile(profile)
    calibrator = None
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, calibration_clips, engine_path.with_suffix(".calib"))
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
        precision = "int8+fp16" if fp16 else "int8"
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    ok, gpu = cuda_status()
    import torch

    sidecar = {
        "engine": engine_path.name, "source_onnx": onnx_path.name, "precision": precision,
        "tensorrt_version": trt.__version__, "cuda_version": torch.version.cuda, "gpu": gpu,
        "profiles": profiles,
        "inputs": [network.get_input(i).name for i in range(network.num_inputs)],
        "outputs": [network.get_output(i).name for i in range(network.num_outputs)],
        "workspace_mb": workspace_mb, "host": platform.node(),
    }
    atomic_write_text(engine_sidecar_path(engine_path), json.dumps(sidecar, indent=2))
    return engine_path


def engine_sidecar_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def _make_calibrator(trt: Any, clips: Any, cache_file: Path):
    """An IInt8EntropyCalibrator2 feeding ``clips`` one at a time from GPU memory."""
    import numpy as np
    import torch

    data = np.ascontiguousarray(clips, dtype=np.float32)

    class ClipCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.device = torch.empty((1,) + data.shape[1:], dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            if self.index >= len(data):
                return None
            self.device.copy_(torch.from_numpy(data[self.index:self.index + 1]))
            self.index += 1
            return [int(self.device.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            atomic_write_bytes(cache_file, bytes(cache))

    return ClipCalibrator()


def read_engine_sidecar(engine_path: str | os.PathLike) -> Mapping[str, Any]:
    path = engine_sidecar_path(engine_path)
    if not path.is_file():
        raise BackendError(f"{engine_path}: its sidecar {path.name} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise BackendError(f"{path}: not valid JSON: {exc}") from exc
