"""How close a latency verdict can be: E3D-S measured against itself, run after run.

    python -m e3d_eval.latency_ratio_noise --frames 8 --size 112 --sessions 12 --copies 5

The network and ``--copies`` separately exported copies of it are timed exactly as the
search times its finalists against their reference
(``e3d_zoo.latency.compare.measure_against``: interleaved rounds, medians; 5 copies =
the search's 5 finalists). Every true ratio is 1, so the spread of the measured ratios
is the noise floor of a same-run verdict on this machine (a finalist whose ratio lies
within it of the budget is a close call), and a copy whose ratios sit away from 1 in
every session would show a bias of its place in the round.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e3d_eval.latency_ratio_noise",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="e3d_s")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=12, help="measuring runs (default 12)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per run (the search's default 7)")
    ap.add_argument("--runs-per-round", type=int, default=3)
    ap.add_argument("--reference-instances", type=int, default=3,
                    help="compiled instances the reference counts as the median of (the search's 3)")
    ap.add_argument("--copies", type=int, default=1,
                    help="copies timed against the reference (default 1; the search's 5 finalists: 5)")
    ap.add_argument("--statistic", choices=("cpu", "median", "min"), default=None,
                    help="the headline statistic (default: the search's, CPU time at 1 thread); "
                         "wall-clock and CPU-time ratios are recorded either way")
    ap.add_argument("--json", metavar="OUT", help="write the results here")
    args = ap.parse_args(argv)

    import numpy as np

    from e3d_zoo.atomic import atomic_write_text
    from e3d_zoo.latency.compare import default_statistic, measure_against
    from e3d_zoo.latency.profile import Loader, load_average
    from e3d_zoo.zoo import spec_for

    statistic = args.statistic or default_statistic(args.threads)
    spec = spec_for(args.arch).replace(frames=args.frames, size=args.size)
    copies = [spec.replace(name=f"{spec.name}_copy{i + 1}") for i in range(args.copies)]
    by_figure: Dict[str, List[float]] = {"cpu_ratio": [], "median_ratio": [], "min_ratio": []}
    # a network's "ratio" is its headline statistic's ratio, one of the figures
    headline = f"{statistic}_ratio"
    by_copy: List[List[float]] = [[] for _ in copies]
    sessions: List[Dict[str, Any]] = []
    with Loader("openvino", args.threads) as loader:
        for i in range(args.sessions):
            res = measure_against(spec, copies, loader, frames=args.frames, size=args.size,
                                  rounds=args.rounds, runs_per_round=args.runs_per_round,
                                  reference_instances=args.reference_instances,
                                  statistic=statistic)
            nets = res["networks"]
            figures = {f"{k}s": [n[k] for n in nets] for k in by_figure}
            for key in by_figure:
                by_figure[key].extend(figures[f"{key}s"])
            for j, r in enumerate(figures[f"{headline}s"]):
                by_copy[j].append(r)
            sessions.append({"ratios": figures[f"{headline}s"], **figures,
                             "reference_ms": res["reference"]["ms"],
                             "reference_instance_ms": res["reference"]["instance_ms"],
                             "copy_ms": [n["ms"] for n in nets],
                             "round_ratios": [n["round_ratios"] for n in nets],
                             "load_before": res["load_before"], "load_after": res["load_after"]})
            print(f"[{i + 1}/{args.sessions}] ratios "
                  + " ".join(f"{r:.4f}" for r in figures[f"{headline}s"])
                  + f"  (reference {res['reference']['ms']:.2f} ms, load {res['load_after']})",
                  file=sys.stderr, flush=True)
    def deviation(values: List[float]) -> Dict[str, float]:
        d = np.abs(np.asarray(values) - 1.0) * 100
        return {"median_pct": float(np.median(d)), "p90_pct": float(np.percentile(d, 90)),
                "max_pct": float(d.max())}

    ratios = by_figure[headline]
    deviations = {k: deviation(v) for k, v in by_figure.items()}
    out = {"statistic": statistic,"arch": args.arch, "frames": args.frames, "size": args.size, "threads": args.threads,
           "rounds": args.rounds, "runs_per_round": args.runs_per_round, "copies": args.copies,
           "reference_instances": args.reference_instances,
           "environment": res["environment"], "load_average_start": sessions[0]["load_before"],
           "load_average_end": load_average(),
           "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
           "ratio_max": max(ratios), "abs_deviation_median_pct": deviations[headline]["median_pct"],
           "abs_deviation_p90_pct": deviations[headline]["p90_pct"],
           "abs_deviation_by_figure": deviations,
           "ratio_median_by_copy": [statistics.median(r) for r in by_copy],
           "reference_ms_min": min(s["reference_ms"] for s in sessions),
           "reference_ms_max": max(s["reference_ms"] for s in sessions),
           "sessions": sessions}
    text = json.dumps(out, indent=1) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
