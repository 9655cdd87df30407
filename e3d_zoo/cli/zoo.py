"""``e3d-zoo``: list the zoo, describe an architecture, score it, convert formats."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError
from ..spec import MAX_FRAMES, MAX_SIZE
from ._common import POSITIVE_INT, add_json_flag, float_list, int_in, print_json, run_cli

PROG = "e3d-zoo"


def _summary(target: str, frames: Optional[int], size: Optional[int],
             num_classes: int) -> Dict[str, Any]:
    from ..complexity import summary
    from ..zoo import spec_for

    spec = spec_for(target, frames=frames, size=size)
    out = summary(spec, num_classes=num_classes)
    if out["name"] is None:
        out["name"] = Path(target).stem
    return out


def _fmt_score(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:.6f}"


def _fmt_table(rows: List[Dict[str, Any]]) -> str:
    header = f"{'name':<10} {'clip (T x R^2)':>15} {'params':>10} {'GMACs':>7} {'tinynas GFLOPs':>15} {'layers':>6} {'STEntr':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['name']:<10} {str(r['frames']) + ' x ' + str(r['size']) + '^2':>15} "
            f"{r['params'] / 1e6:>9.2f}M {r['macs'] / 1e9:>7.2f} {r['tinynas_flops'] / 1e9:>15.3f} "
            f"{r['layers']:>6} {_fmt_score(r['stentr']):>11}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    from ..zoo import list_models

    rows = [_summary(name, None, None, args.num_classes) for name in list_models()]
    rows.sort(key=lambda r: r["macs"])
    if args.json:
        print_json(rows)
    else:
        print(_fmt_table(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = _summary(args.target, args.frames, args.size, args.num_classes)
    if args.json:
        print_json(info)
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "stentr":
            value = _fmt_score(value)
        elif isinstance(value, float) and value.is_integer():
            value = f"{int(value):,}"
        elif isinstance(value, int) and key in ("params", "params_backbone", "macs"):
            value = f"{value:,}"
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ..stentr import combine_stage_scores, stage_scores
    from ..zoo import spec_for

    spec = spec_for(args.target, frames=args.frames, size=args.size)
    weights = args.stage_weights
    refine = not args.no_refine
    scores = stage_scores(spec, refine=refine)
    result = {
        "name": spec.name or Path(args.target).stem,
        "frames": spec.frames, "size": spec.size,
        "score": "stentr" if refine else "entropy",
        "stage_scores": scores,
        "value": combine_stage_scores(scores, weights, name=spec.name or args.target,
                                      what="--stage-weights", error=ConfigError),
        "stage_weights": weights,
    }
    if args.json:
        print_json(result)
    else:
        print(f"{result['value']:.6f}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..zoo import spec_for

    src, dst = args.src, Path(args.dst)
    if dst.suffix.lower() not in (".json", ".txt", ".py"):
        raise ConfigError(f"{dst}: expected a .json (e3d-arch) or .txt/.py (TinyNAS structure "
                          "text) output file")
    to_tinynas = dst.suffix.lower() in (".txt", ".py")
    spec = spec_for(src, frames=args.frames, size=args.size)
    if args.name:
        spec = spec.replace(name=args.name)
    elif spec.name is None or spec.provenance.get("source") == "tinynas":
        spec = spec.replace(name=dst.stem)
    from ..atomic import atomic_write_text

    if to_tinynas:
        atomic_write_text(dst, spec.to_tinynas_text())
    else:
        spec.save(dst)
    if args.json:
        from ..complexity import summary

        print_json({"src": str(src), "dst": str(dst),
                    "format": "tinynas" if to_tinynas else "e3d-arch", **summary(spec)})
    else:
        what = "the reference's best_structure.txt format" if to_tinynas else "e3d-arch JSON"
        print(f"wrote {dst} ({what})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="The E3D model zoo: list, inspect, "
                                "score and convert architectures.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def clip_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--frames", type=int_in(1, MAX_FRAMES),
                        help="clip length T (default: the arch's)")
        sp.add_argument("--size", type=int_in(1, MAX_SIZE), help="clip side R (default: the arch's)")

    sp = sub.add_parser("list", help="the registered models and their costs")
    sp.add_argument("--num-classes", type=POSITIVE_INT, default=400)
    add_json_flag(sp)
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("info", help="params, MACs, tinynas FLOPs, layers and STEntr of a model")
    sp.add_argument("target", metavar="NAME|PATH", help="a zoo name or an arch JSON/TinyNAS file")
    clip_flags(sp)
    sp.add_argument("--num-classes", type=POSITIVE_INT, default=400)
    add_json_flag(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("score", help="the STEntr-Score of an architecture")
    sp.add_argument("target", metavar="NAME|PATH")
    clip_flags(sp)
    sp.add_argument("--stage-weights", type=float_list(),
                    help="comma-separated stage weights (default 0,0,0,0,1)")
    sp.add_argument("--no-refine", action="store_true",
                    help="ablation: the entropy score without the refinement factor (alpha = 1)")
    add_json_flag(sp)
    sp.set_defaults(func=cmd_score)

    sp = sub.add_parser("convert", help="convert between the reference implementation's "
                        "structure text (.txt: E3D_S.txt, best_structure.txt; read with --frames "
                        "and --size) and e3d-arch JSON (.json), by the output's extension")
    sp.add_argument("src", metavar="NAME|PATH")
    sp.add_argument("dst")
    clip_flags(sp)
    sp.add_argument("--name", help="name to record in the output")
    add_json_flag(sp)
    sp.set_defaults(func=cmd_convert)

    try:  # the Hub issue's publishing command
        from .push import add_push_parser
    except ImportError:
        pass
    else:
        add_push_parser(sub)
    return p


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
