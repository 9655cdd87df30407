"""e3d_export: deployment artifacts for E3D models, each verified against PyTorch.

    from e3d_export import export_onnx, export_openvino, lower_to_2d, export
    export_onnx(model, "e3d_s.onnx", frames=13, size=160)
    manifest = export("e3d_s", "exports/e3d_s", openvino=True, lower_2d=True)

Names are imported on first use (PEP 562), so ``e3d-export --help`` does not load
torch; runtimes (onnxruntime, openvino, tensorrt, nncf) are imported only by the
functions that need them. The torch-free verification core lives in the edge install:
``e3d_export.criteria`` and ``e3d_export.reverify`` are :mod:`e3d_runtime.criteria` and
:mod:`e3d_runtime.reverify` under their old names (the same module objects).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "fold": ("fold_batchnorm", "has_batchnorm"),
    "lower2d": ("E3D2d", "lower_to_2d"),
    "manifest": ("MANIFEST_NAME", "check_manifest", "load_manifest"),
    "onnx": ("DEFAULT_OPSET", "export_onnx", "export_onnx_fp16", "model_metadata", "op_histogram",
             "read_metadata"),
    "openvino": ("export_openvino",),
    "pipeline": ("export",),
    "source": ("load_source",),
    "quantize": ("quantize_onnx_int8", "quantize_openvino_int8"),
    "tensorrt": ("TRT_SUPPORTED_OPS", "build_trt_engine", "check_trt_support", "onnx_precision",
                 "read_engine_sidecar"),
    "verify": ("VerificationResult", "random_clips", "randomize_statistics", "reference_logits",
               "verify_artifact", "verify_backend"),
    "criteria": ("CRITERIA", "Criteria", "agrees", "compare", "criteria_for"),
    "reverify": ("verify_folder",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'e3d_export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
