"""ONNX -> TensorRT engine (TensorRT 10.x and 11.x), plus a static ONNX-op support check.

Two halves with different guarantees:

* :func:`check_trt_support` is pure ONNX inspection and runs anywhere. It checks every
  node against onnx-tensorrt's published operator support matrix
  (``onnx/onnx-tensorrt``, ``docs/operators.md``, the opset-17 matrix; TensorRT 10
  supports a superset) including the restrictions that matter for E3D graphs: Conv
  and pooling only 2D/3D, Conv weights as initializers, Slice/Squeeze axes as
  constants, zero zero-points on Q/DQ, and tensor dtypes TensorRT handles.
* :func:`build_trt_engine` needs ``tensorrt`` (10.x or 11.x), ``cuda-python`` and a
  CUDA GPU. One code path for both majors: a strongly typed network parsed from an ONNX
  that already carries its precision (fp32; fp16 from :func:`~.onnx.export_onnx_fp16`;
  INT8 as Q/DQ from :func:`~.quantize.quantize_onnx_int8`), so no precision builder
  flag (TensorRT 11 removed ``BuilderFlag.FP16/INT8``, ``int8_calibrator`` and implicit
  quantization). TF32 is cleared (the ONNX says float32, so float32 it is), the
  optimization profile's index and the engine's I/O dtypes are checked. Every TensorRT
  name used is checked against NVIDIA's 10.x and 11.x Python API references
  (docs/export.md has the table). **Unverified here** (no GPU): without tensorrt, CUDA
  or a supported version it raises before doing any work.

The engine is written with a JSON sidecar (``<engine>.json``): TensorRT/CUDA
versions, GPU, precision, TF32, optimization profile shapes, I/O names and dtypes.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from e3d_zoo.atomic import atomic_write_bytes, atomic_write_text, read_json_limited
from e3d_zoo.errors import BackendError, ExportError
from e3d_zoo.runtime.tensorrt_backend import (SUPPORTED_TRT_RANGE, cuda_call, cuda_status, import_cudart,
                                              import_tensorrt, trt_major)

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


def _qdq_problems(node: Any, where: str, inits: Mapping[str, Any]) -> List[str]:
    """TensorRT's Q/DQ rules (onnx-tensorrt operator matrix): INT8 only, zero point 0."""
    from onnx import TensorProto, numpy_helper

    out = []
    zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is not None and numpy_helper.to_array(zp).any():
        out.append(f"{where}: zero point must be 0 (TensorRT uses symmetric quantization); "
                   "quantize with symmetric activations")
    if node.op_type == "QuantizeLinear":
        if zp is None:
            out.append(f"{where}: no zero point, so the output is uint8; TensorRT takes int8 only")
        elif zp.data_type != TensorProto.INT8:
            out.append(f"{where}: quantizes to {TensorProto.DataType.Name(zp.data_type)}; TensorRT "
                       "takes int8 only")
    else:
        x = inits.get(node.input[0])
        if x is not None and x.data_type != TensorProto.INT8:
            out.append(f"{where}: dequantizes {TensorProto.DataType.Name(x.data_type)} {node.input[0]!r}; "
                       "TensorRT takes int8 only (keep biases float: QuantizeBias=False)")
    return out


