"""How close a latency verdict can be: E3D-S measured against itself, run after run.

    python -m e3d_eval.latency_ratio_noise --frames 8 --size 112 --sessions 12 --json out.json

Two separately exported copies of the same network are timed exactly as the search
times a finalist against its reference (``e3d_zoo.latency.compare.measure_against``:
interleaved rounds, medians). Their true ratio is 1, so the spread of the measured
ratios over ``--sessions`` runs is the noise floor of a same-run verdict on this
machine: a finalist whose ratio lies within it of the budget is a close call.
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
    ap.add_argument("--json", metavar="OUT", help="write the results here")
    args = ap.parse_args(argv)

    import numpy as np

    from e3d_zoo.atomic import atomic_write_text
    from e3d_zoo.latency.compare import measure_against
    from e3d_zoo.latency.profile import Loader, load_average
    from e3d_zoo.zoo import spec_for

    spec = spec_for(args.arch).replace(frames=args.frames, size=args.size)
    twin = spec.replace(name=f"{spec.name}_copy")
    ratios: List[float] = []
    sessions: List[Dict[str, Any]] = []
    with Loader("openvino", args.threads) as loader:
        for i in range(args.sessions):
            res = measure_against(spec, [twin], loader, frames=args.frames, size=args.size,
                                  rounds=args.rounds, runs_per_round=args.runs_per_round)
            net = res["networks"][0]
            ratios.append(net["ratio"])
            sessions.append({"ratio": net["ratio"], "reference_ms": res["reference"]["ms"],
                             "copy_ms": net["ms"], "round_ratios": net["round_ratios"],
                             "load_before": res["load_before"], "load_after": res["load_after"]})
            print(f"[{i + 1}/{args.sessions}] ratio {net['ratio']:.4f}  ({res['reference']['ms']:.2f} "
                  f"vs {net['ms']:.2f} ms, load {res['load_after']})", file=sys.stderr, flush=True)
    dev = np.abs(np.asarray(ratios) - 1.0)
    out = {"arch": args.arch, "frames": args.frames, "size": args.size, "threads": args.threads,
           "rounds": args.rounds, "runs_per_round": args.runs_per_round,
           "environment": res["environment"], "load_average_start": sessions[0]["load_before"],
           "load_average_end": load_average(),
           "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
           "ratio_max": max(ratios), "abs_deviation_median_pct": float(np.median(dev) * 100),
           "abs_deviation_p90_pct": float(np.percentile(dev, 90) * 100),
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
