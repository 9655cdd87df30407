"""``e3d-train``: train or fine-tune an E3D model from a config file plus overrides.

    e3d-train configs/synthetic_motion.toml
    e3d-train configs/synthetic_motion.toml --epochs 2 --output runs/try --set lr=0.001
    e3d-train configs/synthetic_motion.toml --resume          # continue runs/.../last.pt
    torchrun --nproc_per_node 2 -m e3d_zoo.cli.train configs/synthetic_motion.toml   # DDP
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Sequence

from ..errors import ConfigError
from ._common import add_json_flag, print_json, run_cli

# Flags for the settings people change most; everything else goes through --set.
_SHORTCUTS = {
    "model": str, "frames": int, "size": int, "epochs": int, "batch_size": int, "lr": float,
    "output": str, "init": str, "data": str, "data_root": str, "seed": int, "num_workers": int,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e3d-train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Settings: see e3d_zoo.train.TrainConfig or docs/training.md.")
    p.add_argument("config", nargs="?", help="a TOML or JSON config file (optional: defaults + flags)")
    for key, typ in _SHORTCUTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=typ, default=None,
                       help=f"override '{key}'")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set optimizer=sgd --set ema_decay=0.999")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/last.pt (refused if the settings changed what is trained)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    add_json_flag(p)
    return p


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    out: Dict[str, Any] = {k: getattr(args, k) for k in _SHORTCUTS if getattr(args, k) is not None}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..train import TrainConfig, cleanup_distributed, train

    cfg = TrainConfig.load(args.config, _overrides(args))
    if args.print_config:
        print_json(cfg.to_dict())
        return 0
    try:
        summary = train(cfg, resume=args.resume, progress=not (args.no_progress or args.json))
    finally:
        cleanup_distributed()
    if summary.get("world_size", 1) > 1 and not _is_rank0():
        return 0
    if args.json:
        print_json(summary)
    else:
        final = summary.get("final") or {}
        print(f"done: {summary['epochs']} epochs, val top-1 {final.get('val_top1', float('nan')):.2f}% "
              f"top-5 {final.get('val_top5', float('nan')):.2f}%; outputs in {summary['output']}")
    return 0


def _is_rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog="e3d-train")


if __name__ == "__main__":
    sys.exit(main())
