"""``e3d-export``: deployment artifacts for a zoo name, an arch JSON or a checkpoint.

    e3d-export e3d_s --onnx --openvino --lower-2d --out exports/e3d_s
    e3d-export runs/ckpt/last.pth --arch e3d_s --openvino --int8 --out exports/mine --json
    e3d-export --check exports/e3d_s          # re-hash a folder against its manifest
    e3d-export --verify exports/e3d_s         # re-run every artifact here against the stored reference
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from e3d_runtime.cli._common import (NON_NEGATIVE_INT, POSITIVE_INT, add_json_flag, float_in,
                                     int_in, print_json, run_cli)
from e3d_runtime.errors import ConfigError
from e3d_runtime.verify import add_folder_tasks, run_folder_task


def _clip_bound(name: str):
    """--frames/--size: an integer in [1, e3d_zoo.spec's bound], imported when the flag is
    parsed, not when the parser is built (``e3d-export --help`` and the edge install's
    --check/--verify never import torch)."""
    def parse(text: str) -> int:
        from e3d_zoo import spec

        return int_in(1, getattr(spec, name))(text)
    parse.__name__ = "integer"
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e3d-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?",
                   help="registered model (e3d_s, e3d_m, e3d_l), arch JSON, checkpoint (.pth/.safetensors), "
                        "save-pretrained folder or hf-hub:ORG/NAME")
    p.add_argument("--out", "-o", help="output folder: created, or replaced atomically when it is "
                   "an earlier export (a file or any other folder is refused)")
    p.add_argument("--onnx", action="store_true", help="ONNX (always written: the other formats derive from it)")
    p.add_argument("--openvino", action="store_true", help="OpenVINO IR, fp32 weights (+ fp16 with --fp16)")
    p.add_argument("--trt", action="store_true", help="TensorRT engine (needs tensorrt and a CUDA GPU)")
    p.add_argument("--lower-2d", action="store_true", help="also the exact 2D-lowered ONNX (model_2d.onnx)")
    p.add_argument("--int8", action="store_true", help="INT8 post-training quantization (ORT; NNCF with --openvino)")
    p.add_argument("--fp16", action="store_true", help="fp16 OpenVINO weights / TensorRT fp16 engine")
    p.add_argument("--arch", help="architecture (name or JSON) for a checkpoint that does not carry one")
    p.add_argument("--num-classes", type=POSITIVE_INT,
                   help="classifier size (default: the model's / checkpoint's)")
    p.add_argument("--frames", type=_clip_bound("MAX_FRAMES"),
                   help="clip length T (default: the architecture's)")
    p.add_argument("--size", type=_clip_bound("MAX_SIZE"), help="clip side R (default: the architecture's)")
    p.add_argument("--pretrained", action="store_true", help="load the zoo's published weights for a registered name")
    p.add_argument("--batch", type=POSITIVE_INT, default=1, help="example batch for tracing (default 1)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension instead of dynamic")
    p.add_argument("--opset", type=int_in(17), default=17, help="ONNX opset (17 or newer; default 17)")
    p.add_argument("--clips", type=POSITIVE_INT, default=4, help="random verification clips (default 4)")
    p.add_argument("--calibration-clips", type=POSITIVE_INT, default=16,
                   help="INT8 calibration clips (default 16)")
    p.add_argument("--video", help="also verify on a clip decoded from this video file")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="seed of the random weights when no checkpoint or --pretrained is given (default 0)")
    p.add_argument("--max-rel-err", type=float_in(0, lo_open=True),
                   help="fp32 artifacts: largest error allowed, relative to the largest reference logit "
                        "(default 1e-4)")
    p.add_argument("--min-top1", type=float_in(0, 1),
                   help="fp16/bf16/int8 artifacts: minimum top-1 agreement with PyTorch "
                        "(defaults: fp16 1.0, int8 0.75)")
    p.add_argument("--precision", choices=("fp32", "auto"), default="fp32",
                   help="auto: also build bf16 (where the CPU has native bf16) and INT8 artifacts, measure "
                        "each here, and make the fastest that agrees with fp32 PyTorch on --held-out clips "
                        "the folder's default (needs trained weights; the manifest says what was tried)")
    p.add_argument("--held-out", metavar="SRC",
                   help="--precision auto: clips the network never trained on, from its training "
                        "distribution: synthetic[:N[:SEED]] (the synthetic motion benchmark's val split, "
                        "default 400 clips; calibration from its train split) or a .npy/.npz of "
                        "normalized (N, C, T, H, W) clips (a .npz may add 'calibration')")
    p.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--benchmark", type=NON_NEGATIVE_INT, default=0, metavar="RUNS",
                   help="time each artifact over RUNS runs and record medians in the manifest")
    p.add_argument("--threads", type=POSITIVE_INT, help="runtime threads for verification/benchmark")
    add_folder_tasks(p, required=False)  # --check / --verify FOLDER: e3d_runtime.verify's
    add_json_flag(p)
    return p


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check or args.verify:  # the edge install's commands, one implementation
        return run_folder_task(args)
    if not args.source:
        raise ConfigError("e3d-export: a source (model name, arch JSON or checkpoint) is required")
    if not args.out:
        raise ConfigError("--out: an output folder is required")
    if args.held_out and args.precision != "auto":
        raise ConfigError("--held-out: only used with --precision auto")
    from .pipeline import criteria_overrides, export

    log = None if args.json else (lambda msg: print(msg, file=sys.stderr))
    manifest = export(args.source, args.out, onnx=True, openvino=args.openvino, trt=args.trt,
                      lower_2d=args.lower_2d, int8=args.int8, fp16=args.fp16, arch=args.arch,
                      num_classes=args.num_classes, frames=args.frames, size=args.size,
                      pretrained=args.pretrained, seed=args.seed, batch=args.batch,
                      dynamic_batch=not args.static_batch, opset=args.opset, verify=not args.no_verify,
                      n_clips=args.clips, video=args.video, n_calibration=args.calibration_clips,
                      criteria=criteria_overrides(args.max_rel_err, args.min_top1), threads=args.threads,
                      benchmark_runs=args.benchmark, precision=args.precision, held_out=args.held_out,
                      progress=not args.json, log=log)
    if args.json:
        print_json({"out": args.out, **manifest})
        return 0
    print(f"wrote {args.out} ({manifest['source'].get('weights')})")
    for name, art in manifest["artifacts"].items():
        print(f"  {name:14s} {art['file']:20s} {art['precision']}")
    for r in manifest["verification"]:
        print(f"  verified {r['name']:16s} on {r['backend']:11s} max rel err {r['max_rel_err']:.2e}  "
              f"cosine {r['min_cosine']:.6f}  top-1 {r['top1_agreement']:.2f}  ({r['criterion']})")
    for runtime, sel in ((manifest.get("selection") or {}).get("runtimes") or {}).items():
        print(f"  {runtime}: default artifact {sel['chosen']}: {sel['reason']}")
    for name, lat in (manifest.get("latency") or {}).items():
        print(f"  latency  {name:14s} median {lat['median_ms']:.1f} ms over {lat['runs']} runs "
              f"({lat['threads'] or 'default'} threads)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog="e3d-export")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
