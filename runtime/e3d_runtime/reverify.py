"""``e3d-export --verify FOLDER``: re-verify every artifact of an export folder on this
machine's runtimes, against the reference inputs and PyTorch outputs stored in it.

What Polygraphy does with saved inputs and outputs (``polygraphy run --load-inputs
--load-outputs``), for our folders: at export time the verification clips and the
PyTorch logits are stored in ``reference.npz`` (its sha256 in the manifest); on the
target device this module loads them, runs each artifact on the runtime that can
run it here, and judges the logits with the criteria recorded for the artifact's
precision. Nothing here needs torch (numpy, the standard library, and the runtime a
given artifact needs, imported when it runs), so the edge install verifies its own
copy of a folder; the optional re-check against the recorded source model needs torch
and is handed in by the caller (:func:`verify_folder`'s ``check_source``), see
:mod:`e3d_runtime.verify` for the command.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_path
from .backends.base import backend_class, canonical_backend_name, load_backend
from .criteria import CRITERIA, PRECISION_ALIASES, Criteria, compare, summarize
from .errors import BackendError, E3DError, ExportError, MissingDependencyError
from .manifest import FORMAT_BACKENDS, file_problems, load_manifest, sha256_file

REFERENCE_NAME = "reference.npz"
# (folder, manifest, clips, logits) -> {"status": passed | failed | skipped, ...}
SourceCheck = Callable[[Path, Mapping[str, Any], np.ndarray, np.ndarray], Dict[str, Any]]


def save_reference(folder: str | os.PathLike, clips: np.ndarray, logits: np.ndarray) -> Dict[str, Any]:
    """Store the verification inputs and reference logits; returns the manifest entry.

    Clips on the float16 grid (:func:`~.verify.random_clips` makes them so) are stored
    as float16, exactly, at half the size; any others as float32.
    """
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    half = clips.astype(np.float16)
    stored = half if np.array_equal(half.astype(np.float32), clips) else clips
    path = Path(folder) / REFERENCE_NAME
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, clips=stored, logits=np.asarray(logits, dtype=np.float32))
    return {"file": REFERENCE_NAME, "sha256": sha256_file(path), "inputs": "clips", "outputs": "logits",
            "clips": int(len(clips)), "clip_shape": list(clips.shape[1:]), "input_dtype": str(stored.dtype),
            "producer": "PyTorch fp32 (the exported model in eval mode)"}


def load_reference(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """(clips float32, logits float32) from the folder's reference file, sha256 checked."""
    entry = manifest.get("reference")
    if not isinstance(entry, Mapping):
        raise ExportError(f"{folder}: the manifest records no reference data (exported by an older "
                          "e3d-export?); export again to get a folder that can be re-verified")
    path = Path(folder) / entry.get("file", REFERENCE_NAME)
    if not path.is_file():
        raise ExportError(f"{path}: the reference data is missing")
    if sha256_file(path) != entry.get("sha256"):
        raise ExportError(f"{path}: sha256 differs from the manifest's; the reference data cannot be "
                          "trusted")
    try:
        with np.load(path, allow_pickle=False) as data:
            clips = data[entry.get("inputs", "clips")].astype(np.float32)
            logits = data[entry.get("outputs", "logits")].astype(np.float32)
    except Exception as exc:
        raise ExportError(f"{path}: unreadable reference data: {exc}") from None
    if clips.ndim != 5 or logits.ndim != 2 or len(clips) != len(logits):
        raise ExportError(f"{path}: expected clips (N, C, T, H, W) and logits (N, classes), found "
                          f"{clips.shape} and {logits.shape}")
    return clips, logits


