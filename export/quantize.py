"""Post-training static INT8 quantization, calibrated over clips.

* ONNX Runtime: ``onnxruntime.quantization.quantize_static`` in QDQ format, either in
  ORT's CPU form (uint8 activations, int32 biases: fast on ORT) or, with ``for_tensorrt``,
  in the form TensorRT's explicit quantization takes (its ONNX parser: Q/DQ int8 only, zero
  points 0, DequantizeLinear inputs int8): symmetric int8 activations (per tensor,
  calibrated by min/max over the clips), symmetric int8 per-channel weights (axis 0,
  range [-127, 127]) and float biases (TensorRT rejects the int32 bias DequantizeLinear
  ORT writes otherwise). ORT runs that file too, but as float convs between Q/DQ pairs.
* OpenVINO: NNCF's ``nncf.quantize`` on the converted model (``[openvino]`` extra).

Reduced precision is judged by the INT8 criteria of :mod:`e3d_runtime.criteria`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from e3d_zoo.atomic import atomic_path
from e3d_zoo.errors import ExportError, MissingDependencyError, require


def _calibration_clips(clips: Any) -> np.ndarray:
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    if clips.ndim != 5 or len(clips) == 0:
        raise ExportError(f"calibration clips: expected a non-empty (N, C, T, H, W) array, "
                          f"found shape {clips.shape}")
    return clips


def quantize_onnx_int8(onnx_path: str | os.PathLike, out_path: str | os.PathLike, clips: Any, *,
                       per_channel: bool = True, for_tensorrt: bool = False,
                       calibrate_method: str = "minmax") -> Path:
    """Static INT8 (QDQ) copy of ``onnx_path`` calibrated on ``clips`` (N, C, T, H, W).

    ``for_tensorrt=True`` writes the Q/DQ form TensorRT builds strongly typed INT8
    engines from (see the module docstring); the default is ONNX Runtime's CPU form
    (uint8 asymmetric activations, int32 quantized biases), which ORT fuses into integer
    kernels and TensorRT rejects. ORT runs the TensorRT form as float convs between Q/DQ
    pairs: E3D-S lowered, 2 shared threads, 88 ms (CPU form) against 247 ms (TensorRT
    form) and 129 ms (fp32), docs/export_int8_forms.json.
    """
    require("onnxruntime", "onnx", "INT8 quantization")
    from onnxruntime import quantization as q

    from .onnx import existing_onnx

    onnx_path = existing_onnx(onnx_path)
    clips = _calibration_clips(clips)
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ExportError(f"calibrate_method: expected one of {sorted(methods)}, found {calibrate_method!r}")

    import onnx

    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name

    class ClipReader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(clips[i:i + 1] for i in range(len(clips)))

        def get_next(self):
            clip = next(self._it, None)
            return None if clip is None else {input_name: clip}

    work = Path(tempfile.mkdtemp(prefix="e3d_quant_"))
    try:
        pre = work / "pre.onnx"
        try:
            q.quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the original if it fails
            shutil.copyfile(onnx_path, pre)
        out_path = Path(out_path)
        with atomic_path(out_path) as tmp:
            try:
                q.quantize_static(
                    str(pre), str(tmp), ClipReader(), quant_format=q.QuantFormat.QDQ,
                    per_channel=per_channel, weight_type=q.QuantType.QInt8,
                    activation_type=q.QuantType.QInt8 if for_tensorrt else q.QuantType.QUInt8,
                    calibrate_method=methods[calibrate_method],
                    extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True,
                                   "QuantizeBias": not for_tensorrt})
            except Exception as exc:
                raise ExportError(f"{onnx_path}: onnxruntime static quantization failed: {exc}") from exc
            _copy_metadata(onnx_path, tmp, {"precision": "int8", "int8_calibration_clips": len(clips)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path


def _copy_metadata(src: Path, dst: Path, extra: dict) -> None:
    import json

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    m = onnx.load(str(dst))
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, meta)
    onnx.save(m, str(dst))


def quantize_openvino_int8(src: Any, out_xml: str | os.PathLike, clips: Any, *,
                           preset: str = "performance", fast_bias_correction: bool = True) -> Path:
    """INT8 OpenVINO IR of ``src`` (an .onnx/.xml path or nn.Module) calibrated with NNCF."""
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError("nncf", "openvino", "OpenVINO INT8 quantization") from exc
    import openvino as ov

    from .openvino import convert_to_openvino, export_openvino

    clips = _calibration_clips(clips)
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE,
               "mixed": nncf.QuantizationPreset.MIXED}
    if preset not in presets:
        raise ExportError(f"preset: expected one of {sorted(presets)}, found {preset!r}")
    work = Path(tempfile.mkdtemp(prefix="e3d_nncf_"))
    try:
        if isinstance(src, (str, os.PathLike)) and Path(src).suffix == ".xml":
            model = ov.Core().read_model(str(src))
        else:
            model = convert_to_openvino(src, work)
        dataset = nncf.Dataset([clips[i:i + 1] for i in range(len(clips))])
        try:
            quantized = nncf.quantize(model, dataset, preset=presets[preset], subset_size=len(clips),
                                      fast_bias_correction=fast_bias_correction)
        except Exception as exc:
            raise ExportError(f"NNCF quantization failed: {exc}") from exc
        quantized.set_rt_info("int8", ["model_info", "precision"])
        quantized.set_rt_info(str(len(clips)), ["model_info", "int8_calibration_clips"])
        return export_openvino(None, out_xml, ov_model=quantized)
    finally:
        shutil.rmtree(work, ignore_errors=True)
