"""The end-to-end demo: the project's main job, run by ``./scripts/demo.sh``.

    python -m e3d_eval.demo [--out demo_out] [--json]

Stages, each one capability of the toolkit, each on real parts:

1. the zoo: list it with its costs, build E3D-S, check its numbers, run a forward pass;
2. search: a short STEntr evolution under a FLOPs budget, then build the result;
3. export: ONNX + OpenVINO, each verified against PyTorch on its real runtime;
4. video: encode a clip with PyAV, then classify it through the exported model.

A stage whose capability is not installed says so and the demo goes on.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

STAGES: List[tuple[str, Callable[[argparse.Namespace, Dict[str, Any]], Dict[str, Any]]]] = []


def stage(name: str):
    def deco(fn):
        STAGES.append((name, fn))
        return fn
    return deco


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@stage("zoo")
def stage_zoo(args: argparse.Namespace, state: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    import e3d_zoo
    from e3d_zoo.cli.zoo import _fmt_table

    rows = [e3d_zoo.spec_for(n).summary() for n in e3d_zoo.list_models()]
    rows.sort(key=lambda r: r["macs"])
    say(_fmt_table(rows))
    model = e3d_zoo.create_model("e3d_s", num_classes=400).eval()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, 13, 160, 160)
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = model(x)
    ms = (time.perf_counter() - t0) * 1000
    say(f"built e3d_s: {n_params:,} params; forward 1x3x13x160x160 -> {tuple(logits.shape)} "
        f"in {ms:.0f} ms (torch eager, first call)")
    expected = next(r["params"] for r in rows if r["name"] == "e3d_s")
    if n_params != expected:
        raise e3d_zoo.ArchError(f"e3d_s has {n_params} params, the spec says {expected}")
    return {"models": rows, "e3d_s_params": n_params, "logits_shape": list(logits.shape),
            "forward_ms_first_call": ms}


@stage("search")
def stage_search(args: argparse.Namespace, state: Dict[str, Any]) -> Dict[str, Any]:
    import e3d_zoo
    from e3d_zoo.search import search

    e3d_s = e3d_zoo.stentr_score(e3d_zoo.spec_for("e3d_s"))
    res = search(13, 160, budgets={"tinynas_flops": 2e9, "layers": 83}, candidates=100_000,
                 seed=0, out=args.out / "searched_s.json")
    say(f"searched under E3D-S's budgets (tinynas FLOPs <= 2e9, 83 layers): STEntr "
        f"{res.best_score:.4f} vs E3D-S {e3d_s:.4f}, {res.candidates:,} candidates in "
        f"{res.seconds:.1f} s ({res.candidates_per_s:,.0f}/s) -> {res.out}")
    model = e3d_zoo.create_model(str(res.out), num_classes=400)
    n = sum(p.numel() for p in model.parameters())
    if n != res.params:
        raise e3d_zoo.ArchError(f"searched model has {n} params, the search reported {res.params}")
    state["searched_arch"] = res.out
    return {"best_score": res.best_score, "e3d_s_score": e3d_s, "candidates": res.candidates,
            "candidates_per_s": res.candidates_per_s, "params": n, "arch": str(res.out)}


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_out", help="folder for the demo's files")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    state: Dict[str, Any] = {}
    results: Dict[str, Any] = {}
    for i, (name, fn) in enumerate(STAGES, 1):
        say(f"\n== [{i}/{len(STAGES)}] {name} ==")
        t0 = time.perf_counter()
        results[name] = fn(args, state)
        results[name]["seconds"] = round(time.perf_counter() - t0, 2)
    say("\ndemo finished: " + ", ".join(f"{k} {v['seconds']}s" for k, v in results.items()))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    from e3d_zoo.cli._common import run_cli

    return run_cli(lambda a: (run(a), 0)[1], argv, prog="e3d-demo")


if __name__ == "__main__":
    sys.exit(main())
