"""``export()``: one source model -> a folder of verified artifacts + ``manifest.json``.

The folder is staged and swapped in whole (:func:`e3d_zoo.atomic.atomic_dir`): a failed
verification, a missing runtime or an interruption leaves the previous folder (or
nothing) in place, never a partial set or a stale manifest. The verification clips
and PyTorch's logits on them are stored in the folder (``reference.npz``) so that
``e3d-export --verify`` can re-check every artifact on another machine.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch.nn as nn

from e3d_runtime.criteria import CRITERIA, Criteria, check_reference, criteria_for
from e3d_runtime.reverify import save_reference
from e3d_runtime.atomic import atomic_dir, check_replaceable
from e3d_runtime.errors import ConfigError, ExportError, VerificationError

from .manifest import MANIFEST_NAME, build_manifest, is_export_folder, write_manifest
from .precision import wants_bf16
from .source import load_source
from .verify import judge, random_clips, reference_logits, verify_backend

# the lowered graph must equal the 3D one to float rounding, tighter than any runtime
LOWERING_CRITERIA = replace(CRITERIA["fp32"], precision="fp32", max_rel_err=5e-5)


class _ExportRun:
    """The steps of one export, sharing the model, the clips and the stage folder."""

    def __init__(self, model: nn.Module, stage: Path, clips: np.ndarray, reference: np.ndarray, *,
                 verify: bool, benchmark_runs: int, threads: Optional[int],
                 criteria: Mapping[str, Criteria], opset: int, batch: int, dynamic_batch: bool,
                 log: Callable[[str], None], progress: Optional[Any]):
        self.model, self.stage, self.clips, self.reference = model, stage, clips, reference
        self.verify, self.benchmark_runs, self.threads = verify, benchmark_runs, threads
        self.criteria = dict(criteria)
        self.opset, self.batch, self.dynamic_batch = opset, batch, dynamic_batch
        self.say, self.bar = log, progress
        self.artifacts: Dict[str, Any] = {}
        self.results: List[Dict[str, Any]] = []
        self.latency: Dict[str, Any] = {}
        # candidates (--precision auto) whose failed verification rejects them instead of
        # failing the export; what was rejected, and why, goes to the manifest's selection
        self.optional: set = set()
        self.rejected: Dict[str, Dict[str, Any]] = {}

    def done(self, step: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(step)
            self.bar.update(1)

    def record(self, name: str, path: Path, entry: Dict[str, Any], backend: str, criteria_key: str,
               **backend_options: Any) -> Path:
        """Add the artifact to the manifest, verify it on ``backend``, time it if asked."""
        from e3d_zoo.runtime import load_backend

        self.artifacts[name] = {"file": path.name, **entry,
                                "verify": {"backend": backend, "criteria": criteria_key,
                                           "options": backend_options}}
        if self.verify or self.benchmark_runs:
            be = load_backend(backend, path, threads=self.threads, **backend_options)
            if self.verify:
                try:
                    res = verify_backend(be, self.model, self.clips, artifact=path.name,
                                         precision=entry["precision"], criteria=self.criteria[criteria_key],
                                         reference=self.reference)
                except VerificationError as exc:
                    if name not in self.optional:
                        raise
                    self.reject(name, backend, str(exc))
                    return path
                self.results.append({"name": name, **res.to_dict()})
                self.say(f"verified {path.name} on {backend} ({entry['precision']}): max rel err "
                         f"{res.max_rel_err:.2e}, cosine {res.min_cosine:.6f}, top-1 {res.top1_agreement:.2f}")
            if self.benchmark_runs:
                stats = be.time(self.clips[:1], warmup=2, runs=self.benchmark_runs)
                self.latency[name] = {**stats.to_dict(), "clip_shape": list(self.clips.shape[1:])}
        self.done(name)
        return path

    def reject(self, name: str, backend: str, why: str) -> None:
        """Drop a candidate that failed verification, and its files no other artifact uses."""
        entry = self.artifacts.pop(name)
        kept = {f for a in self.artifacts.values() for f in (a["file"], a.get("weights_file")) if f}
        for f in (entry["file"], entry.get("weights_file")):
            if f and f not in kept:
                (self.stage / f).unlink(missing_ok=True)
        self.rejected[name] = {"artifact": name, "file": entry["file"], "precision": entry["precision"],
                               "runtime": backend, "rejected": f"failed its verification: {why}"}
        self.say(f"{name}: rejected, {why}")

    # ---- the steps --------------------------------------------------------------------
    def onnx(self, module: nn.Module, name: str, layout: str) -> Path:
        """One fp32 ONNX graph (3D or 2D-lowered), with its TensorRT parser check."""
        from .onnx import export_onnx, op_histogram
        from .tensorrt import check_trt_support

        path = export_onnx(module, self.stage / f"model{'' if layout == '3d' else '_2d'}.onnx",
                           batch=self.batch, dynamic_batch=self.dynamic_batch, opset=self.opset)
        report = check_trt_support(path)
        return self.record(name, path, {"format": "onnx", "precision": "fp32", "opset": self.opset,
                                        "dynamic_batch": self.dynamic_batch, "layout": layout,
                                        "ops": op_histogram(path),
                                        "tensorrt_parser_check": {k: report[k] for k in ("supported", "problems")}},
                           "onnxruntime", "fp32")

    def lowered(self) -> Path:
        """The exact 2D graph: equal to the 3D model in PyTorch first, then exported."""
        from .lower2d import lower_to_2d

        lowered = lower_to_2d(self.model)
        res = judge(self.reference, reference_logits(lowered, self.clips), artifact="lowered 2D module",
                    backend="torch", precision="fp32", criteria=LOWERING_CRITERIA,
                    clip_shape=list(self.clips.shape[1:]))
        self.results.append({"name": "lowering_pytorch", **res.to_dict(), "artifact": "(module)"})
        return self.onnx(lowered, "onnx_2d", "2d")

    def openvino(self, onnx_path: Path, fp16_weights: bool = False) -> Path:
        from .openvino import export_openvino

        name, stem = ("openvino_fp16", "model_fp16") if fp16_weights else ("openvino", "model")
        xml = export_openvino(onnx_path, self.stage / f"{stem}.xml", compress_fp16=fp16_weights)
        # fp16 weights, fp32 compute: the backend pins f32 inference; judged as fp16
        return self.record(name, xml, {"weights_file": xml.with_suffix(".bin").name, "format": "openvino-ir",
                                       "precision": "fp16 weights" if fp16_weights else "fp32"},
                           "openvino", "fp16" if fp16_weights else "fp32")

    def openvino_bf16(self, xml: Path) -> Path:
        """The fp32 IR run at bf16 (``INFERENCE_PRECISION_HINT``): bf16 is how the CPU plugin
        computes, not how the IR stores weights, so it is the same file with another setting."""
        return self.record("openvino_bf16", xml, {"weights_file": xml.with_suffix(".bin").name,
                                                  "format": "openvino-ir", "precision": "bf16",
                                                  "runtime_precision": "bf16", "weights_precision": "fp32"},
                           "openvino", "bf16", precision="bf16")

    def onnx_fp16(self, src: Path) -> Path:
        from .onnx import export_onnx_fp16

        path = export_onnx_fp16(src, self.stage / "model_fp16.onnx")
        return self.record("onnx_fp16", path, {"format": "onnx", "precision": "fp16", "from": src.name,
                                               "io_dtype": "float32"}, "onnxruntime", "fp16")

    def int8_onnx(self, src: Path, calibration: np.ndarray, for_tensorrt: bool) -> Path:
        """Q/DQ INT8 ONNX: ORT's fast CPU form, or the form TensorRT builds INT8 engines from."""
        from .quantize import quantize_onnx_int8
        from .tensorrt import check_trt_support

        name, stem = ("int8_onnx_trt", "model_int8_trt") if for_tensorrt else ("int8_onnx", "model_int8")
        path = quantize_onnx_int8(src, self.stage / f"{stem}.onnx", calibration, for_tensorrt=for_tensorrt)
        report = check_trt_support(path)
        form = ("Q/DQ, symmetric int8 activations, per-channel int8 weights, float bias (TensorRT form)"
                if for_tensorrt else "Q/DQ, uint8 asymmetric activations, per-channel int8 weights, "
                                     "int32 bias (ONNX Runtime CPU form; TensorRT rejects it)")
        return self.record(name, path, {"format": "onnx", "precision": "int8", "from": src.name,
                                        "calibration_clips": int(len(calibration)), "quantization": form,
                                        "tensorrt_parser_check": {k: report[k] for k in ("supported", "problems")}},
                           "onnxruntime", "int8")

    def int8_openvino(self, onnx_path: Path, calibration: np.ndarray) -> Path:
        from .quantize import quantize_openvino_int8

        xml = quantize_openvino_int8(onnx_path, self.stage / "model_int8.xml", calibration)
        return self.record("int8_openvino", xml, {"weights_file": xml.with_suffix(".bin").name,
                                                  "format": "openvino-ir", "precision": "int8",
                                                  "calibration_clips": int(len(calibration))},
                           "openvino", "int8")

    def tensorrt(self, src: Path, precision: str, trt_batch: Tuple[int, int, int]) -> Path:
        from .tensorrt import build_trt_engine, engine_sidecar_path

        suffix = "" if precision == "fp32" else f"_{precision}"
        engine = build_trt_engine(src, self.stage / f"model{suffix}.engine", batch=trt_batch,
                                  timing_cache=self.stage / "timing.cache")
        return self.record(f"tensorrt{suffix}", engine, {"sidecar": engine_sidecar_path(engine).name,
                                                         "format": "tensorrt-engine", "precision": precision,
                                                         "from": src.name}, "tensorrt", precision)


