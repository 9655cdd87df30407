"""e3d_export: deployment artifacts for E3D models, each verified against PyTorch.

    from e3d_export import export_onnx, export_openvino, lower_to_2d, export
    export_onnx(model, "e3d_s.onnx", frames=13, size=160)
    manifest = export("e3d_s", "exports/e3d_s", openvino=True, lower_2d=True)

Names are imported on first use (PEP 562), so ``e3d-export --help`` and ``--check`` do
not load torch; runtimes (onnxruntime, openvino, tensorrt, nncf) are imported only by
the functions that need them.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule defining it
_EXPORTS = {
    "fold_batchnorm": ".fold", "has_batchnorm": ".fold",
    "E3D2d": ".lower2d", "lower_to_2d": ".lower2d",
    "MANIFEST_NAME": ".manifest", "check_manifest": ".manifest", "load_manifest": ".manifest",
    "DEFAULT_OPSET": ".onnx", "export_onnx": ".onnx", "model_metadata": ".onnx",
    "op_histogram": ".onnx", "read_metadata": ".onnx",
    "export_openvino": ".openvino",
    "export": ".pipeline", "load_source": ".pipeline",
    "quantize_onnx_int8": ".quantize", "quantize_openvino_int8": ".quantize",
    "TRT_SUPPORTED_OPS": ".tensorrt", "build_trt_engine": ".tensorrt",
    "check_trt_support": ".tensorrt", "read_engine_sidecar": ".tensorrt",
    "VerificationResult": ".verify", "compare": ".verify", "random_clips": ".verify",
    "randomize_statistics": ".verify", "reference_logits": ".verify",
    "verify_artifact": ".verify", "verify_backend": ".verify",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'e3d_export' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


__all__ = sorted(_EXPORTS)
