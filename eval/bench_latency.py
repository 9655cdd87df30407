"""Latency-aware search on this machine, measured: does the found network really fit?

    python -m e3d_eval.bench_latency --out-dir results/latency [--candidates 20000]

Steps (each skipped when its output exists, so an interrupted run resumes):

1. a latency table at the search's clip shape (default 13 x 160^2, OpenVINO CPU,
   1 thread): the units of E3D-S and of sampled networks, calibrated end to end on
   the zoo models and samples (``e3d-bench --profile-table``);
2. two searches with the same candidates and seed: the latency budget "no slower than
   E3D-S" (``latency_ratio <= 1.0``: the search measures its ``--finalists`` best with
   E3D-S in one interleaved run and keeps the best one that fits, else the nearest,
   recorded as missing) and E3D-S's reference budget ``tinynas_flops <= 2e9`` (both
   with ``layers <= 83``);
3. a re-check in a second session: the found networks' units profiled exactly (no
   interpolation), then E3D-S and both found networks measured end to end, interleaved;
4. ``results_s<seed>_c<candidates>.json`` and ``front_s<seed>_c<candidates>.png``:
   STEntr-Score against latency (the latency search's final population, predicted; the
   three networks, measured). Several seeds share one folder and its table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence


def _log(msg: str) -> None:
    print(f"[bench_latency] {msg}", file=sys.stderr, flush=True)


def build_table(path: Path, frames: int, size: int, threads: int, sample: int, calibrate: int,
                rounds: int, statistic: str) -> None:
    from e3d_zoo.latency.build import profile_table

    if path.exists():
        t = json.loads(path.read_text())
        if (t.get("calibration") or {}).get("fitted_on"):
            _log(f"{path}: exists and is calibrated; reusing it")
            return
    profile_table(path, frames=frames, size=size, threads=threads, archs=["e3d_s"], sample=sample,
                  calibrate=calibrate, rounds=rounds, statistic=statistic, progress=False)


def run_search(out: Path, frames: int, size: int, budgets: Dict[str, float], predictor,
               candidates: int, seed: int, **latency: Any):
    from e3d_zoo.search import search
    from e3d_zoo.spec import load_arch

    if out.exists():
        _log(f"{out}: exists; reusing it")
        return load_arch(out), None
    res = search(frames, size, budgets=budgets, latency_predictor=predictor, candidates=candidates,
                 seed=seed, out=out, plots=True, progress=True, **latency)
    return res.spec, res


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e3d_eval.bench_latency", description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="results/latency")
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--candidates", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=8, help="sampled networks profiled into the table")
    ap.add_argument("--calibrate", type=int, default=6, help="networks measured for calibration")
    ap.add_argument("--rounds", type=int, default=7,
                    help="interleaved rounds of the table's and the finalists' measurements")
    ap.add_argument("--finalists", type=int, default=5,
                    help="best members of the latency search measured with E3D-S (default 5)")
    ap.add_argument("--statistic", choices=("kernel", "median", "min", "cpu"), default="kernel",
                    help="what the table's entries hold (kernel: OpenVINO's per-layer times "
                         "summed, the default; cpu: median CPU time per run, 1 thread only). "
                         "Budgets and measurements are whole networks' matching figure: "
                         "wall-clock median for kernel")
    args = ap.parse_args(argv)

    from e3d_zoo import stentr, tinynas_flops
    from e3d_zoo.latency.predictor import LatencyPredictor
    from e3d_zoo.latency.compare import DeviceMeasurer
    from e3d_zoo.latency.profile import Loader, profile_keys
    from e3d_zoo.latency.table import iter_keys_of, load_table
    from e3d_zoo.atomic import atomic_write_text
    from e3d_zoo.zoo import load_zoo_arch

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    T, R = args.frames, args.size
    table_path = out / f"openvino_t{T}_r{R}_th{args.threads}_{args.statistic}.json"
    build_table(table_path, T, R, args.threads, args.sample, args.calibrate, args.rounds,
                args.statistic)
    table = load_table(table_path)
    if table.settings.get("statistic") != args.statistic:
        raise SystemExit(f"{table_path}: a table of statistic {table.settings.get('statistic')!r}, "
                         f"not {args.statistic!r}; remove it or use another --out-dir")
    e3d_s = load_zoo_arch("e3d_s").replace(frames=T, size=R)
    pred = LatencyPredictor(table, statistic=args.statistic)
    budget = {"latency_ratio": 1.0, "reference": "e3d_s"}
    _log("latency budget: no slower than E3D-S, measured in the same run")
    run = f"s{args.seed}_c{args.candidates}"  # several seeds can share one folder and table
    lat_spec, lat_res = run_search(out / f"e3d_s_latency_budget_{run}.json", T, R,
                                   {"latency_ratio": 1.0, "layers": 83}, pred, args.candidates,
                                   args.seed, latency_reference="e3d_s", finalists=args.finalists,
                                   measure_rounds=args.rounds, accept_nearest=True)
    verdict = lat_spec.provenance.get("latency") or {}
    _log(f"latency search: {verdict.get('verdict')}")
    flops_spec, _ = run_search(out / f"e3d_s_flops_budget_{run}.json", T, R,
                               {"tinynas_flops": 2.0e9, "layers": 83}, None, args.candidates, args.seed)
    nets = {"e3d_s": e3d_s, "latency_budget": lat_spec.replace(frames=T, size=R),
            "flops_budget": flops_spec.replace(frames=T, size=R)}
    interpolated = {n: pred.predict_ms(s) for n, s in nets.items()}
    coverage = {n: pred.coverage(s) for n, s in nets.items()}

    with Loader.for_table(table) as loader:
        _log("profiling the found networks' units exactly")
        profile_keys(table, list(iter_keys_of(nets.values(), T, R)), loader, path=table_path,
                     rounds=table.settings.get("rounds", 5),
                     runs_per_round=table.settings.get("runs_per_round", 3))
    # the re-check: the search's own measurer (E3D-S as 3 instances, shuffled rounds, the
    # same statistic; it refuses a table from another device) in a later session, twice
    # the rounds
    _log("re-check: E3D-S and both found networks end to end, interleaved, another session")
    recheck = DeviceMeasurer.for_table(table, rounds=args.rounds * 2).measure(
        e3d_s, [nets["latency_budget"], nets["flops_budget"]], frames=T, size=R)
    measured = [recheck["reference"]] + recheck["networks"]
    exact = LatencyPredictor(table, statistic=args.statistic, missing="error")
    rows: Dict[str, Any] = {}
    for (n, s), m in zip(nets.items(), measured):
        ratio = m.get("ratio", 1.0)
        rows[n] = {"stentr": stentr.stentr_score(s, T, R), "tinynas_flops": tinynas_flops(s, T, R),
                   "predicted_ms_interpolated": interpolated[n], "coverage_before": coverage[n],
                   "predicted_ms_exact": exact.predict_ms(s), "measured_ms": m["ms"],
                   "ratio_to_e3d_s_same_session": ratio,
                   "wall_ratio_to_e3d_s_same_session": m.get("median_ratio", 1.0),
                   "measured_median_ms": m["median_ms"], "measured_min_ms": m["min_ms"],
                   "spread_p90_p50": m["spread"], "fits_budget": ratio <= 1.0,
                   "blocks": [b.to_dict() for b in s.blocks]}
    result = {"frames": T, "size": R, "environment": table.environment, "statistic": args.statistic,
              "budget": budget, "candidates": args.candidates, "seed": args.seed,
              "latency_search": {k: verdict.get(k) for k in ("fits", "verdict", "budget", "chosen",
                                                             "reference", "session", "finalists")},
              "recheck": {k: v for k, v in recheck.items() if k not in ("reference", "networks")},
              "networks": rows,
              "table": str(table_path), "table_entries": len(table)}

    front = []
    if lat_res is not None:
        from e3d_zoo.search.space import spec_of

        for mem in lat_res.population:
            s = spec_of(mem.candidate, T, R)
            front.append({"stentr": mem.score, "predicted_ms": pred.predict_ms(s)})
        result["population_front"] = front
    atomic_write_text(out / f"results_{run}.json", json.dumps(result, indent=1) + "\n")
    plot_front(result, out / f"front_{run}.png")
    for n, r in rows.items():
        _log(f"{n:<15} STEntr {r['stentr']:.3f}  predicted {r['predicted_ms_exact']:.2f} ms "
             f"(interp. {r['predicted_ms_interpolated']:.2f})  measured {r['measured_ms']:.2f} ms "
             f"(x{r['ratio_to_e3d_s_same_session']:.3f} of E3D-S in the same session) "
             f"p90/p50 {r['spread_p90_p50']:.2f}  fits {r['fits_budget']}")
    _log(f"the latency search's own verdict: {verdict.get('verdict')}")
    print(json.dumps({k: v for k, v in result.items() if k != "population_front"}, indent=1))
    return 0


def plot_front(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from e3d_zoo.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5))
    front = result.get("population_front") or []
    if front:
        ax.scatter([p["predicted_ms"] for p in front], [p["stentr"] for p in front], s=8, c="0.6",
                   label="latency search population (predicted)")
    marks = {"e3d_s": ("o", "E3D-S"), "latency_budget": ("*", "latency-budget search"),
             "flops_budget": ("s", "FLOPs-budget search")}
    for n, r in result["networks"].items():
        m, label = marks[n]
        ax.scatter([r["measured_ms"]], [r["stentr"]], marker=m, s=90, label=f"{label} (measured)")
        ax.scatter([r["predicted_ms_exact"]], [r["stentr"]], marker=m, s=40, facecolors="none",
                   edgecolors="k")
    ax.axvline(result["networks"]["e3d_s"]["measured_ms"], color="r", ls="--", lw=1,
               label="budget = E3D-S, measured in the same session")
    env = result["environment"]
    ax.set_xlabel(f"latency (ms), {env['backend']} CPU {env['threads']} thread(s), "
                  f"{result['frames']}x{result['size']}^2")
    ax.set_ylabel("STEntr-Score")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
