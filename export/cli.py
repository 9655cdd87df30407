"""``e3d-export``: deployment artifacts for a zoo name, an arch JSON or a checkpoint.

    e3d-export e3d_s --onnx --openvino --lower-2d --out exports/e3d_s
    e3d-export runs/ckpt/last.pth --arch e3d_s --openvino --int8 --out exports/mine --json
    e3d-export --check exports/e3d_s          # re-hash a folder against its manifest
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from e3d_zoo.cli._common import (NON_NEGATIVE_INT, POSITIVE_INT, add_json_flag, float_in, int_in,
                                 print_json, run_cli)
from e3d_zoo.errors import ConfigError, OutputError, OutputInUseError
from e3d_zoo.spec import MAX_FRAMES, MAX_SIZE


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
    p.add_argument("--frames", type=int_in(1, MAX_FRAMES), help="clip length T (default: the architecture's)")
    p.add_argument("--size", type=int_in(1, MAX_SIZE), help="clip side R (default: the architecture's)")
    p.add_argument("--pretrained", action="store_true", help="load the zoo's published weights for a registered name")
    p.add_argument("--batch", type=POSITIVE_INT, default=1, help="example batch for tracing (default 1)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension instead of dynamic")
    p.add_argument("--opset", type=int_in(17), default=17, help="ONNX opset (17 or newer; default 17)")
    p.add_argument("--clips", type=POSITIVE_INT, default=4, help="random verification clips (default 4)")
    p.add_argument("--calibration-clips", type=POSITIVE_INT, default=16,
                   help="INT8 calibration clips (default 16)")
    p.add_argument("--video", help="also verify on a clip decoded from this video file")
    p.add_argument("--abs-tol", type=float_in(0), default=1e-4,
                   help="fp32 tolerance on logits (default 1e-4)")
    p.add_argument("--min-top1", type=float_in(0, 1), default=0.9,
                   help="fp16/int8: minimum top-1 agreement with PyTorch (default 0.9)")
    p.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--benchmark", type=NON_NEGATIVE_INT, default=0, metavar="RUNS",
                   help="time each artifact over RUNS runs and record medians in the manifest")
    p.add_argument("--threads", type=POSITIVE_INT, help="runtime threads for verification/benchmark")
    p.add_argument("--check", metavar="FOLDER",
                   help="verify FOLDER's files against its manifest and exit (first finishing or "
                        "undoing a folder swap an interrupted export left)")
    add_json_flag(p)
    return p


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check:
        m, recovery = _check(args.check)
        if args.json:
            print_json({"folder": args.check, "ok": True, "files": len(m["files"]),
                        "recovered": recovery})
        else:
            if recovery and (recovery["finished"] or recovery["restored"]):
                how = "finished" if recovery["finished"] else "undone (previous export restored)"
                print(f"{args.check}: an interrupted export's folder swap was {how}")
            print(f"{args.check}: all {len(m['files'])} files match manifest.json")
        return 0
    if not args.source:
        raise ConfigError("e3d-export: a source (model name, arch JSON or checkpoint) is required")
    if not args.out:
        raise ConfigError("--out: an output folder is required")
    extra = None
    if args.video:
        extra = _decoded_clip(args)
    from .pipeline import export

    log = None if args.json else (lambda msg: print(msg, file=sys.stderr))
    manifest = export(args.source, args.out, onnx=True, openvino=args.openvino, trt=args.trt,
                      lower_2d=args.lower_2d, int8=args.int8, fp16=args.fp16, arch=args.arch,
                      num_classes=args.num_classes, frames=args.frames, size=args.size,
                      pretrained=args.pretrained, batch=args.batch, dynamic_batch=not args.static_batch,
                      opset=args.opset, verify=not args.no_verify, n_clips=args.clips,
                      extra_clips=extra, n_calibration=args.calibration_clips, abs_tol=args.abs_tol,
                      min_top1=args.min_top1, threads=args.threads, benchmark_runs=args.benchmark,
                      progress=not args.json, log=log)
    if args.json:
        print_json({"out": args.out, **manifest})
        return 0
    print(f"wrote {args.out} ({manifest['source'].get('weights')})")
    for name, art in manifest["artifacts"].items():
        print(f"  {name:14s} {art['file']:20s} {art['precision']}")
    for r in manifest["verification"]:
        print(f"  verified {r['name']:14s} on {r['backend']:11s} max abs err {r['max_abs_err']:.2e}  "
              f"top-1 agreement {r['top1_agreement']:.3f}  ({r['criterion']})")
    for name, lat in (manifest.get("latency") or {}).items():
        print(f"  latency  {name:14s} median {lat['median_ms']:.1f} ms over {lat['runs']} runs "
              f"({lat['threads'] or 'default'} threads)")
    return 0


def _check(folder: str):
    """check_manifest under the folder's lock, after recover_dir; without the lock (and
    recovery) where the location is read-only."""
    from pathlib import Path

    from e3d_zoo.atomic import output_lock, recover_dir

    from .manifest import check_manifest

    if not Path(folder).parent.is_dir():
        return check_manifest(folder), None
    try:
        with output_lock(folder, what="export folder"):
            try:
                recovery = recover_dir(folder)
            except OSError as exc:
                raise OutputError(f"{folder}: cannot finish an interrupted export: {exc}") from None
            return check_manifest(folder), recovery
    except OutputInUseError:
        raise
    except OutputError:  # no lock file can be made here (read-only): nothing to recover either
        return check_manifest(folder), None


def _decoded_clip(args):
    """A real clip for verification, decoded and normalized by the video pipeline, at the
    clip shape of the source (whatever kind of source it is)."""
    from e3d_zoo.errors import VideoError

    from .pipeline import load_source

    try:
        from e3d_zoo.video.pipeline import VideoClassifier
    except ImportError as exc:
        raise ConfigError(f"--video needs the video pipeline (pip install 'e3d-zoo[video]'): {exc}") from exc
    model, _ = load_source(args.source, arch=args.arch, num_classes=args.num_classes,
                           frames=args.frames, size=args.size, pretrained=args.pretrained)
    clf = VideoClassifier.from_model(model, backend="torch", num_clips=1, num_crops=1)
    try:
        views = clf._video_views(str(args.video), 1, 1)  # decode + the model's eval transform
    except AttributeError as exc:
        raise VideoError("--video: this version of the video pipeline cannot hand out clips") from exc
    return views["clips"].numpy()[:1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog="e3d-export")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
