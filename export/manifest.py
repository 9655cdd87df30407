"""``manifest.json``: what an export folder holds and why it can be trusted.

Every file's sha256 and size, the source model, the input spec, library versions,
verification results and measured latency. :func:`check_manifest` re-hashes the
folder so a consumer can detect tampering or a partial copy.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping

from e3d_zoo.atomic import atomic_write_text
from e3d_zoo.errors import ExportError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "e3d-export-manifest"
MANIFEST_VERSION = 1
_LIBRARIES = ("torch", "timm", "numpy", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf", "tensorrt")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> Dict[str, str]:
    """Versions of the libraries that shaped the artifacts (``None`` when not installed)."""
    out: Dict[str, Any] = {"python": platform.python_version()}
    import e3d_zoo

    out["e3d_zoo"] = e3d_zoo.__version__
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


def file_table(folder: str | os.PathLike) -> Dict[str, Dict[str, Any]]:
    """{relative path: {sha256, bytes}} of every file under ``folder`` but the manifest."""
    folder = Path(folder)
    table = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            table[p.relative_to(folder).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return table


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


def is_export_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is one this package wrote (it has our manifest): the only kind
    of existing folder an export may replace."""
    return (Path(folder) / MANIFEST_NAME).is_file()


def load_manifest(folder: str | os.PathLike) -> Dict[str, Any]:
    from e3d_zoo.atomic import read_text_limited

    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'} "
                          "(expected an e3d-export folder)")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"{folder}: no {MANIFEST_NAME} (not an e3d-export folder?)")
    text = read_text_limited(path, 64 << 20, what="manifest", error=ExportError)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ExportError(f"{path}: not valid JSON: {exc or 'nested too deeply'}") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ExportError(f"{path}: schema is {found!r:.60}, expected {MANIFEST_SCHEMA!r}")
    files = data.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()):
        raise ExportError(f"{path}: files: expected an object of {{name: {{sha256, bytes}}}}, "
                          f"found {files!r:.60}")
    return data


def check_manifest(folder: str | os.PathLike) -> Dict[str, Any]:
    """Re-hash the folder against its manifest; raise ExportError naming any difference."""
    manifest = load_manifest(folder)
    actual = file_table(folder)
    listed = manifest.get("files", {})
    problems = []
    for name, entry in listed.items():
        if name not in actual:
            problems.append(f"{name}: missing")
        elif actual[name]["sha256"] != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    for name in actual:
        if name not in listed:
            problems.append(f"{name}: not listed in the manifest")
    if problems:
        raise ExportError(f"{folder}: does not match its manifest: " + "; ".join(problems))
    return manifest