def artifact_plan(name: str, art: Mapping[str, Any], manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """How to verify one artifact: runtime, its options, criteria (recorded or default)."""
    how = dict(art.get("verify") or {})
    backend = how.get("backend") or FORMAT_BACKENDS.get(str(art.get("format")))
    key = how.get("criteria") or PRECISION_ALIASES.get(str(art.get("precision")), art.get("precision"))
    recorded = (manifest.get("criteria") or {}).get(key)
    criteria = Criteria.from_dict(recorded) if isinstance(recorded, Mapping) else CRITERIA.get(str(key))
    return {"name": name, "file": art.get("file"), "backend": backend, "precision": art.get("precision"),
            "criteria": criteria, "options": dict(how.get("options") or {})}


def run_artifact(path: Path, backend: str, options: Mapping[str, Any], clips: np.ndarray,
                 threads: Optional[int]) -> np.ndarray:
    """The artifact's logits for ``clips``, one clip at a time (static-batch exports too)."""
    be = load_backend(backend, path, threads=threads, **options)
    return np.concatenate([be.run(clips[i:i + 1]) for i in range(len(clips))], axis=0)


def verify_artifact_in_folder(folder: Path, plan: Mapping[str, Any], clips: np.ndarray,
                              logits: np.ndarray, threads: Optional[int] = None) -> Dict[str, Any]:
    """Run and judge one artifact; {"status": passed | failed | skipped, ...}."""
    row: Dict[str, Any] = {"name": plan["name"], "file": plan["file"], "backend": plan["backend"],
                           "precision": plan["precision"]}
    crit: Optional[Criteria] = plan["criteria"]
    if crit is None or not plan["backend"]:
        return {**row, "status": "skipped", "reason": "no runtime or criteria known for this artifact"}
    row["criteria"] = crit.to_dict()
    try:
        ok, why = backend_class(plan["backend"]).availability()
    except (ImportError, E3DError) as exc:
        ok, why = False, str(exc)
    if not ok:
        return {**row, "status": "skipped", "reason": f"{plan['backend']} is not usable here: {why}"}
    try:
        got = run_artifact(folder / plan["file"], plan["backend"], plan["options"], clips, threads)
    except MissingDependencyError as exc:
        return {**row, "status": "skipped", "reason": str(exc)}
    except (BackendError, E3DError) as exc:
        return {**row, "status": "failed", "failed": [f"cannot run: {exc}"]}
    agreement = compare(logits, got, crit)
    stats = agreement.to_dict()
    stats.pop("passed")
    return {**row, **stats, "status": "passed" if agreement.passed else "failed",
            "summary": summarize(agreement)}


def verify_folder(folder: str | os.PathLike, *, threads: Optional[int] = None,
                  only: Optional[List[str]] = None, backends: Optional[Sequence[str]] = None,
                  check_source: Optional[SourceCheck] = None) -> Dict[str, Any]:
    """Re-verify ``folder``; returns the report (``ok`` False when anything failed).

    Checks that ran are listed under ``checks``: file hashes against the manifest,
    the reference data's sha256, each artifact on this machine's runtime (``skipped``
    with the reason when its runtime is not usable here or not among ``backends``),
    and with ``check_source`` (it needs torch: ``e3d_export.source.check_source``)
    the recorded source model against the stored reference logits.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    problems = file_problems(folder, manifest)
    clips, logits = load_reference(folder, manifest)
    wanted = {canonical_backend_name(b) for b in backends} if backends else None
    rows = []
    for name, art in (manifest.get("artifacts") or {}).items():
        if only and name not in only:
            continue
        plan = artifact_plan(name, art, manifest)
        if wanted is not None and plan["backend"] not in wanted:
            rows.append({"name": name, "file": plan["file"], "backend": plan["backend"],
                         "precision": plan["precision"], "status": "skipped",
                         "reason": f"not asked for (--backend {', '.join(sorted(wanted))})"})
        elif not (folder / str(plan["file"])).is_file():
            rows.append({"name": name, "file": plan["file"], "status": "failed",
                         "failed": [f"{plan['file']} is missing"]})
        else:
            rows.append(verify_artifact_in_folder(folder, plan, clips, logits, threads))
    if only:
        unknown = sorted(set(only) - {r["name"] for r in rows})
        if unknown:
            raise ExportError(f"{folder}: no artifact named {', '.join(unknown)}; the folder has "
                              f"{', '.join(manifest.get('artifacts') or {})}")
    checks: Dict[str, Any] = {
        "files": {"status": "failed" if problems else "passed", "problems": problems},
        "reference": {"status": "passed", "file": manifest["reference"]["file"],
                      "clips": int(len(clips)), "clip_shape": list(clips.shape[1:])},
        "artifacts": rows,
    }
    if check_source is not None:
        checks["source"] = check_source(folder, manifest, clips, logits)
    failed = [r for r in rows if r["status"] == "failed"]
    return {
        "folder": str(folder),
        "ok": (not problems and not failed and any(r["status"] == "passed" for r in rows)
               and checks.get("source", {}).get("status") != "failed"),
        "checks": checks,
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "exported_on": (manifest.get("host") or {}) | {"created": manifest.get("created")},
    }


def failure_line(report: Mapping[str, Any]) -> str:
    """One line naming every failed check (for the CLI's error message)."""
    parts = []
    files = report["checks"]["files"]
    if files["status"] == "failed":
        parts.append("files differ from the manifest (" + "; ".join(files["problems"]) + ")")
    for r in report["checks"]["artifacts"]:
        if r["status"] == "failed":
            parts.append(f"{r['file']} on {r.get('backend')}: " + "; ".join(r.get("failed", [])))
    source = report["checks"].get("source")
    if source and source.get("status") == "failed":
        parts.append("source: " + "; ".join(source.get("failed", [])))
    if not parts and not any(r["status"] == "passed" for r in report["checks"]["artifacts"]):
        parts.append("no artifact could be run on this machine's runtimes")
    return f"{report['folder']}: verification failed: " + " | ".join(parts)

