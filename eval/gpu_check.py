"""What an NVIDIA GPU machine does with E3D-S: TensorRT engines and the CUDA PyTorch path.

    bash eval/gpu_check.sh [OUT.json]          # the wrapper: machine's python3, no install, < 8 min
    python -m e3d_eval.gpu_check --out gpu_check.json

Runs whatever this machine allows and prints ONE JSON document (also written to
``--out`` after every section, so a killed run still leaves what it measured):

* ``torch_cuda``: E3D-S (random weights, trained-like BatchNorm statistics) on CUDA in
  fp32 (TF32 off), fp16 and bf16 autocast, channels_last_3d, torch.compile and CUDA
  graphs; each variant's logits judged against PyTorch fp32 on the CPU by the criteria
  of its precision (:mod:`e3d_export.criteria`), and timed at batch 1 and 16 (median
  and p90 ms over synchronized runs, clips/s);
* ``tensorrt``: fp32, fp16 and INT8 engines built the way ``e3d-export --trt`` builds
  them (strongly typed, from the fp32 / fp16 / Q/DQ ONNX), verified the same way and
  timed end to end (host copies included) and device-only (``run_torch``);
* ``not_done``: everything that did not run, and why (no CUDA, no tensorrt, ...).

Needs numpy; everything else (torch, tensorrt, cuda-python, onnx, onnxruntime,
onnxslim, onnxconverter-common) is used when importable and reported when not.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

SCHEMA = "e3d-gpu-check"
BATCHES = (1, 16)


class Check:
    """The JSON document under construction, written out after every section."""

    def __init__(self, out: Optional[Path], budget_s: float):
        self.out = out
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.doc: Dict[str, Any] = {"schema": SCHEMA, "schema_version": 1,
                                    "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                    "not_done": []}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def skip(self, what: str, why: str) -> Dict[str, Any]:
        self.doc["not_done"].append({"what": what, "why": why})
        return {"status": "not run", "reason": why}

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str) + "\n")
        os.replace(tmp, self.out)


def _version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def _cpu() -> Dict[str, Any]:
    from e3d_runtime.machine import cpu_info

    return {**cpu_info(), "count": os.cpu_count()}


def environment() -> Dict[str, Any]:
    import importlib.util

    env: Dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable, "cpu": _cpu(),
                           "packages": {n: getattr(importlib.util.find_spec(n), "origin", None)
                                        for n in ("e3d_zoo", "e3d_zoo.searched_archs", "e3d_export", "e3d_eval",
                                                  "e3d_runtime")},
                           "versions": {n: _version(n) for n in ("numpy", "torch", "timm", "onnx", "onnxruntime",
                                                                 "onnxslim", "onnxconverter-common", "tensorrt",
                                                                 "cuda-python", "cuda-bindings")}}
    try:
        import torch

        env["torch_cuda"] = {"available": bool(torch.cuda.is_available()), "cuda": torch.version.cuda,
                             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}",
                          "memory_gib": round(p.total_memory / 2 ** 30, 1),
                          "bf16": bool(torch.cuda.is_bf16_supported())}
    except ImportError:
        env["torch_cuda"] = {"available": False, "why": "torch is not installed"}
    return env


def timing(fn: Callable[[], Any], sync: Callable[[], None], *, warmup: int, runs: int, batch: int) -> Dict[str, Any]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1000.0)
    med = float(np.median(times))
    return {"batch": batch, "runs": runs, "median_ms": round(med, 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3),
            "clips_per_s": round(1000.0 * batch / med, 1) if med > 0 else None}


def verdict(ref: np.ndarray, got: np.ndarray, precision: str) -> Dict[str, Any]:
    from e3d_export.criteria import compare, criteria_for

    crit = criteria_for(precision)
    a = compare(ref, got, crit).to_dict()
    return {"criteria": crit.to_dict(), **{k: a[k] for k in ("passed", "failed", "max_rel_err", "min_cosine",
                                                             "top1_agreement", "topk_agreement")}}


class Reference:
    """E3D-S on the CPU in fp32: the model, the verification clips and their logits."""

    def __init__(self, model_name: str, frames: Optional[int], size: Optional[int], clips: int):
        import torch

        from e3d_export.source import load_source
        from e3d_export.verify import random_clips, reference_logits

        self.model, self.source = load_source(model_name, frames=frames, size=size, seed=0)
        spec = self.model.spec
        self.shape = (self.model.in_chans, spec.frames, spec.size, spec.size)
        self.clips = random_clips(clips, frames=spec.frames, size=spec.size, in_chans=self.model.in_chans)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.logits = reference_logits(self.model, self.clips)

    def batch(self, n: int) -> np.ndarray:
        reps = -(-n // len(self.clips))
        return np.ascontiguousarray(np.concatenate([self.clips] * reps)[:n])


def torch_cuda(check: Check, ref_factory: Callable[[], Reference], runs: int) -> Dict[str, Any]:
    try:
        import torch
    except ImportError:
        return check.skip("CUDA PyTorch path", "torch is not installed")
    if not torch.cuda.is_available():
        return check.skip("CUDA PyTorch path", "no CUDA GPU is visible (torch.cuda.is_available() is False)")
    ref = ref_factory()
    import copy

    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 (TF32 is on for cuDNN convs by default)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    variants: Dict[str, Dict[str, Any]] = {
        "fp32": {"dtype": None, "channels_last": False, "precision": "fp32"},
        "fp32_channels_last_3d": {"dtype": None, "channels_last": True, "precision": "fp32"},
        "fp16_autocast": {"dtype": torch.float16, "channels_last": False, "precision": "fp16"},
        "fp16_autocast_channels_last_3d": {"dtype": torch.float16, "channels_last": True, "precision": "fp16"},
        "bf16_autocast_channels_last_3d": {"dtype": torch.bfloat16, "channels_last": True, "precision": "bf16"},
        "fp16_channels_last_3d_compile": {"dtype": torch.float16, "channels_last": True, "precision": "fp16",
                                          "compile": True},
        "fp16_channels_last_3d_cuda_graphs": {"dtype": torch.float16, "channels_last": True, "precision": "fp16",
                                              "graphs": True},
    }
    out: Dict[str, Any] = {"status": "ran", "tf32": False, "variants": {}}
    for name, v in variants.items():
        if check.left() < 45:
            out["variants"][name] = check.skip(f"torch {name}", "time budget used up")
            continue
        if v["dtype"] is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            out["variants"][name] = check.skip(f"torch {name}", "this GPU has no bf16")
            continue
        try:
            out["variants"][name] = _torch_variant(ref, copy.deepcopy(ref.model), v, dev, sync, runs)
        except Exception as exc:  # one failing variant must not hide the others
            out["variants"][name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                     "trace": traceback.format_exc(limit=3)}
        check.save()
    return out


def _torch_variant(ref: Reference, model, v: Dict[str, Any], dev, sync, runs: int) -> Dict[str, Any]:
    import torch

    fmt = torch.channels_last_3d if v["channels_last"] else torch.contiguous_format
    model = model.to(dev).eval().to(memory_format=fmt)
    fn = torch.compile(model) if v.get("compile") else model

    def forward(x):
        # autocast's weight-cast cache must be off inside a CUDA graph capture (torch docs)
        with torch.inference_mode(), torch.autocast("cuda", dtype=v["dtype"] or torch.float32,
                                                     enabled=v["dtype"] is not None,
                                                     cache_enabled=not v.get("graphs")):
            return fn(x)

    def upload(a):
        return torch.from_numpy(a).to(dev).contiguous(memory_format=fmt)

    t = time.perf_counter()
    got = np.concatenate([forward(upload(ref.clips[i:i + 1])).float().cpu().numpy() for i in range(len(ref.clips))])
    first_s = time.perf_counter() - t
    res: Dict[str, Any] = {"status": "ran", "precision": v["precision"], "first_call_s": round(first_s, 2),
                           "verification": verdict(ref.logits, got, v["precision"]), "timing": {}}
    for b in BATCHES:
        x = upload(ref.batch(b))
        if v.get("graphs"):
            static_x = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    forward(static_x)  # warm up on a side stream before capture
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = forward(static_x)
            graph.replay()
            sync()
            if b == 1:
                res["verification_graph_replay"] = verdict(ref.logits[:1], static_y.float().cpu().numpy(),
                                                           v["precision"])
            step = graph.replay
        else:
            step = lambda x=x: forward(x)  # noqa: E731
        res["timing"][f"batch{b}"] = timing(step, sync, warmup=10, runs=runs if b == 1 else max(10, runs // 3),
                                            batch=b)
    return res


def tensorrt(check: Check, ref_factory: Callable[[], Reference], runs: int) -> Dict[str, Any]:
    try:
        from e3d_zoo.runtime.tensorrt_backend import cuda_status, import_cudart, import_tensorrt

        trt = import_tensorrt("the GPU check")
        import_cudart("the GPU check")
    except Exception as exc:
        return check.skip("TensorRT engines", str(exc))
    ok, why = cuda_status()
    if not ok:
        return check.skip("TensorRT engines", why)
    ref = ref_factory()
    from e3d_export.onnx import export_onnx, export_onnx_fp16
    from e3d_export.quantize import quantize_onnx_int8
    from e3d_export.tensorrt import build_trt_engine, read_engine_sidecar
    from e3d_export.verify import random_clips
    from e3d_zoo.runtime import load_backend

    out: Dict[str, Any] = {"status": "ran", "tensorrt": trt.__version__, "gpu": why, "engines": {}}
    work = Path(tempfile.mkdtemp(prefix="e3d_gpu_check_"))
    try:
        onnx_path = export_onnx(ref.model, work / "model.onnx", simplify=_has("onnxslim"))
    except Exception as exc:
        return check.skip("TensorRT engines", f"ONNX export failed: {exc}")
    sources: Dict[str, Any] = {"fp32": onnx_path}
    try:
        sources["fp16"] = export_onnx_fp16(onnx_path, work / "model_fp16.onnx")
    except Exception as exc:
        out["engines"]["fp16"] = check.skip("TensorRT fp16 engine", f"no fp16 ONNX: {exc}")
    try:
        spec = ref.model.spec
        calib = random_clips(16, frames=spec.frames, size=spec.size, in_chans=ref.model.in_chans, seed=1)
        sources["int8"] = quantize_onnx_int8(onnx_path, work / "model_int8_trt.onnx", calib, for_tensorrt=True)
    except Exception as exc:
        out["engines"]["int8"] = check.skip("TensorRT INT8 engine", f"no Q/DQ ONNX: {exc}")
    for precision, src in sources.items():
        if check.left() < 60:
            out["engines"][precision] = check.skip(f"TensorRT {precision} engine", "time budget used up")
            continue
        try:
            t = time.perf_counter()
            engine = build_trt_engine(src, work / f"model_{precision}.engine", batch=(1, 1, max(BATCHES)),
                                      timing_cache=work / "timing.cache")
            row: Dict[str, Any] = {"status": "ran", "build_s": round(time.perf_counter() - t, 1),
                                   "sidecar": read_engine_sidecar(engine)}
            be = load_backend("tensorrt", engine)
            got = np.concatenate([be.run(ref.clips[i:i + 1]) for i in range(len(ref.clips))])
            row["verification"] = verdict(ref.logits, got, precision)
            row["timing_end_to_end"] = {f"batch{b}": timing(lambda x=ref.batch(b): be.run(x), lambda: None,
                                                             warmup=10, runs=runs, batch=b) for b in BATCHES}
            try:
                import torch

                row["timing_device"] = {}
                for b in BATCHES:
                    x = torch.from_numpy(ref.batch(b)).cuda()
                    row["timing_device"][f"batch{b}"] = timing(lambda x=x: be.run_torch(x), torch.cuda.synchronize,
                                                               warmup=10, runs=runs, batch=b)
            except ImportError:
                row["timing_device"] = {"status": "not run", "reason": "torch is not installed"}
            be.close()
            out["engines"][precision] = row
        except Exception as exc:
            out["engines"][precision] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                         "trace": traceback.format_exc(limit=3)}
        check.save()
    return out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="where to write the JSON (default gpu_check.json)")
    p.add_argument("--model", default="e3d_s", help="registered model or arch JSON (default e3d_s)")
    p.add_argument("--frames", type=int, help="clip length (default: the model's)")
    p.add_argument("--size", type=int, help="clip side (default: the model's)")
    p.add_argument("--clips", type=int, default=4, help="verification clips (default 4)")
    p.add_argument("--runs", type=int, default=50, help="timed runs at batch 1 (default 50)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stop starting new work after this many seconds (default 420: the wrapper kills at 480)")
    args = p.parse_args(argv)
    check = Check(Path(args.out) if args.out else None, args.budget_s)
    check.doc["environment"] = environment()
    check.doc["model"] = {"name": args.model, "frames": args.frames, "size": args.size}
    cache: Dict[str, Reference] = {}

    def ref_factory() -> Reference:
        if "ref" not in cache:
            cache["ref"] = Reference(args.model, args.frames, args.size, args.clips)
            check.doc["model"].update({"input": list(cache["ref"].shape), "weights": cache["ref"].source["weights"]})
        return cache["ref"]

    check.save()
    for section, fn in (("torch_cuda", torch_cuda), ("tensorrt", tensorrt)):
        try:
            check.doc[section] = fn(check, ref_factory, args.runs)
        except Exception as exc:  # report, never crash without the JSON
            check.doc[section] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "trace": traceback.format_exc(limit=5)}
            check.doc["not_done"].append({"what": section, "why": f"{type(exc).__name__}: {exc}"})
        check.save()
    check.doc["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    check.save()
    print(json.dumps(check.doc, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
