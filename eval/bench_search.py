"""Benchmark of e3d-search: candidates/s, and the 5-seed reproduction of E3D-S / E3D-M.

    python -m e3d_eval.bench_search                  # speed + full reproduction table
    python -m e3d_eval.bench_search --quick          # speed only, small counts
    python -m e3d_eval.bench_search --json --out bench_search.json

Speed compares, in the same process and on the same candidates, three ways to score
a candidate: the search's cached fast path, the authoritative functions of
complexity.py/stentr.py on an ArchSpec, and what the reference implementation does
(build the network module, then score). The reproduction runs the reference budgets
(``REFERENCE_BUDGETS``) for seeds 0..4 and compares with the zoo architecture's own
STEntr-Score.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any, Optional, Sequence

from e3d_runtime.machine import cpu_info
from e3d_zoo import __version__, complexity, stentr
from e3d_zoo.atomic import atomic_write_text
from e3d_zoo.cli._common import add_json_flag, print_json, run_cli
from e3d_zoo.search import REFERENCE_BUDGETS, search
from e3d_zoo.search.evaluate import FastEvaluator
from e3d_zoo.search.scores import get_score
from e3d_zoo.search.space import BoundSpace, default_space, spec_of
from e3d_zoo.zoo import load_zoo_arch


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _candidates(n: int, seed: int = 0) -> list:
    sp = default_space()
    seed_spec = sp.seed_spec(13, 160)
    bound = BoundSpace(sp, seed_spec, 160, layer_budget=83)
    rng = random.Random(seed)
    pool = [seed_spec.key()]
    for _ in range(n - 1):
        pool.append(bound.mutate(pool[rng.randrange(len(pool))], rng))
    return pool


def bench_evaluators(n_fast: int, n_slow: int, n_module: int, repeats: int) -> dict[str, Any]:
    """Per-candidate evaluation rate of the three paths, medians of ``repeats`` runs."""
    from e3d_zoo.model import E3D

    cands = _candidates(max(n_fast, n_slow, n_module))
    seed_spec = default_space().seed_spec(13, 160)
    score = get_score("stentr")

    def fast() -> float:
        ev = FastEvaluator(seed_spec, 13, 160, score)  # a cold cache each repeat
        t = time.perf_counter()
        for c in cands[:n_fast]:
            ev.evaluate(c)
        return n_fast / (time.perf_counter() - t)

    def authoritative() -> float:
        t = time.perf_counter()
        for c in cands[:n_slow]:
            spec = spec_of(c, 13, 160)
            stentr.stentr_score(spec)
            complexity.tinynas_flops(spec, 13, 160)
            complexity.num_layers(spec)
        return n_slow / (time.perf_counter() - t)

    def with_module() -> float:
        t = time.perf_counter()
        for c in cands[:n_module]:
            spec = spec_of(c, 13, 160)
            model = E3D(spec, num_classes=400)
            sum(p.numel() for p in model.parameters())
            stentr.stentr_score(spec)
            complexity.tinynas_flops(spec, 13, 160)
        return n_module / (time.perf_counter() - t)

    rates = {"fast_cached": [], "authoritative_functions": [], "build_module_then_score": []}
    for _ in range(repeats):
        rates["fast_cached"].append(fast())
        rates["authoritative_functions"].append(authoritative())
        rates["build_module_then_score"].append(with_module())
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"candidates": {"fast_cached": n_fast, "authoritative_functions": n_slow,
                           "build_module_then_score": n_module},
            "repeats": repeats, "median_per_s": med, "runs_per_s": rates,
            "ratio_fast_vs_authoritative": med["fast_cached"] / med["authoritative_functions"],
            "ratio_fast_vs_module": med["fast_cached"] / med["build_module_then_score"]}


def bench_search_rate(candidates: int, repeats: int) -> dict[str, Any]:
    """End-to-end search throughput (mutation + budgets + score + population), e3d_s budgets."""
    b = REFERENCE_BUDGETS["e3d_s"]
    rates = []
    for r in range(repeats):
        res = search(b["frames"], b["size"], budgets={"tinynas_flops": b["flops"],
                                                      "layers": b["layers"]},
                     candidates=candidates, seed=r)
        rates.append(res.candidates_per_s)
    return {"candidates": candidates, "repeats": repeats, "median_per_s": statistics.median(rates),
            "runs_per_s": rates}


def reproduce(model: str, seeds: Sequence[int], candidates: Optional[int],
              score: str = "stentr", progress: bool = True,
              reference_score_size: bool = False) -> dict[str, Any]:
    """``reference_score_size``: score at the reference config's score size (160 for all
    three) instead of the clip size, exactly as the reference's search configs do."""
    b = REFERENCE_BUDGETS[model]
    T, R = b["frames"], b["size"]
    S = b["score_size"] if reference_score_size else R
    n = candidates or b["iterations"]
    target = stentr.stentr_score(load_zoo_arch(model), T, S)
    rows = []
    for seed in seeds:
        res = search(T, R, budgets={"tinynas_flops": b["flops"], "layers": b["layers"]},
                     candidates=n, seed=seed, score=score, progress=progress, score_size=S)
        spec = res.spec
        rows.append({
            "seed": seed,
            "best_score": res.best_score,
            "stentr": stentr.stentr_score(spec, T, S),
            "tinynas_flops": res.tinynas_flops,
            "layers": res.layers,
            "seconds": res.seconds,
            "candidates_per_s": res.candidates_per_s,
            "reaches_target": stentr.stentr_score(spec, T, S) >= target,
            "blocks": [blk.to_dict() for blk in spec.blocks],
        })
    return {"model": model, "frames": T, "size": R, "score_size": S, "budget_flops": b["flops"],
            "budget_layers": b["layers"], "candidates": n, "score": score,
            "target_stentr": target, "rows": rows,
            "seeds_reaching_target": sum(r["reaches_target"] for r in rows)}


