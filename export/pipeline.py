"""``export()``: one source model -> a folder of verified artifacts + ``manifest.json``.

The folder is staged and swapped in whole (:func:`e3d_zoo.atomic.atomic_dir`): a failed
verification, a missing runtime or an interruption leaves the previous folder (or
nothing) in place, never a partial set or a stale manifest.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from e3d_zoo.atomic import atomic_dir, check_replaceable
from e3d_zoo.errors import ExportError, VerificationError, WeightsError

from .manifest import MANIFEST_NAME, build_manifest, is_export_folder, sha256_file, write_manifest
from .verify import (DEFAULT_ABS_TOL, DEFAULT_MIN_TOP1, compare, random_clips, reference_logits,
                     verify_backend)

LOWERING_ABS_TOL = 1e-5


# ---- source -------------------------------------------------------------------------
def load_source(source: Any, *, arch: Any = None, num_classes: Optional[int] = None,
                frames: Optional[int] = None, size: Optional[int] = None,
                pretrained: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """(model in eval mode, description for the manifest) from a name, arch file,
    checkpoint file, save-pretrained folder, ``hf-hub:`` id or nn.Module.

    A checkpoint (``.pth``/``.pt``/``.safetensors``) needs ``arch`` (a name or arch
    file) unless it is an ``e3d-train`` checkpoint, which carries its config.
    """
    from e3d_zoo.zoo import create_model, spec_for

    if isinstance(source, nn.Module):
        model = source
        info: Dict[str, Any] = {"kind": "module", "name": getattr(getattr(model, "spec", None), "name", None),
                                "weights": "in-memory module"}
    else:
        src = os.fspath(source)
        path = Path(src)
        if path.is_dir() or src.startswith("hf-hub:"):
            from e3d_zoo import hub  # save-pretrained folder (config.json + weights) or Hub repo

            model = hub.from_pretrained(src, num_classes=num_classes)
            info = {"kind": "pretrained folder" if path.is_dir() else "hub", "name": model.spec.name,
                    "path": src, "weights": src}
            weights_file = path / "model.safetensors"
            if weights_file.is_file():
                info["weights_sha256"] = sha256_file(weights_file)
        elif path.suffix in (".pth", ".pt", ".safetensors", ".bin", ".ckpt"):
            model, info = _from_checkpoint(path, arch=arch, num_classes=num_classes, frames=frames, size=size)
        else:
            spec = spec_for(src, frames=frames, size=size)  # ModelNotFoundError / ArchError
            kwargs = {"num_classes": num_classes} if num_classes else {}
            if pretrained:
                model = create_model(src, pretrained=True, **kwargs)
                weights = f"pretrained ({(model.pretrained_cfg or {}).get('hf_hub_id')})"
            else:
                model = create_model(spec if (frames or size) or path.exists() else src, **kwargs)
                weights = "random initialization (no checkpoint given)"
            info = {"kind": "arch file" if path.exists() else "registered name", "name": spec.name,
                    "path": str(path) if path.exists() else None, "weights": weights}
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError(f"{type(model).__name__}: expected an E3D model (with a .spec)")
    if frames is not None or size is not None:
        model.spec = spec = spec.with_clip(frames, size)
    info["arch"] = spec.to_dict()
    info["num_classes"] = getattr(model, "num_classes", None)
    return model.eval(), info


def _read_state(path: Path) -> Dict[str, Any]:
    from e3d_zoo.hub import check_finite

    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = {"model": load_file(str(path))}
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable checkpoint ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    if not isinstance(state.get("model"), dict):
        if isinstance(state.get("state_dict"), dict):
            state = {**state, "model": state["state_dict"]}
        elif all(isinstance(v, torch.Tensor) for v in state.values()):
            state = {"model": state}
        else:
            raise WeightsError(f"{path}: no weights found (expected a state dict, or one under "
                               "'model' or 'state_dict')")
    check_finite(state["model"], str(path))  # NaN weights export "fine" and label everything
    return state


def _from_checkpoint(path: Path, *, arch: Any, num_classes: Optional[int], frames: Optional[int],
                     size: Optional[int]) -> Tuple[nn.Module, Dict[str, Any]]:
    from e3d_zoo.zoo import create_model, spec_for

    state = _read_state(path)
    weights = state["model"]
    classes = state.get("classes")
    cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    if arch is None:
        arch = cfg.get("model")
        if arch is None:
            raise WeightsError(f"{path}: the checkpoint does not say which architecture it is; "
                               "pass --arch NAME_OR_ARCH_JSON")
    spec = spec_for(arch, frames=frames if frames is not None else cfg.get("frames"),
                    size=size if size is not None else cfg.get("size"))
    head = weights.get("classifier.weight")
    n_cls = num_classes or (int(head.shape[0]) if isinstance(head, torch.Tensor) else 400)
    kwargs: Dict[str, Any] = {"num_classes": n_cls}
    hidden = weights.get("head_fc.weight")
    if isinstance(hidden, torch.Tensor) and hidden.shape[0] != spec.head_hidden:
        kwargs["head_hidden"] = int(hidden.shape[0])
    model = create_model(spec, **kwargs)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise WeightsError(f"{path}: the checkpoint does not fit architecture {spec.name!r}: "
                           + " ".join(lines[1:4] or lines[:1])) from None
    if classes:
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": list(classes)}
    return model, {"kind": "checkpoint", "name": spec.name, "path": str(path),
                   "weights": str(path), "weights_sha256": sha256_file(path)}


# ---- export -------------------------------------------------------------------------
def export(source: Any, out_dir: str | os.PathLike, *, onnx: bool = True, openvino: bool = False,
           trt: bool = False, lower_2d: bool = False, int8: bool = False, fp16: bool = False,
           arch: Any = None, num_classes: Optional[int] = None, frames: Optional[int] = None,
           size: Optional[int] = None, pretrained: bool = False, batch: int = 1,
           dynamic_batch: bool = True, opset: int = 17, verify: bool = True, n_clips: int = 4,
           extra_clips: Optional[np.ndarray] = None, calibration_clips: Optional[np.ndarray] = None,
           n_calibration: int = 16, abs_tol: float = DEFAULT_ABS_TOL,
           min_top1: float = DEFAULT_MIN_TOP1, threads: Optional[int] = None,
           benchmark_runs: int = 0, trt_batch: Tuple[int, int, int] = (1, 1, 8),
           progress: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Export ``source`` (registered name, arch JSON, checkpoint or nn.Module) into ``out_dir``.

    Every artifact is verified on its runtime against PyTorch on the same clips
    (``n_clips`` seeded random clips plus ``extra_clips``, e.g. a decoded video clip):
    fp32 by ``abs_tol`` on logits, fp16/int8 by ``min_top1`` agreement; any failure
    raises VerificationError and leaves ``out_dir`` untouched. Returns the manifest.
    """
    if trt:  # fail before any work when TensorRT or CUDA is missing
        from .tensorrt import require_tensorrt

        require_tensorrt("--trt (TensorRT engines)")
    if openvino and not onnx:
        onnx = True  # the IR is converted from our ONNX so both come from one graph
    if not (onnx or openvino or trt):
        raise ExportError("nothing to export: choose at least one of onnx, openvino, trt")
    if int8 and not (onnx or openvino):
        raise ExportError("int8 needs onnx or openvino")
    # ---- output-path rules (issue 14): checked before any work, enforced again under
    # the output's lock by atomic_dir: never replace a file, a symlink or a folder that
    # is not an export; recover a swap a killed run left; one export per --out at a time.
    out_rules = dict(owned=is_export_folder, what="export folder", marker=MANIFEST_NAME)
    check_replaceable(out_dir, **out_rules)
    say = log or (lambda msg: None)
    model, source_info = load_source(source, arch=arch, num_classes=num_classes, frames=frames,
                                     size=size, pretrained=pretrained)
    spec = model.spec
    T, R, C = spec.frames, spec.size, model.in_chans
    clips = random_clips(n_clips, frames=T, size=R, in_chans=C, seed=0)
    if extra_clips is not None:
        extra = np.ascontiguousarray(extra_clips, dtype=np.float32)
        if extra.shape[1:] != clips.shape[1:]:
            raise ExportError(f"extra clips: expected (N, {C}, {T}, {R}, {R}), found {extra.shape}")
        clips = np.concatenate([clips, extra], axis=0)
    ref = reference_logits(model, clips)
    steps: List[str] = (["onnx"] + (["onnx_2d"] if lower_2d else []) + (["openvino"] if openvino else [])
                        + (["openvino_fp16"] if openvino and fp16 else [])
                        + (["int8_onnx"] if int8 else []) + (["int8_openvino"] if int8 and openvino else [])
                        + (["tensorrt"] if trt else []))
    artifacts: Dict[str, Any] = {}
    results: List[Dict[str, Any]] = []
    latency: Dict[str, Any] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(steps), desc="export", unit="artifact")
    out_dir = Path(out_dir)

    def check(name: str, path: Path, backend: str, precision: str, **opts: Any) -> None:
        from e3d_zoo.runtime import load_backend

        if not verify and not benchmark_runs:
            return
        be = load_backend(backend, path, threads=threads, **opts)
        if verify:
            res = verify_backend(be, model, clips, artifact=path.name, precision=precision,
                                 abs_tol=abs_tol, min_top1=min_top1, reference=ref)
            results.append({"name": name, **res.to_dict()})
            say(f"verified {path.name} on {backend} ({precision}): max abs err "
                f"{res.max_abs_err:.2e}, top-1 agreement {res.top1_agreement:.3f}")
        if benchmark_runs:
            stats = be.time(clips[:1], warmup=2, runs=benchmark_runs)
            latency[name] = {**stats.to_dict(), "clip_shape": list(clips.shape[1:])}

    def done(step: str) -> None:
        if bar is not None:
            bar.set_postfix_str(step)
            bar.update(1)

    try:
        with atomic_dir(out_dir, **out_rules) as stage:
            from .onnx import export_onnx, op_histogram
            from .tensorrt import check_trt_support

            def onnx_artifact(module: nn.Module, name: str, layout: str) -> Path:
                """Export, record and verify one fp32 ONNX graph (3D or 2D-lowered)."""
                path = export_onnx(module, stage / f"model{'' if layout == '3d' else '_2d'}.onnx",
                                   frames=T, size=R, batch=batch, dynamic_batch=dynamic_batch,
                                   opset=opset)
                report = check_trt_support(path)
                artifacts[name] = {"file": path.name, "format": "onnx", "precision": "fp32",
                                   "opset": opset, "dynamic_batch": dynamic_batch, "layout": layout,
                                   "ops": op_histogram(path),
                                   "tensorrt_parser_check": {k: report[k] for k in ("supported", "problems")}}
                check(name, path, "onnxruntime", "fp32")
                return path

            onnx_path = onnx_artifact(model, "onnx", "3d")
            done("onnx")
            int8_src = onnx_path
            if lower_2d:
                from .lower2d import lower_to_2d

                lowered = lower_to_2d(model)
                lowered_stats = compare(ref, reference_logits(lowered, clips))
                if lowered_stats["max_abs_err"] > LOWERING_ABS_TOL:
                    raise VerificationError(
                        f"2D lowering is not exact for {spec.name}: max abs err "
                        f"{lowered_stats['max_abs_err']:.3g} > {LOWERING_ABS_TOL:g} in PyTorch")
                results.append({"name": "lowering_pytorch", "artifact": "(module)", "backend": "torch",
                                "precision": "fp32", "clips": len(clips), "passed": True,
                                "criterion": f"max_abs_err <= {LOWERING_ABS_TOL:g}", **lowered_stats})
                int8_src = onnx_artifact(lowered, "onnx_2d", "2d")
                done("onnx_2d")
            if openvino:
                from .openvino import export_openvino

                xml = export_openvino(onnx_path, stage / "model.xml")
                artifacts["openvino"] = {"file": xml.name, "weights_file": xml.with_suffix(".bin").name,
                                         "format": "openvino-ir", "precision": "fp32"}
                check("openvino", xml, "openvino", "fp32")
                done("openvino")
                if fp16:
                    x16 = export_openvino(onnx_path, stage / "model_fp16.xml", compress_fp16=True)
                    artifacts["openvino_fp16"] = {"file": x16.name, "weights_file": x16.with_suffix(".bin").name,
                                                  "format": "openvino-ir", "precision": "fp16 weights"}
                    check("openvino_fp16", x16, "openvino", "fp16")
                    done("openvino_fp16")
            calib = calibration_clips
            if int8 and calib is None:
                calib = random_clips(n_calibration, frames=T, size=R, in_chans=C, seed=1)
            if int8 and (onnx or openvino):
                from .quantize import quantize_onnx_int8

                q = quantize_onnx_int8(int8_src, stage / "model_int8.onnx", calib)
                artifacts["int8_onnx"] = {"file": q.name, "format": "onnx", "precision": "int8",
                                          "from": int8_src.name, "calibration_clips": int(len(calib))}
                check("int8_onnx", q, "onnxruntime", "int8")
                done("int8_onnx")
                if openvino:
                    from .quantize import quantize_openvino_int8

                    q_ov = quantize_openvino_int8(onnx_path, stage / "model_int8.xml", calib)
                    artifacts["int8_openvino"] = {"file": q_ov.name, "weights_file": q_ov.with_suffix(".bin").name,
                                                  "format": "openvino-ir", "precision": "int8",
                                                  "calibration_clips": int(len(calib))}
                    check("int8_openvino", q_ov, "openvino", "int8")
                    done("int8_openvino")
            if trt:
                from .tensorrt import build_trt_engine, engine_sidecar_path

                src = stage / "model_2d.onnx" if lower_2d else onnx_path
                engine = build_trt_engine(src, stage / "model.engine", fp16=fp16, int8=int8,
                                          calibration_clips=calib, batch=trt_batch,
                                          timing_cache=stage / "timing.cache")
                trt_precision = "int8" if int8 else "fp16" if fp16 else "fp32"
                artifacts["tensorrt"] = {"file": engine.name, "sidecar": engine_sidecar_path(engine).name,
                                         "format": "tensorrt-engine", "precision": trt_precision}
                check("tensorrt", engine, "tensorrt", trt_precision)
                done("tensorrt")
            input_spec = {"name": "clips", "layout": "NCTHW", "shape": [batch, C, T, R, R],
                          "dynamic_batch": dynamic_batch, "dtype": "float32",
                          "mean": list(model.pretrained_cfg.get("mean", ())),
                          "std": list(model.pretrained_cfg.get("std", ())),
                          "frame_stride": model.pretrained_cfg.get("frame_stride"),
                          "verification_clips": int(len(clips))}
            manifest = build_manifest(stage, source=source_info, input_spec=input_spec,
                                      artifacts=artifacts, verification=results,
                                      latency=latency or None,
                                      extra={"tolerances": {"fp32_abs": abs_tol, "reduced_min_top1": min_top1,
                                                            "lowering_abs": LOWERING_ABS_TOL}})
            write_manifest(stage, manifest)
    finally:
        if bar is not None:
            bar.close()
    return manifest
