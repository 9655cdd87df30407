"""Real-time factor of the streaming pipeline (issue 6's performance target).

    python -m e3d_eval.bench_pipeline                      # E3D-S, OpenVINO, 2 threads, hop 0.5 s
    python -m e3d_eval.bench_pipeline --backend torch --seconds 10 --repeats 3 --json

Real-time factor (RTF) = seconds of video processed per wall-clock second, for a
640x360 30 fps H.264 video that the benchmark encodes itself (a moving pattern on
noise, so the decoder does real work). The whole pipeline runs as a user would run
it - decode (PyAV) -> sampling -> preprocessing -> batched inference, decoding in a
background thread - and decode, preprocessing and inference seconds are reported
separately (summed per stage, so with overlap they can add up to more than the wall
time). Weights are random: they do not change the speed. Figures are medians over
``--repeats`` runs; the machine load (``os.getloadavg``) is recorded with them.

Each run also measures the ceiling no backend can pass on this machine: it times sgemm
(as ``e3d_eval.bench_export`` does) and a decode-only pass on one thread (every frame
decoded, the sampled ones converted to RGB, as the pipeline must). The model alone at the
CPU's full sgemm FLOP/s could run at most ``rtf_ceiling_model_at_sgemm_peak`` times real
time (``video seconds x sgemm FLOP/s / (windows x 2 x MACs per window)``, MACs from the
spec); sharing the cores with the decoding work, at most ``rtf_ceiling_with_decode``
(``video seconds / (windows x 2 x MACs / sgemm FLOP/s + decode core-seconds / cores)``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

TARGET_RTF = 10.0


def make_video(path: Path, seconds: float, width: int = 640, height: int = 360, fps: int = 30,
               bitrate: Optional[str] = None) -> Path:
    """A deterministic test video: bars and a disc moving over a noisy background.

    ``bitrate`` (e.g. ``"1M"``) caps the stream like a streaming encoder would (x264 VBV:
    CRF 23 with maxrate and a 2-second buffer); ``None`` leaves CRF 23 uncapped, which on
    this noise is ~7 Mbit/s, several times what 360p video usually carries. H.264 decode
    cost grows with the bitrate, so both are benchmarks of their own.
    """
    from e3d_zoo.video.writers import encode_video

    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 60, (8, height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]

    def frames():
        for i in range(int(round(seconds * fps))):
            img = noise[i % 8].copy()
            x = (i * 7) % width
            img[:, x:x + 24] = (230, 230, 230)
            cy, cx = height // 2 + int(80 * np.sin(i / 15)), (width - i * 5) % width
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 40 ** 2] = (200, 40, 40)
            yield img

    options = {"preset": "veryfast", "crf": "23"}
    if bitrate:
        options.update(maxrate=bitrate, bufsize=_double(bitrate))
    return encode_video(path, frames(), fps=fps, options=options)


def _double(rate: str) -> str:
    """'1M' -> '2M' (x264's VBV buffer: two seconds at the cap)."""
    units = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}
    value = float(rate[:-1]) * units[rate[-1]] if rate[-1] in units else float(rate)
    return str(int(2 * value))


def build_classifier(model: str, backend: str, threads: int, batch: int, cache: Path,
                     artifact: Optional[str] = None, streams: int = 1, decode_threads: int = 0):
    from e3d_zoo.runtime.base import available_backends
    from e3d_zoo.video.pipeline import VideoClassifier

    kw: Dict[str, Any] = {"threads": threads, "batch_size": batch, "decode_threads": decode_threads}
    if streams != 1:
        kw["backend_options"] = {"streams": streams}
    if artifact:  # e.g. an INT8 or 2D-lowered export from e3d-export
        return VideoClassifier.from_artifact(artifact, **kw), ""
    note = ""
    if backend not in available_backends():
        note = f"{backend} not available here; fell back to torch"
        backend = "torch"
    clf = VideoClassifier.from_model(model, backend=backend, cache_dir=cache, **kw)
    return clf, note


def pipeline_pass(clf, video: Path, hop: float, batch: int,
                  timing: Optional[Dict[str, float]] = None) -> Tuple[float, int]:
    """(wall seconds, windows) of one streaming pass over ``video``."""
    t0 = time.perf_counter()
    n = sum(1 for _ in clf.stream(video, hop=hop, timing=timing, batch_windows=batch))
    return time.perf_counter() - t0, n


