"""Where OpenVINO's time goes: per-layer profile of an E3D IR, against the machine's peak.

    python -m e3d_eval.profile_openvino                    # E3D-S, 1x3x13x160x160, 2 threads
    python -m e3d_eval.profile_openvino --model e3d_m --frames 16 --size 224 --json out.json

Compiles the deployable IR with ``PERF_COUNT`` on, runs it ``--runs`` times, and sums
the CPU plugin's per-layer times by kernel class: pointwise (1x1x1) convolutions,
depthwise (grouped) convolutions, other convolutions, and the rest. Each class's MACs
come from the exported ONNX graph (shape inference, ``Conv`` nodes by kernel and
group), so its achieved GFLOP/s can be set against this machine's peak for the IR's
precision (:func:`e3d_runtime.machine.measure_peaks`, before and after the runs, the
higher kept). That shows which part of the network keeps the whole from reaching the
roofline. ``--precision bf16`` runs the fp32 IR at bf16, ``--precision int8`` profiles an
NNCF INT8 IR (calibrated on random clips: for speed only).

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
from typing import Dict, List, Optional

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
    p.add_argument("--threads", type=int, default=None, help="default: every usable core")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    p.add_argument("--json", help="write the result here (atomically)")
    args = p.parse_args(argv)

    import openvino as ov

    import e3d_zoo
    from e3d_export import export_onnx, export_openvino, randomize_statistics
    from e3d_runtime.machine import bound_gflops, describe, measure_peaks, usable_cores
    from e3d_zoo.atomic import atomic_write_text
    from e3d_zoo.runtime.base import load_backend

    threads = args.threads or usable_cores()
    T, R = args.frames, args.size
    tmp = tempfile.TemporaryDirectory(prefix="e3d_profile_ov_")
    work = Path(tmp.name)
    model = randomize_statistics(e3d_zoo.create_model(args.model, num_classes=400).eval(), 0,
                                 scale_head=False)
    onnx_path = export_onnx(model, work / "model.onnx", frames=T, size=R)
    xml = export_openvino(onnx_path, work / "model.xml")
    if args.precision == "int8":
        from e3d_export.quantize import quantize_openvino_int8

        calib = np.random.default_rng(1).standard_normal((4, 3, T, R, R), dtype=np.float32)
        xml = quantize_openvino_int8(onnx_path, work / "model_int8.xml", calib)
    macs = conv_macs_by_class(onnx_path)
    machine = describe()
    wanted = sorted({"fp32", args.precision})
    peaks = [measure_peaks(threads, precisions=wanted)]
    backend = load_backend("openvino", xml, threads=threads, profile=True,
                           precision="bf16" if args.precision == "bf16" else "fp32")
    x = np.random.default_rng(0).standard_normal((1, 3, T, R, R), dtype=np.float32)
    for _ in range(3):
        backend.run(x)
    per_class: Dict[str, List[float]] = defaultdict(list)
    kernels: Dict[str, set] = defaultdict(set)
    wall = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        backend.run(x)
        wall.append((time.perf_counter() - t0) * 1000.0)
        sums: Dict[str, float] = defaultdict(float)
        for layer in backend.layer_times():
            cls = layer_class(layer["node_type"], layer["exec_type"])
            sums[cls] += layer["ms"]
            kernels[cls].add(layer["exec_type"])
        for k in ("pointwise", "depthwise", "dense", "other"):
            per_class[k].append(sums.get(k, 0.0))
    peaks.append(measure_peaks(threads, precisions=wanted))
    peak = max(bound_gflops(pk, args.precision) for pk in peaks)
    total_macs = sum(macs.values())
    rows = []
    for k in ("pointwise", "depthwise", "dense", "other"):
        ms = statistics.median(per_class[k])
        m = macs.get(k, 0.0)
        gflops = 2 * m / (ms / 1e3) / 1e9 if ms > 0 and m > 0 else None
        rows.append({"class": k, "ms": ms, "gmacs": m / 1e9, "gflops": gflops,
                     "kernels": sorted(kernels[k]),
                     "x_peak_time": (ms / (2 * m / (peak * 1e9) * 1e3)) if m else None})
    med_wall = statistics.median(wall)
    roofline_ms = 2 * total_macs / (peak * 1e9) * 1e3
    machine["load_avg_end"] = describe()["load_avg"]
    result = {"model": args.model, "clip": [1, 3, T, R, R], "threads": threads, "precision": args.precision,
              "runs": args.runs, "openvino": ov.get_version(), "machine": machine, "peaks": peaks,
              "peak_gflops": peak, "wall_median_ms": med_wall, "roofline_ms": roofline_ms,
              "x_roofline": med_wall / roofline_ms, "classes": rows}
    print(f"{args.model} 1x3x{T}x{R}x{R} {args.precision}, {threads} threads, OpenVINO {ov.get_version()}: "
          f"median {med_wall:.1f} ms = {result['x_roofline']:.2f} x roofline "
          f"({roofline_ms:.1f} ms at the {args.precision} peak {peak:.1f} GFLOP/s)")
    print("| layers | ms | share | GMACs | GFLOP/s | x its peak time |")
    print("|---|---:|---:|---:|---:|---:|")
    layer_total = sum(r["ms"] for r in rows)
    for r in rows:
        g = "" if r["gflops"] is None else f"{r['gflops']:.1f}"
        xs = "" if r["x_peak_time"] is None else f"{r['x_peak_time']:.2f}"
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
