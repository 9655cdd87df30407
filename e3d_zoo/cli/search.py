"""e3d-search: training-free architecture search (STEntr-maximizing evolution under budgets).

    e3d-search --frames 13 --size 160 --budget-flops 2e9 --budget-layers 83 --out my_s.json
    python -c "import e3d_zoo; e3d_zoo.create_model('my_s.json')"

Under a latency budget the best finalists are measured on this machine with a reference
network; exit status 3 when none of them fits (unless --accept-nearest).
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
#: the search ran, but no measured finalist fits the latency budget
EXIT_BUDGET_MISSED = 3
_BUDGET = float_in(0, lo_open=True)


def build_parser() -> argparse.ArgumentParser:
    from ..search.evolution import (DEFAULT_CANDIDATES, DEFAULT_CHECKPOINT_EVERY,
                                    DEFAULT_POPULATION)
    from ..search.finalists import DEFAULT_FINALISTS, DEFAULT_MEASURE_ROUNDS, DEFAULT_STEP
    from ..search.scores import SCORES

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Search for the 3D CNN with the highest STEntr-Score under budgets, without "
                    "training (E3D, ICLR 2023). Writes the arch JSON for create_model().")
    g = p.add_argument_group("clip shape")
    g.add_argument("--frames", type=int_in(1, MAX_FRAMES), default=13,
                   help="frames T per clip (default 13)")
    g.add_argument("--size", type=int_in(1, MAX_SIZE), default=160,
                   help="frame size R the costs (FLOPs, MACs, latency) and the space's kernel rule "
                        "use (default 160)")
    g.add_argument("--score-size", type=int_in(1, MAX_SIZE), metavar="R",
                   help="frame size the score is taken at (default: --size). The reference's "
                        "E3D-M/E3D-L configs score at 160 while counting FLOPs at 224/312")
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
                   help="absolute latency: the result's measured latency on this machine must be "
                        "<= MS (the evolution uses --latency-table's predictions)")
    g.add_argument("--budget-latency-ratio", type=_BUDGET, metavar="R",
                   help="latency relative to --latency-reference, both measured in the same "
                        "interleaved run: 1.0 = no slower than it. Unlike milliseconds, the ratio "
                        "holds across the machine's drift between sessions")
    g.add_argument("--latency-table", metavar="T.json", help="latency table made by e3d-bench")
    g = p.add_argument_group("latency budgets: finalists measured on this machine")
    g.add_argument("--latency-reference", metavar="ARCH", default=None,
                   help="the network measured with the finalists, and the unit of "
                        "--budget-latency-ratio: zoo name or arch JSON (default e3d_s)")
    g.add_argument("--finalists", type=NON_NEGATIVE_INT, default=None, metavar="K",
                   help=f"measure K members of the final population (all fit the predicted "
                        f"budget) and keep the best-scoring one whose measured latency fits "
                        f"(default {DEFAULT_FINALISTS}; 0: do not measure, e.g. when the table "
                        f"describes another device: the result fits the prediction only)")
    g.add_argument("--finalist-step", type=float_in(0, 1, hi_open=True), default=None, metavar="F",
                   help=f"finalist i (i = 0..K-1) is the best member predicted at least i x F "
                        f"under the limit, so that some have slack for the predictor's error "
                        f"(default {DEFAULT_STEP}; 0: the K best)")
    g.add_argument("--measure-rounds", type=POSITIVE_INT, default=None, metavar="N",
                   help=f"interleaved rounds of that measurement, 3 runs each "
                        f"(default {DEFAULT_MEASURE_ROUNDS})")
    g.add_argument("--measure-statistic", choices=("cpu", "median", "min"), default=None,
                   help="what the finalists are judged on: process CPU time (the default with 1 "
                        "thread: steady on a shared machine, what a dedicated device measures), "
                        "the wall-clock median (the default with more threads) or the fastest run")
    g.add_argument("--accept-nearest", action="store_true",
                   help="when no finalist fits, write the nearest one (marked fits: false) and "
                        "exit 0 instead of exiting 3")
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


def _or(value, default):
    """``value`` unless the flag was not given (None: left unset so that a latency flag
    given without a latency budget can be refused)."""
    return default if value is None else value


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..search import Budgets, load_predictor, search
    from ..search.space import load_space, default_space
    from ..search.evolution import SearchInterrupted
    from ..search.finalists import (DEFAULT_FINALISTS, DEFAULT_MEASURE_ROUNDS, DEFAULT_STEP,
                                    LatencyBudgetMissed)

    budgets = Budgets(tinynas_flops=args.budget_flops, macs=args.budget_macs,
                      params=args.budget_params, layers=args.budget_layers,
                      latency_ms=args.budget_latency_ms, latency_ratio=args.budget_latency_ratio)
    if not budgets.has_latency:  # these only shape a latency budget's measurement
        given = [flag for flag, v in (("--latency-table", args.latency_table),
                                      ("--latency-reference", args.latency_reference),
                                      ("--finalists", args.finalists),
                                      ("--finalist-step", args.finalist_step),
                                      ("--measure-rounds", args.measure_rounds),
                                      ("--measure-statistic", args.measure_statistic),
                                      ("--accept-nearest", args.accept_nearest or None))
                 if v is not None]
        if given:
            raise SearchError(f"{given[0]}: given without a latency budget; add "
                              "--budget-latency-ms or --budget-latency-ratio")
    space = load_space(args.space) if args.space else default_space()
    space = _space_overrides(space, args)
    predictor = None
    if budgets.has_latency:
        if not args.latency_table:
            flag = ("--budget-latency-ms" if args.budget_latency_ms is not None
                    else "--budget-latency-ratio")
            raise SearchError(f"{flag}: needs --latency-table T.json (made by e3d-bench)")
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
            stage_weights=args.stage_weights, score_size=args.score_size,
            population=args.population,
            candidates=args.candidates, seed=args.seed, num_classes=args.num_classes,
            latency_predictor=predictor, latency_reference=args.latency_reference,
            finalists=_or(args.finalists, DEFAULT_FINALISTS),
            finalist_step=_or(args.finalist_step, DEFAULT_STEP),
            measure_rounds=_or(args.measure_rounds, DEFAULT_MEASURE_ROUNDS),
            measure_statistic=args.measure_statistic,
            accept_nearest=args.accept_nearest, out=args.out, name=args.name,
            checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
            resume=args.resume, plots=not args.no_plots,
            progress=not args.no_progress and not args.json)
    except SearchInterrupted as exc:
        print(f"{PROG}: {exc}; rerun the same command with --resume to continue", file=sys.stderr)
        if args.json:
            print_json({"interrupted": True, "candidates": exc.candidates,
                        "checkpoint": str(exc.checkpoint) if exc.checkpoint else None})
        return EXIT_INTERRUPTED
    except LatencyBudgetMissed as exc:
        if args.json:
            print_json(exc.result.summary())
        else:
            _print_finalists(exc.verdict)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BUDGET_MISSED
    summary = result.summary()
    if args.json:
        print_json(summary)
    else:
        at = f" (at {args.frames}x{result.spec.provenance['score_size']}^2)"
        print(f"best {result.spec.provenance['score_name']}{at} {result.best_score:.6f}  "
              f"tinynas_flops {result.tinynas_flops:.4g}  macs {result.macs:.4g}  "
              f"params {result.params:,}  layers {result.layers}")
        print(f"{result.candidates:,} candidates in {result.seconds:.1f} s "
              f"({result.candidates_per_s:,.0f}/s); wrote {result.out}")
        for plot in result.plots:
            print(f"plot: {plot}")
        if result.latency is not None:
            _print_finalists(result.latency)
        print(f"build it: e3d_zoo.create_model({str(result.out)!r})")
    return 0


def _print_finalists(verdict) -> None:
    if verdict.measured:
        ref = verdict.reference_measured
        print(f"finalists measured with {verdict.reference} in one interleaved run "
              f"({verdict.session.get('rounds')} rounds, {verdict.statistic_text}; "
              f"{verdict.reference} {ref['ms']:.2f} ms):")
        print(f"  {'rank':>4} {'score':>11} {'predicted ms':>12} {'slack':>6} {'measured ms':>11} "
              f"{'p90/p50':>7} {'ratio':>6}  fits")
        for f in verdict.finalists:
            m = f.measured
            mark = " <- result" if f is verdict.choice else ""
            print(f"  {f.rank:>4} {f.score:>11.4f} {f.predicted_ms:>12.2f} "
                  f"{f.predicted_slack * 100:>5.1f}% {m['ms']:>11.2f} {m.get('spread', 0):>7.2f} "
                  f"{m['ratio']:>6.3f}  {'yes' if f.fits else 'no'}{mark}")
    print(verdict.describe())


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
