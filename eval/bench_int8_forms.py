"""ONNX Runtime latency of the two INT8 Q/DQ forms against fp32 (E3D-S, lowered 2D graph).

    python -m e3d_eval.bench_int8_forms docs/export_int8_forms.json

TensorRT's form (symmetric int8 activations, float biases) against ORT's CPU form (uint8
activations, int32 biases), 2 threads, 12 interleaved runs after 3 warm-ups, plus each
one's error against PyTorch fp32 on 2 clips.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(out: str) -> int:
    import torch

    import e3d_zoo
    from e3d_export import export_onnx, lower_to_2d, random_clips, randomize_statistics, reference_logits
    from e3d_export.criteria import compare, criteria_for
    from e3d_export.quantize import quantize_onnx_int8
    from e3d_zoo.runtime import load_backend

    work = Path(tempfile.mkdtemp(prefix="e3d_int8_forms_"))
    torch.manual_seed(0)
    model = randomize_statistics(e3d_zoo.create_model("e3d_s"), 0)
    x = random_clips(2, frames=13, size=160)
    ref = reference_logits(model, x)
    fp32 = export_onnx(lower_to_2d(model), work / "m2d.onnx")
    calib = random_clips(8, frames=13, size=160, seed=1)
    paths = {"fp32_2d": fp32,
             "int8_tensorrt_form": quantize_onnx_int8(fp32, work / "trt.onnx", calib, for_tensorrt=True),
             "int8_ort_cpu_form": quantize_onnx_int8(fp32, work / "cpu.onnx", calib)}
    backends = {k: load_backend("onnxruntime", p, threads=2) for k, p in paths.items()}
    results = {}
    for k, be in backends.items():
        got = np.concatenate([be.run(x[i:i + 1]) for i in range(len(x))])
        a = compare(ref, got, criteria_for("int8" if "int8" in k else "fp32"))
        results[k] = {"max_rel_err_vs_fp32": a.max_rel_err, "cosine_vs_fp32": a.min_cosine, "times": []}
    for _ in range(3):
        for be in backends.values():
            be.run(x[:1])
    for _ in range(12):  # interleaved, so load changes hit every form alike
        for k, be in backends.items():
            t = time.perf_counter()
            be.run(x[:1])
            results[k]["times"].append((time.perf_counter() - t) * 1000)
    from e3d_runtime.machine import cpu_info

    cpu = cpu_info()
    cpu, flags = cpu.get("model", "?"), cpu["flags"]
    doc = {"command": "python -m e3d_eval.bench_int8_forms " + out, "cpu": cpu, "flags": flags, "threads": 2,
           "clip": [1, 3, 13, 160, 160], "runs": 12, "interleaved": True,
           "results": {k: {"median_ms": float(np.median(v["times"])),
                           "p90_ms": float(np.percentile(v["times"], 90)),
                           "max_rel_err_vs_fp32": v["max_rel_err_vs_fp32"], "cosine_vs_fp32": v["cosine_vs_fp32"]}
                       for k, v in results.items()}}
    Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["results"], indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "int8_forms.json"))
