"""``manifest.json``: what an export folder holds and why it can be trusted.

Every file's sha256 and size, the source model, the input spec, library versions,
verification results and measured latency. :func:`check_manifest` re-hashes the
folder so a consumer can detect tampering or a partial copy.

Reading and checking a manifest needs no torch (``e3d-export --verify`` runs on edge
boxes): e3d_zoo modules are imported inside the functions that write or raise.
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
    from e3d_zoo.atomic import atomic_write_text

    return atomic_write_text(Path(folder) / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str) + "\n")


def load_manifest(folder: str | os.PathLike) -> Dict[str, Any]:
    from e3d_zoo.errors import ExportError

    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"{folder}: no {MANIFEST_NAME} (not an e3d-export folder?)")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ExportError(f"{path}: not valid JSON: {exc}") from exc
    if data.get("schema") != MANIFEST_SCHEMA:
        raise ExportError(f"{path}: schema is {data.get('schema')!r}, expected {MANIFEST_SCHEMA!r}")
    return data


def file_problems(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> list:
    """["name: missing" | "name: sha256 differs ..." | "name: not listed ..."] for ``folder``."""
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
    return problems


def check_manifest(folder: str | os.PathLike) -> Dict[str, Any]:
    """Re-hash the folder against its manifest; raise ExportError naming any difference."""
    from e3d_zoo.errors import ExportError

    manifest = load_manifest(folder)
    problems = file_problems(folder, manifest)
    if problems:
        raise ExportError(f"{folder}: does not match its manifest: " + "; ".join(problems))
    return manifest