def run_once(clf, video: Path, hop: float, batch: int, sgemm_n: int = 1024) -> Dict[str, float]:
    """One pipeline pass, then - in the same moment, so under the same machine load -
    the same number of windows through the backend alone (random clips, same batch),
    then this machine's sgemm rate."""
    timing: Dict[str, float] = {}
    wall, n = pipeline_pass(clf, video, hop, batch, timing)
    T, (h, w) = clf.sampling.num_frames, clf.transform.input_size
    clips = np.random.default_rng(0).standard_normal((batch, 3, T, h, w)).astype(np.float32)
    t1 = time.perf_counter()
    started = [clf.backend.submit(clips) for _ in range(-(-n // batch))]  # as many in flight as the pipeline
    for future in started:
        future.result()
    infer_only = time.perf_counter() - t1
    from e3d_eval.bench_export import sgemm_gflops, sgemm_runner

    gemm = sgemm_runner(sgemm_n)
    gemm()
    sgemm_s = []
    for _ in range(5):
        t2 = time.perf_counter()
        gemm()
        sgemm_s.append(time.perf_counter() - t2)
    # torch's BLAS threads spin after a call; the next timed pass must not pay for it
    time.sleep(0.3)
    from e3d_zoo.video.decode import VideoReader

    stride = clf.sampling.frame_stride or 1
    t3 = time.perf_counter()
    with VideoReader(video, threads=1) as r:
        for _ in r.frames(keep=lambda i, t: i % stride == 0):
            pass
    decode_1thread = time.perf_counter() - t3
    return {"wall_s": wall, "windows": n, "inference_only_wall_s": infer_only,
            "decode_only_1thread_s": decode_1thread,
            "sgemm_gflops": sgemm_gflops(sgemm_n, statistics.median(sgemm_s)),
            **{k: timing[k] for k in ("decode_s", "preprocess_s", "infer_s")}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.bench_pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e3d_s")
    p.add_argument("--backend", default="openvino")
    p.add_argument("--artifact", default=None,
                   help="benchmark this exported .xml/.onnx instead of exporting --model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--streams", type=int, default=1,
                   help="openvino: inference requests in flight, sharing --threads")
    p.add_argument("--decode-threads", type=int, default=0, help="FFmpeg decoder threads (0: FFmpeg's choice)")
    p.add_argument("--compare-streams", type=int, default=None, metavar="N",
                   help="openvino: also run the pipeline with N streams on the same IR, alternating "
                        "with the main setting in every repeat, and report the paired wall ratio")
    p.add_argument("--hop", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the benchmark video")
    p.add_argument("--batch", type=int, default=1, help="windows per inference call")
    p.add_argument("--bitrate", default="1M",
                   help="cap of the benchmark video's H.264 stream, e.g. 1M (typical for 360p "
                        "streaming), or 'none' for uncapped CRF 23 (~7 Mbit/s on this noisy content)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", default=None, help="folder for the video and the exported model "
                   "(default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)

    from tqdm import tqdm

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="e3d_bench_pipeline."))
    bitrate = None if args.bitrate.lower() in ("none", "0", "") else args.bitrate
    video = make_video(cache / f"bench_640x360_30fps_{int(args.seconds)}s_{bitrate or 'crf23'}.mp4",
                       args.seconds, bitrate=bitrate)
    from e3d_zoo.video.pipeline import backend_for_artifact

    runtime = backend_for_artifact(args.artifact) if args.artifact else args.backend
    if args.streams != 1 and runtime != "openvino":
        p.error("--streams: only the openvino backend runs requests concurrently")
    clf, note = build_classifier(args.model, args.backend, args.threads, args.batch, cache,
                                 args.artifact, streams=args.streams, decode_threads=args.decode_threads)
    from e3d_zoo.video.decode import VideoReader

    with VideoReader(video) as r:
        info = r.info
    macs = None
    if not args.artifact:  # the spec is the one place MACs are counted
        from e3d_zoo import complexity
        from e3d_zoo.zoo import spec_for

        T, (h, w) = clf.sampling.num_frames, clf.transform.input_size
        macs = complexity.macs(spec_for(args.model), T, h) if h == w else None
    other = None
    if args.compare_streams is not None:
        if clf.backend.name != "openvino":
            p.error("--compare-streams: needs the openvino backend")
        from e3d_zoo.video.pipeline import VideoClassifier

        other = VideoClassifier.from_artifact(clf.backend.path, threads=args.threads,
                                              batch_size=args.batch, decode_threads=args.decode_threads,
                                              backend_options={"streams": args.compare_streams})
        pipeline_pass(other, video, args.hop, args.batch)  # warm-up
    run_once(clf, video, args.hop, args.batch)  # warm-up: first-call allocations, page cache
    runs: List[Dict[str, float]] = []
    other_walls: List[float] = []
    loads = []
    for i in tqdm(range(args.repeats), desc="pipeline runs", file=sys.stderr, disable=None):
        loads.append(os.getloadavg()[0])
        if other is not None and i % 2:  # alternate which setting goes first
            other_walls.append(pipeline_pass(other, video, args.hop, args.batch)[0])
        runs.append(run_once(clf, video, args.hop, args.batch))
        if other is not None and not i % 2:
            other_walls.append(pipeline_pass(other, video, args.hop, args.batch)[0])
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    duration = float(info.duration or info.num_frames / info.fps)
    result: Dict[str, Any] = {
        "video": {"width": info.width, "height": info.height, "fps": info.fps, "seconds": duration,
                  "bitrate_cap": bitrate, "mbit_per_s": video.stat().st_size * 8 / duration / 1e6},
        "model": args.artifact or args.model, "backend": clf.backend.describe(), "note": note,
        "threads": args.threads, "streams": args.streams, "decode_threads": args.decode_threads,
        "hop_s": args.hop, "batch": args.batch, "repeats": args.repeats,
        "window": {"num_frames": clf.sampling.num_frames, "frame_stride": clf.sampling.frame_stride,
                   "input_size": list(clf.transform.input_size)},
        "median": med,
        "rtf": duration / med["wall_s"],
        "rtf_runs": [duration / r["wall_s"] for r in runs],
        "per_video_second": {k.replace("_s", "_ms"): 1000 * med[k] / duration
                             for k in ("decode_s", "preprocess_s", "infer_s")},
        "infer_ms_per_window": 1000 * med["infer_s"] / med["windows"],
        # same-run ratios: robust to the machine's load, unlike the absolute figures
        "pipeline_over_inference_only": statistics.median(
            r["wall_s"] / r["inference_only_wall_s"] for r in runs),
        "rtf_if_inference_only": statistics.median(duration / r["inference_only_wall_s"] for r in runs),
        "stage_share_of_wall": {k: med[k] / med["wall_s"] for k in ("decode_s", "preprocess_s", "infer_s")},
        "macs_per_window": macs,
        "sgemm_gflops": med["sgemm_gflops"],
        "decode_only_1thread_ms_per_video_second": 1000 * med["decode_only_1thread_s"] / duration,
        # no kernel runs faster than sgemm, and every frame must be decoded: ceilings no
        # backend or scheduling can pass on this machine
        "rtf_ceiling_model_at_sgemm_peak": (
            duration * med["sgemm_gflops"] * 1e9 / (med["windows"] * 2 * macs) if macs else None),
        "rtf_ceiling_with_decode": (
            duration / (med["windows"] * 2 * macs / (med["sgemm_gflops"] * 1e9)
                        + med["decode_only_1thread_s"] / max(args.threads, 1)) if macs else None),
        "load_avg_1min": loads, "cpu_count": os.cpu_count(), "target_rtf": TARGET_RTF,
    }
    if other is not None:
        result["compare_streams"] = {
            "streams": args.compare_streams, "backend": other.backend.describe(),
            "rtf": duration / statistics.median(other_walls),
            "rtf_runs": [duration / w for w in other_walls],
            # paired within each repeat: robust to the load drifting between repeats
            "wall_ratio_to_main": statistics.median(w / r["wall_s"] for w, r in zip(other_walls, runs)),
        }
    result["meets_target"] = result["rtf"] >= TARGET_RTF
    if args.out:
        from e3d_zoo.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        b = result["backend"]
        print(f"{args.artifact or args.model} on {b['backend']} ({b.get('runtime_version', '?')}), {args.threads} threads, "
              f"hop {args.hop}s, {info.width}x{info.height}@{info.fps:g}fps, {duration:.1f}s video at "
              f"{result['video']['mbit_per_s']:.2f} Mbit/s"
              + (f"  [{note}]" if note else ""))
        print(f"  real-time factor: {result['rtf']:.2f}x (median of {args.repeats}; runs "
              + ", ".join(f"{x:.2f}" for x in result["rtf_runs"]) + f"; target {TARGET_RTF:g}x)")
        print(f"  windows: {med['windows']:.0f}; wall {med['wall_s']:.2f}s; per second of video: "
              + ", ".join(f"{k} {v:.1f}" for k, v in result["per_video_second"].items()))
        print(f"  inference {result['infer_ms_per_window']:.1f} ms/window; same run, backend alone: "
              f"RTF {result['rtf_if_inference_only']:.2f}x, pipeline/backend-alone wall "
              f"{result['pipeline_over_inference_only']:.2f}")
        if macs:
            print(f"  ceiling: at this machine's sgemm peak ({result['sgemm_gflops']:.1f} GFLOP/s, "
                  f"{2 * macs / 1e9:.2f} GFLOP per window) the model alone could reach at most "
                  f"{result['rtf_ceiling_model_at_sgemm_peak']:.2f}x real time; with the decoding "
                  f"({result['decode_only_1thread_ms_per_video_second']:.0f} ms per video-second on "
                  f"one thread) on the same cores, {result['rtf_ceiling_with_decode']:.2f}x")
        if other is not None:
            c = result["compare_streams"]
            print(f"  with {c['streams']} stream(s), alternating in the same repeats: RTF {c['rtf']:.2f}x "
                  f"(runs " + ", ".join(f"{x:.2f}" for x in c["rtf_runs"]) + f"); paired wall ratio to "
                  f"{args.streams} stream(s): {c['wall_ratio_to_main']:.3f}")
        print(f"  load avg (1 min) at each run: {', '.join(f'{x:.1f}' for x in loads)} "
              f"on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
