"""``manifest.json``: what an export folder holds and why it can be trusted.

Every file's sha256 and size, the source model, the input spec, library versions,
verification results, measured latency, and the ``preprocess`` section the video
pipeline follows (:func:`e3d_runtime.manifest.preprocess_section`). ``check_manifest``
(from :mod:`e3d_runtime.manifest`, which reads folders without torch) re-hashes the
folder so a consumer can detect tampering or a partial copy.

This module is the writing half (it runs where the export runs, with torch);
reading, hashing and checking a folder live in :mod:`e3d_runtime.manifest` and are
re-exported here.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping

from e3d_runtime.atomic import atomic_write_text
# reading a folder (hashes, checks, the preprocess section) is the torch-free runtime's job
from e3d_runtime.manifest import (MANIFEST_NAME, MANIFEST_SCHEMA, check_manifest,  # noqa: F401
                                  file_problems, file_table, is_export_folder, load_manifest,
                                  sha256_file)

MANIFEST_VERSION = 1
_LIBRARIES = ("torch", "timm", "numpy", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf", "tensorrt")


def library_versions() -> Dict[str, str]:
    """Versions of the libraries that shaped the artifacts (``None`` when not installed)."""
    out: Dict[str, Any] = {"python": platform.python_version()}
    import e3d_runtime
    import e3d_zoo

    out["e3d_zoo"] = e3d_zoo.__version__
    out["e3d_runtime"] = e3d_runtime.__version__  # the reader of the folder on the box
    for name in _LIBRARIES:
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:
            try:
                out[name] = getattr(importlib.import_module(name), "__version__", None)
            except Exception:
                out[name] = None
    return out


def build_manifest(folder: str | os.PathLike, *, source: Mapping[str, Any],
                   input_spec: Mapping[str, Any], artifacts: Mapping[str, Any],
                   verification: Any = (), latency: Any = None,
                   extra: Mapping[str, Any] | None = None) -> Dict[str, Any]:
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "schema_version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source),
        "input": dict(input_spec),
        "artifacts": dict(artifacts),
        "verification": list(verification),
        "latency": latency,
        "versions": library_versions(),
        "host": {"machine": platform.machine(), "processor": platform.processor() or None,
                 "cpu_count": os.cpu_count()},
        "files": file_table(folder),
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    return atomic_write_text(Path(folder) / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str) + "\n")