def _decoded_clip(model: nn.Module, video: str | os.PathLike) -> np.ndarray:
    """One clip of ``video``, decoded and normalized by the video pipeline at the model's clip
    shape (its pretrained_cfg: frames, stride, crop, mean/std)."""
    try:
        from e3d_zoo.video.pipeline import VideoClassifier
    except ImportError as exc:
        raise ConfigError(f"--video needs the video pipeline (pip install 'e3d-zoo[video]'): {exc}") from exc
    clf = VideoClassifier.from_model(model, backend="torch", num_clips=1, num_crops=1)
    return clf.views(os.fspath(video), num_clips=1, num_crops=1)[:1]  # decode + the eval transform


def _prepare_clips(n_clips: int, extra_clips: Optional[np.ndarray], shape: Tuple[int, int, int]) -> np.ndarray:
    C, T, R = shape
    clips = random_clips(n_clips, frames=T, size=R, in_chans=C, seed=0)
    if extra_clips is not None:
        extra = np.ascontiguousarray(extra_clips, dtype=np.float32)
        if extra.shape[1:] != clips.shape[1:]:
            raise ExportError(f"extra clips: expected (N, {C}, {T}, {R}, {R}), found {extra.shape}")
        clips = np.concatenate([clips, extra], axis=0)
    return clips


