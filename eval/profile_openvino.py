"""Where OpenVINO's time goes: per-layer profile of an E3D IR, against the sgemm roofline.

    python -m e3d_eval.profile_openvino                    # E3D-S, 1x3x13x160x160, 2 threads
    python -m e3d_eval.profile_openvino --model e3d_m --frames 16 --size 224 --json out.json

Compiles the deployable IR with ``PERF_COUNT`` on, runs it ``--runs`` times, and sums
the CPU plugin's per-layer times by kernel class: pointwise (1x1x1) convolutions,
depthwise (grouped) convolutions, other convolutions, and the rest. Each class's MACs
come from the exported ONNX graph (shape inference, ``Conv`` nodes by kernel and
group), so its achieved GFLOP/s can be set against this machine's sgemm GFLOP/s,
measured in the same process (torch, the same ``n`` as ``bench_export``). That shows
which part of the network keeps the whole from reaching the roofline.

The wall time printed here is taken with the counters on (a little slower than
``bench_export``'s figure for the same IR). Pointwise and dense convolutions are told
apart by the CPU plugin's kernel name (``..._1x1_...``); a run where a class with MACs
got no time (another ISA's kernel names) says so instead of dividing by zero.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np


def conv_macs_by_class(onnx_path: Path) -> Dict[str, float]:
    """MACs of the ONNX graph's Conv nodes: pointwise, depthwise, other (dense k x k)."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(model.graph.value_info) + list(model.graph.output)}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    out: Dict[str, float] = defaultdict(float)
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = weights[node.input[1]]
        macs = float(np.prod(shapes[node.output[0]][1:]) * np.prod(w[1:]))
        kind = "depthwise" if group > 1 else "pointwise" if int(np.prod(w[2:])) == 1 else "dense"
        out[kind] += macs
    return dict(out)


def layer_class(node_type: str, exec_type: str) -> str:
    if node_type == "GroupConvolution":
        return "depthwise"
    if node_type == "Convolution":
        return "pointwise" if "1x1" in exec_type else "dense"
    return "other"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.profile_openvino", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="e3d_s")
    p.add_argument("--frames", type=int, default=13)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--sgemm-n", type=int, default=1024)
    p.add_argument("--json", help="write the result here (atomically)")
    args = p.parse_args(argv)

    import openvino as ov
    import torch

    import e3d_zoo
    from e3d_eval.bench_export import sgemm_gflops, sgemm_runner
    from e3d_export import export_onnx, export_openvino, randomize_statistics
    from e3d_zoo.atomic import atomic_write_text
    from e3d_zoo.runtime.base import load_backend

    torch.set_num_threads(args.threads)
    T, R = args.frames, args.size
    tmp = tempfile.TemporaryDirectory(prefix="e3d_profile_ov_")
    work = Path(tmp.name)
    model = randomize_statistics(e3d_zoo.create_model(args.model, num_classes=400).eval(), 0,
                                 scale_head=False)
    onnx_path = export_onnx(model, work / "model.onnx", frames=T, size=R)
    xml = export_openvino(onnx_path, work / "model.xml")
    macs = conv_macs_by_class(onnx_path)

    backend = load_backend("openvino", xml, threads=args.threads, profile=True)  # fp32, 1 stream
    x = np.random.default_rng(0).standard_normal((1, 3, T, R, R), dtype=np.float32)
    gemm = sgemm_runner(args.sgemm_n)  # the roofline's sgemm, as bench_export times it
    for _ in range(3):
        backend.run(x)
        gemm()
    per_class: Dict[str, List[float]] = defaultdict(list)
    wall, sgemm = [], []
    # sgemm first in each round: torch's OpenMP workers spin after a call, which would
    # steal the cores from whatever ran right after them
    for _ in range(args.runs):
        t0 = time.perf_counter()
        gemm()
        sgemm.append(time.perf_counter() - t0)
        time.sleep(0.05)
        t0 = time.perf_counter()
        backend.run(x)
        wall.append((time.perf_counter() - t0) * 1000.0)
        sums: Dict[str, float] = defaultdict(float)
        for layer in backend.layer_times():
            sums[layer_class(layer["node_type"], layer["exec_type"])] += layer["ms"]
        for k in ("pointwise", "depthwise", "dense", "other"):
            per_class[k].append(sums.get(k, 0.0))
    gemm_gflops = sgemm_gflops(args.sgemm_n, statistics.median(sgemm))
    total_macs = sum(macs.values())
    rows = []
    for k in ("pointwise", "depthwise", "dense", "other"):
        ms = statistics.median(per_class[k])
        m = macs.get(k, 0.0)
        gflops = 2 * m / (ms / 1e3) / 1e9 if ms > 0 and m > 0 else None
        rows.append({"class": k, "ms": ms, "gmacs": m / 1e9, "gflops": gflops,
                     "x_sgemm_time": (ms / (2 * m / (gemm_gflops * 1e9) * 1e3)) if m else None})
    med_wall = statistics.median(wall)
    roofline_ms = 2 * total_macs / (gemm_gflops * 1e9) * 1e3
    result = {"model": args.model, "clip": [1, 3, T, R, R], "threads": args.threads,
              "runs": args.runs, "openvino": ov.get_version(), "sgemm_gflops": gemm_gflops,
              "wall_median_ms": med_wall, "roofline_ms": roofline_ms,
              "x_roofline": med_wall / roofline_ms, "classes": rows}
    print(f"{args.model} 1x3x{T}x{R}x{R}, {args.threads} threads, OpenVINO {ov.get_version()}: "
          f"median {med_wall:.1f} ms = {result['x_roofline']:.2f} x roofline "
          f"({roofline_ms:.1f} ms at sgemm {gemm_gflops:.1f} GFLOP/s)")
    print("| layers | ms | share | GMACs | GFLOP/s | x its sgemm time |")
    print("|---|---:|---:|---:|---:|---:|")
    layer_total = sum(r["ms"] for r in rows)
    for r in rows:
        g = "" if r["gflops"] is None else f"{r['gflops']:.1f}"
        xs = "" if r["x_sgemm_time"] is None else f"{r['x_sgemm_time']:.2f}"
        print(f"| {r['class']} | {r['ms']:.1f} | {100 * r['ms'] / layer_total:.0f}% | "
              f"{r['gmacs']:.3f} | {g} | {xs} |")
    unmatched = [r["class"] for r in rows if r["gmacs"] > 0 and r["ms"] == 0]
    if unmatched:
        print(f"warning: no layer time was attributed to {', '.join(unmatched)} convolutions: "
              "this plugin names its kernels differently; the GFLOP/s split is not meaningful",
              file=sys.stderr)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
