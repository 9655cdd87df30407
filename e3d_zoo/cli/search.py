"""e3d-search: training-free architecture search (STEntr-maximizing evolution under budgets).

    e3d-search --frames 13 --size 160 --budget-flops 2e9 --budget-layers 83 --out my_s.json
    python -c "import e3d_zoo; e3d_zoo.create_model('my_s.json')"
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import SearchError
from ..spec import MAX_FRAMES, MAX_SIZE
from ._common import (EXIT_INTERRUPTED, NON_NEGATIVE_INT, POSITIVE_INT, add_json_flag, float_in,
                      float_list, int_in, print_json, run_cli)

PROG = "e3d-search"
_BUDGET = float_in(0, lo_open=True)


def build_parser() -> argparse.ArgumentParser:
    from ..search.evolution import (DEFAULT_CANDIDATES, DEFAULT_CHECKPOINT_EVERY,
                                    DEFAULT_POPULATION)
    from ..search.scores import SCORES

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Search for the 3D CNN with the highest STEntr-Score under budgets, without "
                    "training (E3D, ICLR 2023). Writes the arch JSON for create_model().")
    g = p.add_argument_group("clip shape")
    g.add_argument("--frames", type=int_in(1, MAX_FRAMES), default=13,
                   help="frames T per clip (default 13)")
    g.add_argument("--size", type=int_in(1, MAX_SIZE), default=160, help="frame size R (default 160)")
    g = p.add_argument_group("budgets (any combination; at least one)")
    g.add_argument("--budget-flops", type=_BUDGET, metavar="F",
                   help="tinynas FLOPs (the reference search's convention: conv, BN, ReLU, pooling)")
    g.add_argument("--budget-macs", type=_BUDGET, metavar="M",
                   help="conv + linear multiply-adds incl. the classifier head")
    g.add_argument("--budget-params", type=_BUDGET, metavar="P",
                   help="parameters incl. the classifier head for --num-classes")
    g.add_argument("--budget-layers", type=POSITIVE_INT, metavar="N",
                   help="layers: 1 per plain conv + 3 per residual layer (E3D-S: 83)")
    g.add_argument("--budget-latency-ms", type=_BUDGET, metavar="MS",
                   help="predicted latency; needs --latency-table")
    g.add_argument("--latency-table", metavar="T.json", help="latency table made by e3d-bench")
    g.add_argument("--num-classes", type=POSITIVE_INT, default=400,
                   help="classes of the head counted by --budget-params/--budget-macs (default 400)")
    g = p.add_argument_group("search")
    g.add_argument("--score", default="stentr", metavar="NAME",
                   help=f"score to maximize: {', '.join(sorted(SCORES))} (default stentr)")
    g.add_argument("--stage-weights", type=float_list(), metavar="W1,...,W5",
                   help="weights of the stage scores (default: final stage only, 0,0,0,0,1)")
    g.add_argument("--candidates", type=NON_NEGATIVE_INT, default=DEFAULT_CANDIDATES,
                   help=f"candidates to evaluate (default {DEFAULT_CANDIDATES:,})")
    g.add_argument("--population", type=POSITIVE_INT, default=DEFAULT_POPULATION,
                   help=f"population size (default {DEFAULT_POPULATION})")
    g.add_argument("--mutations", type=POSITIVE_INT, default=None,
                   help="mutations per candidate (default: the space's, 2)")
    g.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="random seed (default 0)")
    g.add_argument("--space", metavar="SPACE.json",
                   help="search-space overrides (same field names as the reference's "
                        "reference_search); default: the reference space")
    g.add_argument("--kernel-choices", metavar="KTxK,...",
                   help="override the space's kernel choices, e.g. 1x3,1x5,3x3")
    g.add_argument("--channel-scales", metavar="S,...", help="override, e.g. 2,1.5,1.25,0.8,0.6,0.5")
    g.add_argument("--bottleneck-ratios", metavar="R,...", help="override, e.g. 1.5,2,2.5,3,3.5,4")
    g.add_argument("--layer-deltas", metavar="D,...", help="override, e.g. -2,-1,1,2")
    g.add_argument("--max-channels", type=POSITIVE_INT, metavar="C",
                   help="override the channel cap (640)")
    g.add_argument("--seed-arch", metavar="ARCH",
                   help="starting architecture: an arch JSON, zoo name (e3d_s) or TinyNAS text; "
                        "default: the reference seed structure")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="ARCH.json", help="where to write the result")
    g.add_argument("--name", help="name stored in the arch JSON (default: the --out stem)")
    g.add_argument("--checkpoint", metavar="CKPT.json",
                   help="checkpoint path (default: <out stem>.search-ckpt.json beside --out)")
    g.add_argument("--checkpoint-every", type=POSITIVE_INT, default=DEFAULT_CHECKPOINT_EVERY,
                   help=f"candidates between checkpoints (default {DEFAULT_CHECKPOINT_EVERY:,})")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint (same settings; same result as "
                        "an uninterrupted run)")
    g.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    return p


def _parse_list(flag: str, text: str, parse):
    try:
        return tuple(parse(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise SearchError(f"{flag}: cannot parse {text!r}; expected a comma-separated list") from None


def _kernel(x: str) -> tuple[int, int]:
    kt, k = x.lower().split("x")
    return int(kt), int(k)


def _space_overrides(space, args: argparse.Namespace):
    """Flags override the space (file or default) field by field; then it is re-checked."""
    changes = {}
    if args.kernel_choices is not None:
        changes["kernel_choices"] = _parse_list("--kernel-choices", args.kernel_choices, _kernel)
    if args.channel_scales is not None:
        changes["channel_scales"] = _parse_list("--channel-scales", args.channel_scales, float)
    if args.bottleneck_ratios is not None:
        changes["bottleneck_ratios"] = _parse_list("--bottleneck-ratios", args.bottleneck_ratios,
                                                   float)
    if args.layer_deltas is not None:
        changes["layer_deltas"] = _parse_list("--layer-deltas", args.layer_deltas, int)
    if args.max_channels is not None:
        changes["max_channels"] = args.max_channels
    if args.mutations is not None:
        changes["mutations_per_candidate"] = args.mutations
    if not changes:
        return space
    space = dataclasses.replace(space, **changes)
    try:
        space.check()
    except SearchError as exc:
        flags = ", ".join("--" + k.replace("_", "-") for k in changes)
        raise SearchError(f"{flags}: {exc}") from None
    return space


def _seed_arch(value: Optional[str], frames: int, size: int):
    if value is None:
        return None
    from .. import zoo

    if not Path(value).exists() and value in zoo.ZOO_MODELS:
        return zoo.load_zoo_arch(value)
    return value


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..search import Budgets, load_predictor, search
    from ..search.space import load_space, default_space
    from ..search.evolution import SearchInterrupted

    budgets = Budgets(tinynas_flops=args.budget_flops, macs=args.budget_macs,
                      params=args.budget_params, layers=args.budget_layers,
                      latency_ms=args.budget_latency_ms)
    if args.latency_table and args.budget_latency_ms is None:
        raise SearchError("--latency-table: given without --budget-latency-ms; add the budget")
    space = load_space(args.space) if args.space else default_space()
    space = _space_overrides(space, args)
    predictor = None
    if args.budget_latency_ms is not None:
        if not args.latency_table:
            raise SearchError("--budget-latency-ms: needs --latency-table T.json (made by e3d-bench)")
        predictor = load_predictor(args.latency_table)
    if not args.resume:
        from ..search.evolution import default_checkpoint_path

        ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_path(args.out)
        if ckpt.exists():
            print(f"{PROG}: note: starting over; the checkpoint {ckpt} will be replaced "
                  "(pass --resume to continue it instead)", file=sys.stderr)
    try:
        result = search(
            args.frames, args.size, budgets=budgets, space=space,
            seed_arch=_seed_arch(args.seed_arch, args.frames, args.size), score=args.score,
            stage_weights=args.stage_weights, population=args.population,
            candidates=args.candidates, seed=args.seed, num_classes=args.num_classes,
            latency_predictor=predictor, out=args.out, name=args.name,
            checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
            resume=args.resume, plots=not args.no_plots,
            progress=not args.no_progress and not args.json)
    except SearchInterrupted as exc:
        print(f"{PROG}: {exc}; rerun the same command with --resume to continue", file=sys.stderr)
        if args.json:
            print_json({"interrupted": True, "candidates": exc.candidates,
                        "checkpoint": str(exc.checkpoint) if exc.checkpoint else None})
        return EXIT_INTERRUPTED
    summary = result.summary()
    if args.json:
        print_json(summary)
    else:
        print(f"best {result.spec.provenance['score_name']} {result.best_score:.6f}  "
              f"tinynas_flops {result.tinynas_flops:.4g}  macs {result.macs:.4g}  "
              f"params {result.params:,}  layers {result.layers}")
        print(f"{result.candidates:,} candidates in {result.seconds:.1f} s "
              f"({result.candidates_per_s:,.0f}/s); wrote {result.out}")
        for plot in result.plots:
            print(f"plot: {plot}")
        print(f"build it: e3d_zoo.create_model({str(result.out)!r})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