def export(source: Any, out_dir: str | os.PathLike, *, onnx: bool = True, openvino: bool = False,
           trt: bool = False, lower_2d: bool = False, int8: bool = False, fp16: bool = False,
           arch: Any = None, num_classes: Optional[int] = None, frames: Optional[int] = None,
           size: Optional[int] = None, pretrained: bool = False, seed: int = 0, batch: int = 1,
           dynamic_batch: bool = True, opset: int = 17, verify: bool = True, n_clips: int = 4,
           extra_clips: Optional[np.ndarray] = None, video: Optional[str | os.PathLike] = None,
           calibration_clips: Optional[np.ndarray] = None,
           n_calibration: int = 16, criteria: Optional[Mapping[str, Criteria]] = None,
           threads: Optional[int] = None, benchmark_runs: int = 0,
           trt_batch: Tuple[int, int, int] = (1, 1, 8), precision: str = "fp32",
           held_out: Optional[np.ndarray | str] = None, held_out_source: str = "",
           selection_runs: int = 20, cpu_flags: Optional[Sequence[str]] = None, progress: bool = False,
           log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Export ``source`` (registered name, arch JSON, checkpoint or nn.Module) into ``out_dir``.

    Every artifact is verified on its runtime against PyTorch on the same clips
    (``n_clips`` seeded random clips plus ``extra_clips`` and, with ``video``, one clip of it
    decoded and normalized by the video pipeline) by
    the criteria of its precision (:data:`e3d_runtime.criteria.CRITERIA`, overridable per precision
    with ``criteria``). Reference logits that cannot reveal a wrong artifact are refused.
    Any failure raises VerificationError and leaves ``out_dir`` untouched. ``fp16`` adds
    an fp16 ONNX and OpenVINO fp16 weights; ``int8`` two Q/DQ ONNX (ORT's CPU form and
    TensorRT's) and, with ``openvino``, an NNCF IR; ``trt`` builds one engine per precision
    asked (fp32, plus fp16 / INT8 from the fp16 / TensorRT Q/DQ ONNX). Returns the manifest.

    ``precision="auto"`` (needs trained weights and ``held_out`` clips of their training
    distribution, (N, C, T, H, W) normalized, or a ``--held-out`` string for
    :func:`.precision.load_held_out`): also builds bf16 (where the CPU has native
    bf16) and INT8 CPU artifacts, OpenVINO's when it is installed, and per runtime keeps
    the fastest that agrees with fp32 PyTorch on ``held_out`` (:mod:`.precision`);
    ``calibration_clips`` should then come from the training data too. ``cpu_flags``
    stands in for this CPU's flags when deciding what to build (tests).
    """
    if trt:  # fail before any work when TensorRT or CUDA is missing
        from .tensorrt import require_tensorrt

        require_tensorrt("--trt (TensorRT engines)")
    if not (onnx or openvino or trt):
        raise ExportError("nothing to export: choose at least one of onnx, openvino, trt")
    if precision not in ("fp32", "auto"):
        raise ConfigError(f"precision: expected 'fp32' or 'auto', found {precision!r}")
    auto = precision == "auto"
    # Output-path rules, checked before any work and enforced again under the output's
    # lock by atomic_dir: never replace a file, a symlink or a folder that is not an
    # export; recover a swap a killed run left; one export per --out at a time.
    out_rules = dict(owned=is_export_folder, what="export folder", marker=MANIFEST_NAME)
    check_replaceable(out_dir, **out_rules)
    say = log or (lambda msg: None)
    crit = {k: (criteria or {}).get(k, v) for k, v in CRITERIA.items()}
    model, source_info = load_source(source, arch=arch, num_classes=num_classes, frames=frames,
                                     size=size, pretrained=pretrained, seed=seed)
    spec = model.spec
    shape = (model.in_chans, spec.frames, spec.size)
    if video is not None:  # a real clip joins the verification clips
        decoded = _decoded_clip(model, video)
        extra_clips = decoded if extra_clips is None else np.concatenate([extra_clips, decoded])
    calibration_from = "calibration clips"
    if auto:
        _require_trained(source_info)  # before rendering or reading any held-out clips
        if isinstance(held_out, str):  # --held-out synthetic[:N] or a file
            from .precision import load_held_out

            held_out, calib_given, held_out_source = load_held_out(held_out, shape, n_calibration)
            if calibration_clips is None and calib_given is not None:
                calibration_clips, calibration_from = calib_given, f"{held_out_source}: calibration"
        held_out = _check_auto(held_out, shape)
        openvino = openvino or importlib.util.find_spec("openvino") is not None
        # a few real clips join the random ones, so every artifact is also verified on data
        real = held_out[:4].astype(np.float16).astype(np.float32)
        extra_clips = real if extra_clips is None else np.concatenate([extra_clips, real])
    if calibration_clips is not None:  # given to the API, or from a --held-out file
        calibration_clips = _checked_clips(calibration_clips, shape, calibration_from)
    clips = _prepare_clips(n_clips, extra_clips, shape)
    if calibration_clips is not None and len(clips) > n_clips and "int8" not in (criteria or {}):
        # INT8 calibrated on data is judged on the data clips (the ones after the random
        # clips): a trained network's INT8 error on noise says nothing about the artifact
        crit["int8"] = replace(crit["int8"], first_clip=n_clips)
    ref = reference_logits(model, clips)
    if verify:
        check_reference(ref, f"{spec.name}: PyTorch reference logits")
    plan = {"lower_2d": lower_2d, "openvino": openvino, "fp16": fp16, "trt": trt,
            "bf16": auto and openvino and wants_bf16(cpu_flags),
            "int8_cpu": int8 or auto, "int8_trt": int8, "int8_openvino": (int8 or auto) and openvino}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=1 + sum(plan.values()) + openvino * fp16 + trt * (fp16 + int8) + auto,
                   desc="export", unit="artifact")
    try:
        with atomic_dir(Path(out_dir), **out_rules) as stage:
            run = _ExportRun(model, stage, clips, ref, verify=verify, benchmark_runs=benchmark_runs,
                             threads=threads, criteria=crit, opset=opset, batch=batch,
                             dynamic_batch=dynamic_batch, log=say, progress=bar)
            calib = calibration_clips
            if (int8 or auto) and calib is None:
                calib = random_clips(n_calibration, frames=spec.frames, size=spec.size,
                                     in_chans=model.in_chans, seed=1)
            if auto:  # asked for explicitly, an INT8 artifact that fails still fails the export
                run.optional = {"openvino_bf16"} | (set() if int8 else {"int8_onnx", "int8_openvino"})
            _build_artifacts(run, plan, calib, trt_batch)
            extra: Dict[str, Any] = {}
            if auto:
                from .precision import select

                extra["selection"] = select(stage, run.artifacts, held_out, reference_logits(model, held_out),
                                            threads=threads, runs=selection_runs, flags=cpu_flags,
                                            held_out_source=held_out_source, rejected=run.rejected,
                                            log=say)
                extra["default_artifacts"] = extra["selection"].pop("default_artifacts")
                run.done("precision selection")
            C, T, R = shape
            input_spec = {"name": "clips", "layout": "NCTHW", "shape": [batch, C, T, R, R],
                          "dynamic_batch": dynamic_batch, "dtype": "float32",
                          "mean": list(model.pretrained_cfg.get("mean", ())),
                          "std": list(model.pretrained_cfg.get("std", ())),
                          "frame_stride": model.pretrained_cfg.get("frame_stride"),
                          "verification_clips": int(len(clips))}
            used = {a["verify"]["criteria"] for a in run.artifacts.values()}
            manifest = build_manifest(stage, source=source_info, input_spec=input_spec,
                                      artifacts=run.artifacts, verification=run.results,
                                      latency=run.latency or None,
                                      extra={"reference": save_reference(stage, clips, ref),
                                             "criteria": {k: crit[k].to_dict() for k in sorted(used)},
                                             "lowering_criteria": LOWERING_CRITERIA.to_dict() if lower_2d else None,
                                             "preprocess": _preprocess(model, T, R, C), **extra})
            write_manifest(stage, manifest)
    finally:
        if bar is not None:
            bar.close()
    return manifest


def _build_artifacts(run: _ExportRun, plan: Mapping[str, bool], calib: Optional[np.ndarray],
                     trt_batch: Tuple[int, int, int]) -> None:
    """Every artifact ``plan`` asks for, in dependency order, into ``run``'s stage."""
    onnx_path = run.onnx(run.model, "onnx", "3d")
    # TensorRT, fp16 and INT8 start from the lowered graph when there is one
    src = run.lowered() if plan["lower_2d"] else onnx_path
    if plan["openvino"]:
        xml = run.openvino(onnx_path)
        if plan["fp16"]:
            run.openvino(onnx_path, fp16_weights=True)
        if plan["bf16"]:
            run.openvino_bf16(xml)
    fp16_src = run.onnx_fp16(src) if plan["fp16"] else None
    if plan["int8_cpu"]:
        run.int8_onnx(src, calib, for_tensorrt=False)
    int8_src = run.int8_onnx(src, calib, for_tensorrt=True) if plan["int8_trt"] else None
    if plan["int8_openvino"]:
        run.int8_openvino(onnx_path, calib)
    if plan["trt"]:
        for precision, engine_src in (("fp32", src), ("fp16", fp16_src), ("int8", int8_src)):
            if engine_src is not None:
                run.tensorrt(engine_src, precision, trt_batch)


def _require_trained(source_info: Mapping[str, Any]) -> None:
    weights = str(source_info.get("weights", ""))
    if weights.startswith("random initialization"):
        raise ConfigError("precision auto: the weights are random; whether INT8 or bf16 still gives "
                          "fp32's answers can only be judged on trained weights (a checkpoint, "
                          "a save-pretrained folder or --pretrained)")


def _check_auto(held_out: Optional[np.ndarray], shape: Tuple[int, int, int]) -> np.ndarray:
    """The held-out clips ``precision="auto"`` judges agreement on, checked."""
    if held_out is None:
        raise ConfigError("precision auto: needs held-out clips of the training distribution to judge "
                          "agreement on (--held-out synthetic, or a .npy/.npz of clips)")
    return _checked_clips(held_out, shape, "held-out clips")


def _checked_clips(clips: Any, shape: Tuple[int, int, int], what: str) -> np.ndarray:
    """``clips`` as contiguous float32 ``(N >= 1, C, T, R, R)`` of finite numbers (agreement or
    calibration on NaN inputs would judge nothing)."""
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    C, T, R = shape
    if clips.ndim != 5 or clips.shape[1:] != (C, T, R, R) or not len(clips):
        raise ConfigError(f"{what}: expected (N, {C}, {T}, {R}, {R}), N >= 1, found {clips.shape}")
    if not np.isfinite(clips).all():
        raise ConfigError(f"{what}: expected finite numbers, found NaN or Inf")
    return clips


def criteria_overrides(max_rel_err: Optional[float] = None,
                       min_top1: Optional[float] = None) -> Dict[str, Criteria]:
    """The CLI's overrides: ``max_rel_err`` for fp32 artifacts, ``min_top1`` for reduced ones."""
    out: Dict[str, Criteria] = {}
    if max_rel_err is not None:
        out["fp32"] = criteria_for("fp32", max_rel_err=max_rel_err)
    if min_top1 is not None:
        for key in ("fp16", "bf16", "int8"):
            out[key] = criteria_for(key, min_top1=min_top1)
    return out


def _preprocess(model: nn.Module, frames: int, size: int, in_chans: int) -> Dict[str, Any]:
    """The manifest's ``preprocess`` section: what e3d-infer does to frames, without torch.
    Clip shape from the exported graph (``--frames``/``--size`` may override the config)."""
    from e3d_runtime.manifest import preprocess_section

    cfg = {**(model.pretrained_cfg or {}), "num_frames": frames, "input_size": (in_chans, size, size)}
    return preprocess_section(cfg, num_classes=getattr(model, "num_classes", None))
