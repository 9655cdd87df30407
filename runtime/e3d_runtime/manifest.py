"""Reading an e3d-export folder: ``manifest.json``, its file hashes, its ``preprocess`` section.

An export folder is what a workstation hands an edge box: the artifacts and one
``manifest.json`` that says what each file is, their sha256 (:func:`check_manifest`
re-hashes the folder, so a partial copy or a tampered file is caught), and in
``"preprocess"`` everything the video pipeline must do to frames before the network
sees them. The writer side (``e3d_export.manifest``) needs torch; nothing here does.

The ``preprocess`` section (:data:`PREPROCESS_VERSION` 1)::

    "preprocess": {
      "version": 1,
      "input_layout": "NCTHW",          # clips (N, C, T, H, W), float32
      "channel_order": "RGB",
      "num_frames": 13,                  # T
      "frame_stride": 2,                 # every 2nd decoded frame ...
      "sample_fps": null,                # ... or one frame every 1/sample_fps seconds
      "short_video": "loop",             # clips longer than the video wrap around
      "input_size": [3, 160, 160],       # C, H, W of the crop
      "crop_pct": 1.0,                   # short side resized to floor(min(H, W) / crop_pct)
      "interpolation": "bilinear",       # antialiased, as e3d_runtime.video.transforms
      "pixel_scale": 255.0,              # uint8 pixels are divided by this first
      "mean": [0.485, 0.456, 0.406],
      "std": [0.229, 0.224, 0.225],
      "num_classes": 400,
      "labels": ["abseiling", ...]       # or [] when the model has none
    }
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from .atomic import read_json_limited
from .errors import ConfigError, ExportError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "e3d-export-manifest"
PREPROCESS_VERSION = 1

# artifact format in the manifest -> the backend that runs it
FORMAT_BACKENDS = {"onnx": "onnxruntime", "openvino-ir": "openvino", "tensorrt-engine": "tensorrt"}
# which of a folder's artifacts a backend runs when none is named: full precision first
ARTIFACT_PREFERENCE = {"openvino": ("openvino", "openvino_fp16", "openvino_bf16", "int8_openvino"),
                       "onnxruntime": ("onnx", "onnx_2d", "int8_onnx"),
                       "tensorrt": ("tensorrt",)}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_table(folder: str | os.PathLike) -> Dict[str, Dict[str, Any]]:
    """{relative path: {sha256, bytes}} of every file under ``folder`` but the manifest."""
    folder = Path(folder)
    table = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            table[p.relative_to(folder).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return table


def is_export_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is one e3d-export wrote (it has our manifest): the only kind
    of existing folder an export may replace."""
    return (Path(folder) / MANIFEST_NAME).is_file()


def load_manifest(folder: str | os.PathLike) -> Dict[str, Any]:
    """The folder's manifest, read bounded, its schema and file table checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'} "
                          "(expected an e3d-export folder)")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"{folder}: no {MANIFEST_NAME} (not an e3d-export folder?)")
    data = read_json_limited(path, 64 << 20, what="manifest", error=ExportError)
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ExportError(f"{path}: schema is {found!r:.60}, expected {MANIFEST_SCHEMA!r}")
    files = data.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()):
        raise ExportError(f"{path}: files: expected an object of {{name: {{sha256, bytes}}}}, "
                          f"found {files!r:.60}")
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
    manifest = load_manifest(folder)
    problems = file_problems(folder, manifest)
    if problems:
        raise ExportError(f"{folder}: does not match its manifest: " + "; ".join(problems))
    return manifest


# ---- the preprocess section ------------------------------------------------------------

def preprocess_section(cfg: Mapping[str, Any], *, num_classes: Optional[int] = None,
                       labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The manifest's ``preprocess`` section from a model's ``pretrained_cfg`` (the writer's
    side; :func:`preprocess_cfg` reads it back)."""
    missing = [k for k in ("num_frames", "input_size") if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"pretrained_cfg: missing {missing}; expected a config made by "
                          "e3d_zoo.create_model")
    names = labels if labels is not None else cfg.get("label_names")
    return {
        "version": PREPROCESS_VERSION,
        "input_layout": cfg.get("input_layout") or "NCTHW",
        "channel_order": "RGB",
        "num_frames": int(cfg["num_frames"]),
        "frame_stride": int(cfg.get("frame_stride") or 1),
        "sample_fps": None if cfg.get("sample_fps") is None else float(cfg["sample_fps"]),
        "short_video": cfg.get("short_video") or "loop",
        "input_size": [int(v) for v in cfg["input_size"]],
        "crop_pct": float(cfg.get("crop_pct") or 1.0),
        "interpolation": cfg.get("interpolation") or "bilinear",
        "pixel_scale": 255.0,
        "mean": [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))],
        "num_classes": num_classes if num_classes is not None else cfg.get("num_classes"),
        "labels": [str(n) for n in names] if names else [],
    }


