"""e3d-infer: classify videos, folders or live streams with an E3D model.

    e3d-infer clip.mp4 --artifact exports/e3d_s              # an e3d-export folder, no torch
    e3d-infer rtsp://camera/live --artifact exports/e3d_s --mode stream --hop 0.5 --smoothing 0.6
    e3d-infer videos/ --artifact exports/e3d_s --jsonl out.jsonl --csv out.csv
    e3d-infer clip.mp4 --model e3d_s --weights best.safetensors     # PyTorch (full e3d-zoo install)

Whole-video mode averages ``--clips`` temporal clips x ``--crops`` spatial crops;
stream mode emits a prediction every ``--hop`` seconds. A failing input is reported
and the others go on; the exit code is 1 when any input failed, 2 on a usage or
setup error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError, E3DError, WeightsError
from ._common import (NON_NEGATIVE_INT, POSITIVE_INT, add_json_flag, float_in, print_json,
                      run_cli)

EXIT_SOME_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e3d-infer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="video files, folders (searched recursively), "
                   "stream URLs (rtsp://, http://, ...) or capture devices (with --format)")
    src = p.add_argument_group("model")
    src.add_argument("--model", default=None,
                     help="PyTorch model (needs the full e3d-zoo install): zoo name (e3d_s, e3d_m, "
                          "e3d_l), hf-hub:<repo>, a save-pretrained folder (e3d-train's output) or "
                          "an arch JSON (default e3d_s unless --artifact)")
    src.add_argument("--weights", help="a .safetensors / torch checkpoint for --model")
    src.add_argument("--random-weights", action="store_true",
                     help="run with random weights when none are given (speed and smoke tests); "
                          "without it, --model loads its published pretrained weights")
    src.add_argument("--num-classes", type=POSITIVE_INT,
                     help="classifier size when --weights is not the 400-class head")
    src.add_argument("--artifact", help="an e3d-export folder (preprocessing and labels from its "
                     "manifest) or one exported .xml / .onnx / .engine file; it is what runs. With "
                     "--model too, the two must be the same network: shapes are checked, and "
                     "logits when --model has trained weights")
    src.add_argument("--backend", default=None,
                     help="torch, onnxruntime, openvino or tensorrt (default: a folder's first "
                          "installed runtime of openvino, onnxruntime, tensorrt; a file's by its "
                          "extension; torch for --model)")
    src.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default="auto",
                     help="which of an export folder's artifacts runs: auto (default) takes the one "
                          "e3d-export --precision auto measured fastest and still right on the exporting "
                          "machine, where this CPU computes its precision natively, else fp32")
    src.add_argument("--threads", type=POSITIVE_INT, default=None,
                     help="inference threads (default: stream mode every core but one, which the "
                          "decoding thread needs; video mode the runtime's choice)")
    src.add_argument("--streams", type=POSITIVE_INT, default=None,
                     help="openvino: inference requests run at once, sharing --threads (default 1, "
                          "lowest latency per window; more streams raise throughput on many-core "
                          "machines; no gain measured on 2 cores)")
    src.add_argument("--decode-threads", type=NON_NEGATIVE_INT, default=None,
                     help="FFmpeg decoder threads, 0 for FFmpeg's choice (default: 1 on machines of "
                          "<= 2 cores, where inference uses every core; FFmpeg's choice on more)")
    src.add_argument("--decoder-resize", action="store_true",
                     help="stream mode: FFmpeg scales frames to the model's resize size while converting "
                          "them to RGB (about half the preprocessing CPU at 640x360); not bit-exact with "
                          "the training preprocessing (docs/pipeline.md has the measured agreement)")
    src.add_argument("--labels", help="class names: text file (one per line) or JSON list")
    run = p.add_argument_group("inference")
    run.add_argument("--mode", choices=("auto", "video", "stream"), default="auto",
                     help="video: one prediction per input (multi-view); stream: one per hop. "
                          "auto: stream for URLs/devices, video for files")
    run.add_argument("--clips", type=POSITIVE_INT, default=4,
                     help="temporal clips per video (video mode)")
    run.add_argument("--crops", type=int, default=3, choices=(1, 3), help="spatial crops per clip")
    run.add_argument("--hop", type=float_in(0, lo_open=True), default=0.5,
                     help="seconds between stream predictions")
    run.add_argument("--smoothing", type=float_in(0, 1, hi_open=True), default=0.0,
                     help="stream mode: weight an exponential moving average keeps (0 = off)")
    run.add_argument("--top-k", type=POSITIVE_INT, default=5)
    run.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                     help="clips per inference call (default: 8 in video mode; 1 in stream mode, where "
                          "one window per call overlaps decoding best: a batch of 8 ran ~1.6x slower "
                          "on 2 cores, docs/pipeline.md)")
    run.add_argument("--frame-stride", type=POSITIVE_INT, default=None,
                     help="override the model's frame stride")
    run.add_argument("--sample-fps", type=float_in(0, lo_open=True), default=None,
                     help="sample frames by time at this rate instead of a frame stride (VFR-safe)")
    run.add_argument("--start", type=float_in(0), default=None,
                     help="stream mode, files: seek to this second")
    run.add_argument("--max-reconnects", type=NON_NEGATIVE_INT, default=3,
                     help="live streams: reconnect attempts")
    run.add_argument("--timeout", type=float_in(0, lo_open=True), default=10.0,
                     help="stream open/read timeout, seconds")
    run.add_argument("--format", default=None, help="FFmpeg input format, e.g. v4l2 for /dev/video0")
    run.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE",
                     help="FFmpeg demuxer/protocol option for streams, e.g. rtsp_transport=tcp "
                          "(repeatable)")
    out = p.add_argument_group("output")
    out.add_argument("--jsonl", help="write one JSON record per video/window (resumes a killed run)")
    out.add_argument("--csv", help="write the records as CSV")
    out.add_argument("--annotate", help="stream mode, one file input: write an MP4 with the label drawn")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-compile-cache", action="store_true",
                     help="openvino: compile the model every time instead of reusing the compiled "
                          "blob cached under $E3D_CACHE/openvino (default ~/.cache/e3d_zoo/openvino)")
    add_json_flag(p)
    return p


def _make_classifier(args: argparse.Namespace, stream: bool = False):
    """The classifier the arguments ask for. ``stream``: it will run stream mode, so its
    inference leaves a core to the decoding thread unless --threads says otherwise, and an
    artifact compiles while the first input is opened and decoded (start-up is part of
    the real-time figure; a compile error still exits 2)."""
    from ..video.pipeline import VideoClassifier, default_stream_threads, load_labels
    from ..video.sampling import SamplingConfig

    threads = args.threads or (default_stream_threads() if stream else None)

    labels = load_labels(args.labels) if args.labels else None
    kw: Dict[str, Any] = dict(labels=labels, top_k=args.top_k, num_clips=args.clips, num_crops=args.crops,
                              decode_threads=args.decode_threads, decoder_resize=args.decoder_resize)
    if args.batch_size is not None:  # else the classifier's own default (video mode)
        kw["batch_size"] = args.batch_size
    options: Dict[str, Any] = {}
    if args.streams is not None:
        options["streams"] = args.streams
    if args.artifact and args.backend and args.backend.lower() in ("torch", "pytorch"):
        raise ConfigError(f"--backend {args.backend}: runs --model in PyTorch, not --artifact "
                          f"{args.artifact}; drop one of them")
    runtime = _runtime(args)
    if args.artifact and not args.no_compile_cache and runtime == "openvino":
        options["cache_dir"] = compile_cache_dir()
    if options:
        kw["backend_options"] = options
    if args.artifact and not args.model:
        clf = VideoClassifier.from_artifact(args.artifact, backend=args.backend, threads=threads,
                                            precision=None if args.precision == "auto" else args.precision,
                                            compile_in_background=stream, **kw)
    else:
        try:
            clf = VideoClassifier.from_model(args.model or "e3d_s", backend=runtime,
                                             artifact=args.artifact, threads=threads,
                                             weights=args.weights, num_classes=args.num_classes,
                                             pretrained=not (args.weights or args.random_weights),
                                             **kw)
        except WeightsError as exc:
            raise WeightsError(f"{exc} (to run without trained weights, e.g. for a speed test, "
                               "pass --random-weights)") from exc
    if args.frame_stride is not None or args.sample_fps is not None:
        clf.sampling = SamplingConfig.from_cfg(clf.cfg, frame_stride=args.frame_stride,
                                               sample_fps=args.sample_fps)
    return clf


def _runtime(args: argparse.Namespace) -> str:
    """The backend that will run: --backend, else the artifact's (a folder's first installed
    runtime, a file's extension), else torch."""
    from ..backends.base import canonical_backend_name
    from ..video.pipeline import artifact_and_cfg

    if args.backend:
        return canonical_backend_name(args.backend)
    return artifact_and_cfg(args.artifact)[0] if args.artifact else "torch"