def onnx_precision(model: Any) -> str:
    """The precision an ONNX graph carries: ``int8`` (Q/DQ), ``fp16`` (fp16 weights) or ``fp32``."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        return "fp16"
    return "fp32"


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
    for node in model.graph.node:  # weights given as (Q/)DQ of an initializer are constants too
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast") and node.input[0] in constant:
            constant.update(node.output)
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
                problems.append(f"{where}: weights {node.input[1]!r} must be an initializer "
                                "(or its DequantizeLinear)")
        if node.op_type in ("Conv", "ConvTranspose", "AveragePool", "MaxPool"):
            r = ranks.get(node.input[0])
            if r is not None and r not in (4, 5):
                problems.append(f"{where}: only 2D or 3D is supported, input rank is {r}")
        if node.op_type in ("Slice", "Squeeze", "Unsqueeze", "TopK", "CumSum"):
            idx = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "TopK": 1, "CumSum": 1}[node.op_type]
            if len(node.input) > idx and node.input[idx] and node.input[idx] not in constant:
                problems.append(f"{where}: input {node.input[idx]!r} must be a constant")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems.extend(_qdq_problems(node, where, init_by_name))
    for vi in list(model.graph.input) + list(model.graph.output):
        et = vi.type.tensor_type.elem_type
        if et not in _TRT_DTYPES:
            problems.append(f"graph I/O {vi.name!r}: dtype {et} is not supported by TensorRT")
    return {"supported": not [p for p in problems if not p.startswith("opset")],
            "ops": ops, "problems": problems, "opset": opset}


# ---- engine build (needs tensorrt + cuda-python + a CUDA GPU) ------------------------
def require_tensorrt(purpose: str = "TensorRT engines"):
    """Import tensorrt (10.x or 11.x) and check for a CUDA GPU, or raise before any work."""
    trt = import_tensorrt(purpose)
    import_cudart(purpose)
    ok, why = cuda_status()
    if not ok:
        raise BackendError(f"{purpose} need an NVIDIA GPU with CUDA: {why}")
    return trt


def _profile_shapes(input_shape: Sequence[int], batch: Tuple[int, int, int]) -> Dict[str, List[int]]:
    _, c, t, h, w = input_shape
    return {k: [b, c, t, h, w] for k, b in zip(("min", "opt", "max"), batch)}


def _strongly_typed_flags(trt: Any) -> int:
    # TensorRT 10: strong typing is opt-in through this flag. TensorRT 11: always on; the
    # flag is kept but deprecated and ignored, so pass nothing.
    if trt_major(trt) == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _clear_tf32(trt: Any, config: Any) -> bool:
    """Clear TF32 (on by default from Ampere on); True when the flag exists and was cleared."""
    flag = getattr(trt.BuilderFlag, "TF32", None)
    if flag is None:
        return False
    config.clear_flag(flag)
    return True


def build_trt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *,
                     batch: Tuple[int, int, int] = (1, 1, 8), workspace_mb: int = 2048,
                     timing_cache: Optional[str | os.PathLike] = None,
                     check_ops: bool = True) -> Path:
    """Build a serialized TensorRT engine from ``onnx_path``; writes the engine + JSON sidecar.

    The engine's precision is the ONNX's (:func:`onnx_precision`): pass the fp32 ONNX,
    the fp16 one or the Q/DQ INT8 one. ``batch``: (min, opt, max) of the optimization
    profile on the dynamic batch axis (ignored for static-batch exports).
    ``timing_cache``: read if present and updated after the build, so rebuilds are fast.
    """
    from .onnx import existing_onnx

    onnx_path = existing_onnx(onnx_path)
    engine_path = Path(engine_path)
    if not (1 <= batch[0] <= batch[1] <= batch[2]):
        raise ExportError(f"batch: expected min <= opt <= max, all >= 1, found {batch}")
    trt = require_tensorrt("building a TensorRT engine")  # before any work
    precision = onnx_precision(onnx_path)
    if check_ops:
        report = check_trt_support(onnx_path)
        if not report["supported"]:
            raise ExportError(f"{onnx_path}: TensorRT cannot parse this model: "
                              + "; ".join(report["problems"]))

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: " + "; ".join(errs))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    tf32_cleared = _clear_tf32(trt, config)
    profile = builder.create_optimization_profile()
    profiles: Dict[str, Dict[str, List[int]]] = {}
    io: Dict[str, Dict[str, Any]] = {}
    for tensor in [network.get_input(i) for i in range(network.num_inputs)]:
        if tensor.dtype != trt.DataType.FLOAT:
            raise ExportError(f"{onnx_path}: input {tensor.name!r} is {getattr(tensor.dtype, 'name', tensor.dtype)}; our engines take "
                              "float32 clips at every precision (export fp16 ONNX with keep_io_types)")
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ExportError(f"{onnx_path}: input {tensor.name!r} has dynamic dims {shape} other than "
                              "batch; export with static frames for TensorRT")
        shapes = _profile_shapes(shape, batch) if shape[0] < 0 else {k: shape for k in ("min", "opt", "max")}
        profile.set_shape(tensor.name, shapes["min"], shapes["opt"], shapes["max"])
        profiles[tensor.name] = shapes
        io[tensor.name] = {"mode": "input", "dtype": "float32"}
    for tensor in [network.get_output(i) for i in range(network.num_outputs)]:
        if tensor.dtype != trt.DataType.FLOAT:
            raise ExportError(f"{onnx_path}: output {tensor.name!r} is {getattr(tensor.dtype, 'name', tensor.dtype)}, expected float32")
        io[tensor.name] = {"mode": "output", "dtype": "float32"}
    if config.add_optimization_profile(profile) < 0:
        raise ExportError(f"{onnx_path}: TensorRT rejected the optimization profile {profiles}")
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
    cudart = import_cudart()
    _, gpu = cuda_status()
    try:
        cuda_runtime = cuda_call(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    except BackendError:
        cuda_runtime = None
    sidecar = {
        "engine": engine_path.name, "source_onnx": onnx_path.name, "precision": precision,
        "strongly_typed": True, "tf32": not tf32_cleared,
        "tensorrt_version": trt.__version__, "supported_range": SUPPORTED_TRT_RANGE,
        "cuda_runtime_version": cuda_runtime, "gpu": gpu, "profiles": profiles, "io": io,
        "inputs": [n for n, d in io.items() if d["mode"] == "input"],
        "outputs": [n for n, d in io.items() if d["mode"] == "output"],
        "workspace_mb": workspace_mb, "host": platform.node(),
    }
    atomic_write_text(engine_sidecar_path(engine_path), json.dumps(sidecar, indent=2))
    return engine_path


def engine_sidecar_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_sidecar(engine_path: str | os.PathLike) -> Mapping[str, Any]:
    path = engine_sidecar_path(engine_path)
    if not path.is_file():
        raise BackendError(f"{engine_path}: its sidecar {path.name} is missing")
    return read_json_limited(path, 16 << 20, what="engine sidecar", error=BackendError)