def preprocess_cfg(section: Mapping[str, Any], where: str = MANIFEST_NAME) -> Dict[str, Any]:
    """A pretrained-config dict (what :class:`~e3d_runtime.video.pipeline.VideoClassifier`
    takes) from a manifest's ``preprocess`` section, every field checked."""
    if not isinstance(section, Mapping):
        raise ExportError(f"{where}: 'preprocess' must be an object, found {type(section).__name__}")
    version = section.get("version")
    if version != PREPROCESS_VERSION:
        raise ExportError(f"{where}: preprocess version {version!r} is not supported; expected "
                          f"{PREPROCESS_VERSION} (a newer e3d-export? upgrade e3d-runtime)")
    if section.get("input_layout", "NCTHW") != "NCTHW":
        raise ExportError(f"{where}: preprocess.input_layout {section.get('input_layout')!r}: "
                          "expected 'NCTHW'")
    if float(section.get("pixel_scale", 255.0)) != 255.0:
        raise ExportError(f"{where}: preprocess.pixel_scale {section.get('pixel_scale')!r}: expected 255")

    def field(key: str, kind: type, default: Any = None) -> Any:
        value = section.get(key, default)
        try:
            return None if value is None else kind(value)
        except (TypeError, ValueError):
            raise ExportError(f"{where}: preprocess.{key}: expected {kind.__name__}, "
                              f"found {value!r}") from None

    def floats(key: str, n: int) -> tuple:
        value = section.get(key)
        if not isinstance(value, list) or len(value) != n:
            raise ExportError(f"{where}: preprocess.{key}: expected a list of {n} numbers, found {value!r}")
        return tuple(float(v) for v in value)

    size = section.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ExportError(f"{where}: preprocess.input_size: expected [C, H, W] positive integers, "
                          f"found {size!r}")
    for key in ("num_frames", "frame_stride"):
        if section.get(key) is None:
            raise ExportError(f"{where}: preprocess.{key} is missing")
    labels = section.get("labels") or []
    if not isinstance(labels, list):
        raise ExportError(f"{where}: preprocess.labels: expected a list of names, found {labels!r}")
    return {"num_frames": field("num_frames", int), "frame_stride": field("frame_stride", int),
            "sample_fps": field("sample_fps", float), "short_video": field("short_video", str, "loop"),
            "input_size": tuple(size), "crop_pct": field("crop_pct", float, 1.0),
            "interpolation": field("interpolation", str, "bilinear"),
            "mean": floats("mean", size[0]), "std": floats("std", size[0]),
            "num_classes": field("num_classes", int),
            "label_names": [str(n) for n in labels] or None}


def artifact_for(folder: str | os.PathLike, manifest: Mapping[str, Any],
                 backends: Sequence[str], *, precision: Optional[str] = None,
                 flags: Optional[Sequence[str]] = None) -> tuple[str, Path]:
    """(backend, file) of the folder's first artifact that one of ``backends`` runs; see
    :func:`artifact_entry_for`."""
    backend, _, entry = artifact_entry_for(folder, manifest, backends, precision=precision, flags=flags)
    return backend, Path(folder) / str(entry["file"])


def artifact_entry_for(folder: str | os.PathLike, manifest: Mapping[str, Any],
                       backends: Sequence[str], *, precision: Optional[str] = None,
                       flags: Optional[Sequence[str]] = None) -> tuple[str, str, Mapping[str, Any]]:
    """(backend, artifact key, manifest entry) of the artifact to run, in the order of
    ``backends``.

    For each backend: with ``precision`` (fp32, bf16, int8) its artifact of that
    precision; otherwise the one ``e3d-export --precision auto`` chose for it
    (``default_artifacts``) when this CPU computes that precision natively (an INT8 choice
    made on a VNNI machine is not kept on a CPU without int8 dot products, where INT8 ran
    slower than fp32), else full precision first (:data:`ARTIFACT_PREFERENCE`).
    ``flags``: the CPU flags to judge by (default: this machine's).
    """
    artifacts = manifest.get("artifacts") or {}

    def usable(key: Optional[str]) -> bool:
        entry = artifacts.get(key) if key else None
        return isinstance(entry, Mapping) and bool(entry.get("file"))

    native = None
    for backend in backends:
        keys = [k for k in ARTIFACT_PREFERENCE.get(backend, ()) if usable(k)]
        keys += [k for k, e in artifacts.items() if usable(k) and k not in keys
                 and FORMAT_BACKENDS.get(str(e.get("format"))) == backend]
        if precision is not None:
            keys = [k for k in keys if artifact_precision(artifacts[k]) == precision]
        else:
            chosen = (manifest.get("default_artifacts") or {}).get(backend)
            if usable(chosen) and FORMAT_BACKENDS.get(str(artifacts[chosen].get("format"))) == backend:
                if native is None:
                    from .machine import cpu_info

                    native = cpu_info(flags)["native"]
                if native.get(artifact_precision(artifacts[chosen])) is not None:
                    keys = [chosen] + [k for k in keys if k != chosen]
        if keys:
            return backend, keys[0], artifacts[keys[0]]
    have = sorted(f"{k} ({v.get('format')}, {artifact_precision(v)})" for k, v in artifacts.items()
                  if isinstance(v, Mapping))
    wanted = " or ".join(backends) + (f" at {precision}" if precision else "")
    raise ExportError(f"{folder}: no artifact for {wanted}; the folder has {', '.join(have) or 'none'}")


def artifact_precision(entry: Mapping[str, Any]) -> str:
    """fp32, bf16, fp16 or int8: what the artifact computes in (``runtime_precision`` for an
    IR run at bf16; fp16-compressed weights still compute in fp32)."""
    p = str(entry.get("runtime_precision") or entry.get("precision") or "fp32")
    return {"fp16 weights": "fp32", "float32": "fp32", "f32": "fp32"}.get(p, p)
