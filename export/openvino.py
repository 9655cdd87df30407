"""ONNX (or an E3D module) -> OpenVINO IR (``.xml`` + ``.bin``), fp32 or fp16-compressed weights.

Conversion goes through our own ONNX export so the IR and the ONNX artifact come
from one graph (BN folded, same metadata); the metadata is copied into the IR's
``rt_info["model_info"]`` where OpenVINO tools look for it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch.nn as nn

from e3d_zoo.errors import ExportError, require


def _ov():
    return require("openvino", "openvino", "OpenVINO export")


def export_openvino(src: Any, path_xml: str | os.PathLike, *, compress_fp16: bool = False,
                    frames: Optional[int] = None, size: Optional[int] = None,
                    dynamic_batch: bool = True, metadata: Optional[Mapping[str, Any]] = None,
                    ov_model: Any = None) -> Path:
    """Write an IR at ``path_xml`` (its ``.bin`` beside it); returns the ``.xml`` path.

    ``src``: an ``.onnx`` path or an nn.Module (exported to ONNX first).
    ``compress_fp16``: store weights as fp16 (half the size; the CPU plugin still
    computes in fp32 unless asked otherwise). ``ov_model``: an already built
    ``openvino.Model`` (e.g. NNCF's INT8 result) to save instead of converting ``src``.
    """
    ov = _ov()
    path_xml = Path(path_xml)
    if path_xml.suffix != ".xml":
        raise ExportError(f"{path_xml}: an OpenVINO IR path must end in .xml")
    path_xml.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path_xml.parent, prefix=f".{path_xml.stem}.ov."))
    try:
        if ov_model is None:
            ov_model = convert_to_openvino(src, staging, frames=frames, size=size,
                                           dynamic_batch=dynamic_batch)
        if metadata:
            for key, value in metadata.items():
                ov_model.set_rt_info(str(value), ["model_info", str(key)])
        tmp_xml = staging / path_xml.name
        try:
            ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=compress_fp16)
        except Exception as exc:
            raise ExportError(f"openvino.save_model failed: {exc}") from exc
        # .bin first: the .xml is what readers open, so it must never point at a stale .bin
        os.replace(tmp_xml.with_suffix(".bin"), path_xml.with_suffix(".bin"))
        os.replace(tmp_xml, path_xml)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path_xml


def convert_to_openvino(src: Any, workdir: Path, *, frames: Optional[int] = None,
                        size: Optional[int] = None, dynamic_batch: bool = True):
    """An ``openvino.Model`` from an ONNX path or an nn.Module, metadata carried over."""
    ov = _ov()
    from .onnx import export_onnx, read_metadata

    if isinstance(src, nn.Module):
        onnx_path = export_onnx(src, Path(workdir) / "model.onnx", frames=frames, size=size,
                                dynamic_batch=dynamic_batch)
    else:
        onnx_path = Path(os.fspath(src))
        if not onnx_path.is_file():
            raise ExportError(f"{onnx_path}: no such ONNX file")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ExportError(f"{onnx_path}: openvino.convert_model failed: {exc}") from exc
    import json

    for key, value in read_metadata(onnx_path).items():
        model.set_rt_info(value if isinstance(value, str) else json.dumps(value),
                          ["model_info", key])
    return model