def _table(rep: dict[str, Any]) -> str:
    lines = [f"{rep['model']} budgets (T={rep['frames']}, R={rep['size']}, STEntr at "
             f"{rep['score_size']}x{rep['score_size']}, tinynas_flops <= "
             f"{rep['budget_flops']:.3g}, layers <= {rep['budget_layers']}), {rep['candidates']:,} "
             f"candidates, score {rep['score']}; target STEntr {rep['target_stentr']:.6f} "
             f"({rep['model']}'s own)",
             "",
             "| seed | best STEntr | tinynas_flops | layers | seconds | candidates/s | >= target |",
             "|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rep["rows"]:
        lines.append(f"| {r['seed']} | {r['stentr']:.6f} | {r['tinynas_flops']:,.0f} | {r['layers']} "
                     f"| {r['seconds']:.1f} | {r['candidates_per_s']:,.0f} | "
                     f"{'yes' if r['reaches_target'] else 'no'} |")
    lines.append(f"\n{rep['seeds_reaching_target']} of {len(rep['rows'])} seeds reach the target.")
    return "\n".join(lines)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.bench_search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="speed only, small counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for the reproduction")
    p.add_argument("--models", default="e3d_s,e3d_m", help="which reference budgets to reproduce")
    p.add_argument("--candidates", type=int, default=None,
                   help="candidates per reproduction run (default: the reference's iterations)")
    p.add_argument("--reference-score-size", action="store_true",
                   help="score STEntr at the reference configs' score size (160) while FLOPs and "
                        "the space use each model's size: the reference's own E3D-M/L searches")
    p.add_argument("--ablation", action="store_true",
                   help="also run the entropy (alpha = 1) ablation on the same budgets")
    p.add_argument("--out", help="write all results as JSON here")
    add_json_flag(p)
    args = p.parse_args(argv)
    quick = args.quick
    report: dict[str, Any] = {
        "software": f"e3d-zoo {__version__}", "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "cpu": cpu_info(), "load_before": _load(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    say(f"{report['cpu'].get('model', '?')} ({' '.join(report['cpu']['flags'])}); "
        f"load average before: {report['load_before']} on {report['cpus']} CPUs")
    report["evaluators"] = bench_evaluators(20_000 if quick else 100_000, 300 if quick else 1000,
                                            5 if quick else 20, args.repeats)
    ev = report["evaluators"]
    say("per-candidate evaluation (median of %d runs, same candidates):" % args.repeats)
    for k, v in ev["median_per_s"].items():
        say(f"  {k:26s} {v:12,.0f} candidates/s")
    say(f"  fast / authoritative = {ev['ratio_fast_vs_authoritative']:.0f}x, "
        f"fast / build-module = {ev['ratio_fast_vs_module']:.0f}x")
    report["search"] = bench_search_rate(50_000 if quick else 200_000, args.repeats)
    say(f"end-to-end search (e3d_s budgets, {report['search']['candidates']:,} candidates): "
        f"{report['search']['median_per_s']:,.0f} candidates/s (median of {args.repeats})")
    if not quick:
        report["reproduction"] = []
        scores = ["stentr"] + (["entropy"] if args.ablation else [])
        for model in [m for m in args.models.split(",") if m]:
            for score in scores:
                rep = reproduce(model, range(args.seeds), args.candidates, score,
                                progress=not args.json,
                                reference_score_size=args.reference_score_size)
                report["reproduction"].append(rep)
                say("\n" + _table(rep))
    report["load_after"] = _load()
    say(f"\nload average after: {report['load_after']}")
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    if args.json:
        print_json(report)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog="bench_search")


if __name__ == "__main__":
    sys.exit(main())
