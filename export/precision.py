"""``e3d-export --precision auto``: per runtime, the fastest artifact that still agrees with fp32.

Reduced precision is only worth having where it is both faster on this CPU and still
right, and neither can be assumed: INT8 took 0.51x fp32's time on an AVX-512 VNNI Zen 4
but 1.13x on an AVX2 Zen 1, and how far INT8 moves a network's decisions depends on its
trained weights. So both are measured, here, per runtime in the folder:

* candidates: the runtime's fp32 artifact, bf16 (OpenVINO's fp32 IR run with
  ``INFERENCE_PRECISION_HINT=bf16``; built only where the CPU has native bf16, AVX512-BF16
  or AMX, since elsewhere OpenVINO emulates or ignores it) and INT8 (NNCF IR; ONNX Runtime's
  Q/DQ form), each already verified by :mod:`.pipeline`;
* agreement: each runs the held-out clips (clips of the training distribution the
  network never trained on, e.g. the synthetic benchmark's ``val`` split) and is judged
  against fp32 PyTorch on them by :func:`e3d_runtime.criteria.selection_criteria`
  (>= 99 % exact top-1, no probability moved by more than 0.1, plus the precision's own
  criteria), on at least ``SELECTION_MIN_CLIPS`` clips;
* speed: batch-1 latency on every usable core, all candidates of a runtime timed
  interleaved (:func:`e3d_runtime.backends.base.time_interleaved`), medians;
* choice: the fastest candidate that agrees and takes at most :data:`MIN_GAIN` x the
  runtime's fastest fp32 artifact's median; that fp32 artifact otherwise. A reduced precision that is barely faster is not
  worth its rounding, and a 10 % margin keeps load noise from flipping the decision.

The manifest records every candidate's agreement and timing, the machine (CPU model,
flags, cores, load), and the reason for each choice (``selection``), and names the chosen
artifact per runtime (``default_artifacts``), which ``e3d-infer --artifact FOLDER`` and
the pipeline run by default (:func:`e3d_runtime.manifest.artifact_entry_for`).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from e3d_runtime.backends.base import load_backend, time_interleaved
from e3d_runtime.errors import ConfigError
from e3d_runtime.criteria import SELECTION_MIN_CLIPS, compare, selection_criteria, summarize
from e3d_runtime.machine import cpu_info, has_native_bf16, load_average, usable_cores
from e3d_runtime.manifest import FORMAT_BACKENDS, artifact_precision

MIN_GAIN = 0.9
# synthetic held-out clips: 400 by default; far more only costs rendering time and memory
MAX_HELD_OUT = 10_000
# artifacts that are not for the CPU runtimes they load on: TensorRT's Q/DQ form runs on
# ONNX Runtime only as float convs between Q/DQ pairs, fp16 ONNX as emulated fp16
NOT_CANDIDATES = ("int8_onnx_trt", "onnx_fp16")


def load_held_out(spec: str, shape: tuple, n_calibration: int = 16) -> tuple:
    """(held-out clips, calibration clips or None, description) from a ``--held-out`` value.

    * ``synthetic[:N[:SEED]]``: the synthetic motion benchmark (:mod:`e3d_zoo.data.synthetic`)
      at the model's shape: N clips (default 400) of its ``val`` split as held-out, and
      ``n_calibration`` clips of its ``train`` split for INT8 calibration, both from data
      seed SEED (default 0, what ``e3d-train`` uses);
    * a ``.npy`` file of clips, or a ``.npz`` with ``clips`` (and optionally
      ``calibration``), normalized (N, C, T, H, W).
    """
    C, T, R = shape
    if spec == "synthetic" or spec.startswith("synthetic:"):
        parts = spec.split(":")[1:]
        try:
            n = int(parts[0]) if parts and parts[0] else 400
            seed = int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise ConfigError(f"--held-out {spec!r}: expected synthetic[:N[:SEED]] with integers") from None
        if not 1 <= n <= MAX_HELD_OUT or seed < 0 or len(parts) > 2:
            raise ConfigError(f"--held-out {spec!r}: expected synthetic[:N[:SEED]], N in "
                              f"[1, {MAX_HELD_OUT}], SEED >= 0")
        from e3d_zoo.data.synthetic import SyntheticMotion

        def render(split: str, count: int) -> np.ndarray:
            ds = SyntheticMotion(split, count, seed=seed, frames=T, size=R, cache=False)
            return np.stack([ds[i][0].numpy() for i in range(count)])

        return (render("val", n), render("train", n_calibration),
                f"synthetic motion benchmark, val split, data seed {seed}, {n} clips at {T}x{R}x{R} "
                f"(calibration: {n_calibration} train-split clips)")
    path = Path(spec)
    if not path.is_file() or path.suffix not in (".npy", ".npz"):
        raise ConfigError(f"--held-out {spec!r}: expected synthetic[:N[:SEED]] or an existing .npy/.npz "
                          "file of clips")
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), np.float32), None, str(path)
        with np.load(path, allow_pickle=False) as data:
            clips = np.asarray(data["clips"], np.float32)
            calib = np.asarray(data["calibration"], np.float32) if "calibration" in data else None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: cannot read held-out clips (a .npz needs a 'clips' array): {exc}") from None
    return clips, calib, str(path)  # both checked by export() (pipeline._checked_clips)


def wants_bf16(flags: Optional[List[str]] = None) -> bool:
    """Build a bf16 candidate only where the CPU computes bf16 natively."""
    return has_native_bf16(cpu_info(flags)["flags"])


def select(stage: Path, artifacts: Mapping[str, Mapping[str, Any]], held_out: np.ndarray,
           held_out_logits: np.ndarray, *, threads: Optional[int] = None, runs: int = 20,
           held_out_source: str = "", flags: Optional[List[str]] = None,
           rejected: Optional[Mapping[str, Mapping[str, Any]]] = None,
           log: Callable[[str], None] = lambda msg: None) -> Dict[str, Any]:
    """The ``selection`` manifest section for the artifacts in ``stage`` (see the module
    docstring); ``held_out_logits`` are fp32 PyTorch's on ``held_out``; ``rejected``:
    candidates that failed their verification (not in ``artifacts``), listed with why."""
    threads = threads or usable_cores()
    cpu = cpu_info(flags)
    by_runtime: Dict[str, List[str]] = {}
    for key, entry in artifacts.items():
        runtime = (entry.get("verify") or {}).get("backend") or FORMAT_BACKENDS.get(str(entry.get("format")))
        if runtime in ("openvino", "onnxruntime") and key not in NOT_CANDIDATES \
                and artifact_precision(entry) in ("fp32", "bf16", "int8"):
            by_runtime.setdefault(runtime, []).append(key)
    enough = len(held_out) >= SELECTION_MIN_CLIPS
    out: Dict[str, Any] = {
        "policy": (f"per runtime, the fastest artifact whose held-out agreement with fp32 PyTorch meets "
                   f"the selection criteria and whose median batch-1 latency is <= {MIN_GAIN} x the fp32 "
                   f"artifact's; fp32 otherwise"),
        "held_out": {"source": held_out_source, "clips": int(len(held_out)),
                     "clip_shape": list(held_out.shape[1:]), "min_clips": SELECTION_MIN_CLIPS},
        "machine": {"cpu": cpu, "load_avg_start": load_average()},
        "threads": threads, "timing_runs": runs, "runtimes": {}}
    defaults: Dict[str, str] = {}
    for runtime, keys in by_runtime.items():
        fp32_keys = [k for k in keys if artifact_precision(artifacts[k]) == "fp32"]
        if not fp32_keys:
            continue
        backends = {k: load_backend(runtime, stage / artifacts[k]["file"], threads=threads,
                                    **dict((artifacts[k].get("verify") or {}).get("options") or {}))
                    for k in keys}
        rows: Dict[str, Dict[str, Any]] = {}
        for k, be in backends.items():
            precision = artifact_precision(artifacts[k])
            got = np.concatenate([be.run(held_out[i:i + 1]) for i in range(len(held_out))])
            agreement = compare(held_out_logits, got, selection_criteria(precision))
            rows[k] = {"artifact": k, "file": artifacts[k]["file"], "precision": precision,
                       "agreement": {key: agreement.to_dict()[key] for key in
                                     ("exact_top1", "top1_agreement", "max_prob_diff", "max_rel_err",
                                      "min_cosine", "topk_agreement", "clips", "failed", "passed")}}
            log(f"held-out agreement of {k} ({precision}) on {runtime}: {summarize(agreement)}, "
                f"exact top-1 {agreement.exact_top1:.4f}, max probability change {agreement.max_prob_diff:.3g}")
        clip = np.ascontiguousarray(held_out[:1])
        times = time_interleaved({k: (lambda b=be: b.run(clip)) for k, be in backends.items()}, runs=runs)
        # the bar a reduced precision must clear: this runtime's fastest fp32 artifact (for
        # ONNX Runtime the 2D-lowered graph when the folder has one)
        med = {k: statistics.median(t) for k, t in times.items()}
        fp32 = min(fp32_keys, key=med.__getitem__)
        for k, t in times.items():
            rows[k].update(median_ms=round(med[k], 3), p90_ms=round(float(np.percentile(t, 90)), 3),
                           x_fp32=round(med[k] / med[fp32], 3))
        chosen, reason = _choose(rows, fp32, enough)
        failed = [dict(r) for r in (rejected or {}).values() if r.get("runtime") == runtime]
        if failed:
            reason += "; " + "; ".join(f"{r['artifact']}: {r['rejected']}" for r in failed)
        defaults[runtime] = chosen
        out["runtimes"][runtime] = {"chosen": chosen, "reason": reason,
                                    "candidates": list(rows.values()) + failed}
        log(f"{runtime}: chose {chosen}: {reason}")
    out["machine"]["load_avg_end"] = load_average()
    out["default_artifacts"] = defaults
    return out


def _choose(rows: Mapping[str, Mapping[str, Any]], fp32: str, enough: bool) -> tuple[str, str]:
    base = rows[fp32]
    best, why_not = fp32, []
    for k, r in sorted(rows.items(), key=lambda kv: kv[1]["median_ms"]):
        if r["precision"] == "fp32":
            continue
        a = r["agreement"]
        if not enough:
            why_not.append(f"{k}: not judged (held-out clips {a['clips']} < {SELECTION_MIN_CLIPS})")
        elif not a["passed"]:
            why_not.append(f"{k}: disagrees ({'; '.join(a['failed'])})")
        elif r["x_fp32"] > MIN_GAIN:
            why_not.append(f"{k}: {r['median_ms']:.2f} ms = {r['x_fp32']:.2f}x fp32, not <= {MIN_GAIN}x")
        elif best == fp32:
            best = k
        else:
            why_not.append(f"{k}: agrees, but slower than {best}")
    if best == fp32:
        return fp32, (f"fp32 ({base['median_ms']:.2f} ms) kept: " + ("; ".join(why_not) or "no other candidate"))
    r = rows[best]
    return best, (f"{r['precision']} {r['median_ms']:.2f} ms = {r['x_fp32']:.2f}x fp32 ({base['median_ms']:.2f} ms); "
                  f"exact top-1 {r['agreement']['exact_top1']:.4f} and max probability change "
                  f"{r['agreement']['max_prob_diff']:.3g} on {r['agreement']['clips']} held-out clips"
                  + ("; " + "; ".join(why_not) if why_not else ""))
