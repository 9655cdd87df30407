"""e3d_export: deployment artifacts for E3D models, each verified against PyTorch.

    from e3d_export import export_onnx, export_openvino, lower_to_2d, export
    export_onnx(model, "e3d_s.onnx", frames=13, size=160)
    manifest = export("e3d_s", "exports/e3d_s", openvino=True, lower_2d=True)

Runtimes (onnxruntime, openvino, tensorrt, nncf) are imported only by the functions
that need them.
"""
from .fold import fold_batchnorm, has_batchnorm
from .lower2d import E3D2d, lower_to_2d
from .manifest import MANIFEST_NAME, check_manifest, load_manifest
from .onnx import DEFAULT_OPSET, export_onnx, model_metadata, op_histogram, read_metadata
from .openvino import export_openvino
from .pipeline import export, load_source
from .quantize import quantize_onnx_int8, quantize_openvino_int8
from .tensorrt import (TRT_SUPPORTED_OPS, build_trt_engine, check_trt_support,
                       read_engine_sidecar)
from .verify import (VerificationResult, compare, random_clips, randomize_statistics,
                     reference_logits, verify_artifact, verify_backend)

__all__ = [
    "export", "load_source", "export_onnx", "export_openvino", "lower_to_2d", "E3D2d",
    "fold_batchnorm", "has_batchnorm", "model_metadata", "read_metadata", "op_histogram",
    "DEFAULT_OPSET", "quantize_onnx_int8", "quantize_openvino_int8", "build_trt_engine",
    "check_trt_support", "read_engine_sidecar", "TRT_SUPPORTED_OPS", "verify_artifact",
    "verify_backend", "VerificationResult", "compare", "random_clips", "randomize_statistics", "reference_logits",
    "MANIFEST_NAME", "check_manifest", "load_manifest",
]