def compile_cache_dir() -> Path:
    """Where compiled OpenVINO models are cached: $E3D_CACHE/openvino (~/.cache/e3d_zoo)."""
    import os

    return Path(os.environ.get("E3D_CACHE", Path.home() / ".cache" / "e3d_zoo")) / "openvino"


def _tqdm(args: argparse.Namespace):
    """tqdm's class, or None with --no-progress or where tqdm is not installed (a bare
    edge install: e3d-runtime without the [video] extra)."""
    if args.no_progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _seconds_bar(src: str, args: argparse.Namespace):
    """A progress bar in seconds of video for one file in stream mode (None if unknown)."""
    tqdm = _tqdm(args)
    if tqdm is None or not sys.stderr.isatty():  # tqdm would hide it; do not open the file for it
        return None
    from ..video.decode import VideoReader

    try:
        with VideoReader(src) as reader:
            duration = reader.info.duration
    except E3DError:
        return None  # the stream call reports the error
    return tqdm(total=round(duration, 2) if duration else None, unit="s", desc=Path(src).name,
                file=sys.stderr, disable=None, bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog="e3d-infer")


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    from ..video.decode import expand_inputs, is_stream_url
    from ..video.writers import JsonlWriter, annotate_video, check_output_path, write_csv

    if args.precision != "auto" and not (args.artifact and not args.model):
        raise ConfigError(f"--precision {args.precision}: picks among an export folder's artifacts; "
                          "pass --artifact FOLDER (without --model)")
    if args.streams is not None:
        backend = _runtime(args)
        if backend != "openvino":
            raise ConfigError(f"--streams: only the openvino backend runs requests concurrently; "
                              f"the backend here is {backend}")
    jsonl = check_output_path(args.jsonl, (".jsonl", ".json"), "--jsonl")
    csv_path = check_output_path(args.csv, (".csv",), "--csv")
    annotate = check_output_path(args.annotate, (".mp4", ".mkv", ".mov"), "--annotate")

    inputs: List[str] = []
    failures: List[Dict[str, str]] = []
    for item in args.inputs:
        try:
            expanded = expand_inputs([item])
        except E3DError as exc:
            failures.append({"source": item, "error": str(exc)})
            continue
        if not expanded and Path(item).is_dir():
            failures.append({"source": item, "error": f"{item}: folder holds no video files"})
        inputs.extend(expanded)
    if annotate and len(inputs) != 1:
        raise ConfigError(f"--annotate: needs exactly one input, found {len(inputs)}")

    reader_options: Dict[str, Any] = {"timeout": args.timeout}
    if args.format:
        reader_options["format"] = args.format
    if args.input_option:
        opts = {}
        for item in args.input_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--input-option: expected KEY=VALUE, found {item!r}")
            opts[key] = value
        reader_options["options"] = opts

    live = {s for s in inputs if is_stream_url(s) or args.format}  # the rest are files
    clf = _make_classifier(args, stream=args.mode == "stream"
                           or (args.mode == "auto" and bool(inputs) and len(live) == len(set(inputs))))
    writer = JsonlWriter(jsonl) if jsonl else None
    done = writer.done_sources() if writer else set()
    todo = [s for s in inputs if s not in done]
    records: List[Dict[str, Any]] = list(writer.records) if writer else []
    new_records: List[Dict[str, Any]] = []

    def emit(rec: Dict[str, Any]) -> None:
        new_records.append(rec)
        records.append(rec)
        if not args.json and rec.get("kind") in ("video", "window"):
            t = rec["top"][0]
            where = (f" [{rec['start_time']:.2f}-{rec['end_time']:.2f}s]" if rec["kind"] == "window" else "")
            print(f"{rec['source']}{where}: {t['label']} ({t['score']:.3f})", flush=True)

    progress = None
    tqdm = _tqdm(args) if len(todo) > 1 else None
    if tqdm is not None:
        progress = tqdm(total=len(todo), unit="video", file=sys.stderr, disable=None)
    try:
        files = [s for s in todo if s not in live]
        streams = [s for s in todo if s in live]
        stream_mode = args.mode == "stream"
        if args.decoder_resize and files and not stream_mode:
            raise ConfigError(f"--decoder-resize: applies to stream mode only, and {files[0]} would run "
                              "in video mode; add --mode stream")
        if files and not stream_mode:
            for rec in clf.classify_many(files, num_clips=args.clips, num_crops=args.crops):
                if rec["kind"] == "error":
                    failures.append({"source": rec["source"], "error": rec["error"]})
                else:
                    emit(rec)
                if writer:
                    writer.write(rec | {"complete": rec["kind"] != "error"})
                if progress:
                    progress.update(1)
        to_stream = streams + (files if stream_mode else [])
        if args.mode == "video" and streams:
            raise ConfigError("--mode video: live streams have no end; use --mode stream for "
                              + ", ".join(streams))
        for src in to_stream:
            windows: List[Dict[str, Any]] = []
            file_bar = _seconds_bar(src, args) if (progress is None and src in files) else None
            try:
                for rec in clf.stream(src, hop=args.hop, smoothing=args.smoothing, top_k=args.top_k,
                                      max_reconnects=args.max_reconnects, start_time=args.start,
                                      batch_windows=args.batch_size, reader_options=reader_options):
                    emit(rec)
                    windows.append(rec)
                    if file_bar is not None:
                        file_bar.update(max(rec["end_time"] - file_bar.n, 0.0))
                    if writer and src in streams:
                        writer.write(rec | {"complete": False})  # live: records as they come
                if writer and src not in streams:
                    writer.write_many(w | {"complete": True} for w in windows)
                if annotate:
                    annotate_video(src, annotate, windows)
            except E3DError as exc:
                clf.backend  # noqa: B018 - a failed compile is a setup error (exit 2), not this input's
                failures.append({"source": src, "error": str(exc)})
                if writer:
                    writer.write({"source": src, "kind": "error", "error": str(exc), "complete": False})
            finally:
                if file_bar is not None:
                    file_bar.close()
            if progress:
                progress.update(1)
    except KeyboardInterrupt:
        if writer:
            writer.abort()  # keep <out>.partial: the next run resumes from it
        raise
    finally:
        if progress:
            progress.close()
    if writer:
        writer.close()
    if csv_path:
        write_csv(csv_path, [r for r in records if r.get("kind") in ("video", "window")])

    summary = {"backend": clf.backend.describe(), "artifact_check": clf.artifact_check,
               "inputs": len(inputs), "skipped_done": len(done & set(inputs)),
               "records": new_records, "failures": failures,
               "outputs": {k: str(v) for k, v in (("jsonl", jsonl), ("csv", csv_path),
                                                   ("annotate", annotate)) if v}}
    if args.json:
        print_json(summary)
    elif failures:
        print(f"e3d-infer: {len(failures)} input(s) failed:", file=sys.stderr)
        for f in failures:  # each line names its input
            msg = f["error"] if f["source"] in f["error"] else f"{f['source']}: {f['error']}"
            print(f"  {msg}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
