"""Real-time factor of the streaming pipeline (issue 6's performance target).

    python -m e3d_eval.bench_pipeline                      # E3D-S, OpenVINO, e3d-infer's threads, hop 0.5 s
    python -m e3d_eval.bench_pipeline --backend torch --seconds 10 --repeats 3 --json

Real-time factor (RTF) = seconds of video processed per wall-clock second, for a
640x360 30 fps H.264 video that the benchmark encodes itself (a moving pattern on
noise, so the decoder does real work). The whole pipeline runs as a user would run
it - decode (PyAV) -> sampling -> preprocessing -> batched inference, decoding in a
background thread - and decode, preprocessing and inference seconds are reported
separately (summed per stage, so with overlap they can add up to more than the wall
time). Weights are random: they do not change the speed. Figures are medians over
``--repeats`` runs; the machine load (``os.getloadavg``) is recorded with them.

The ceiling no backend or scheduling can pass on this machine is measured in the same
run (:mod:`e3d_runtime.machine`): the machine's peak for the artifact's precision, the
best of numpy/OpenBLAS sgemm, torch.mm and OpenVINO MatMul / 1x1x1 conv kernels over
several sizes (fp32; bf16 and INT8 too where the artifact runs them), taken before and
after the repeats, the higher kept; and the decoding every frame needs, one thread, CPU
time, the lowest of the repeats. The model alone at that peak could run at most
``rtf_ceiling_model_at_peak`` times real time (``video seconds x peak FLOP/s /
(windows x 2 x MACs per window)``, MACs from the spec); sharing the cores with the
decoding, at most ``rtf_ceiling`` (``video seconds / (windows x 2 x MACs / peak +
decode core-seconds / cores)``). Preprocessing is left out, so both stay upper bounds.
``fraction_of_ceiling`` is the achieved RTF over ``rtf_ceiling``; the last line is the
verdict against issue 15's goals (>= 20x real time on a 2-core AVX-512 VNNI machine, and
>= 0.8 of the ceiling on any machine). The JSON records the CPU model, its SIMD flags,
cores, the load around every run and the peaks used.
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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

TARGET_RTF = 20.0             # on a 2-core AVX-512 VNNI machine (issue 15)
TARGET_FRACTION_OF_CEILING = 0.8  # on any machine


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
                     artifact: Optional[str] = None, streams: int = 1, decode_threads: Optional[int] = None):
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


def decode_core_seconds(video: Path, stride: int, short_side: Optional[int] = None) -> float:
    """CPU seconds to decode every frame on one thread, the sampled ones converted to RGB
    as the pipeline must: the least decoding work a pass over ``video`` needs.

    ``short_side``: convert at that size, as the pipeline does with ``decoder_resize``
    (FFmpeg scales while it converts: less work than converting at full size, so a
    ceiling counting the full-size conversion could fall below what it bounds)."""
    from e3d_runtime.video.decode import VideoReader

    t0 = time.process_time()
    with VideoReader(video, threads=1, short_side=short_side) as r:
        for _ in r.frames(keep=lambda i, t: i % stride == 0):
            pass
    return time.process_time() - t0


def run_once(clf, video: Path, hop: float, batch: int) -> Dict[str, float]:
    """One pipeline pass, then - in the same moment, so under the same machine load -
    the same number of windows through the backend alone (random clips, same batch),
    then one decode-only pass."""
    load_start = os.getloadavg()[0]
    timing: Dict[str, float] = {}
    wall, n = pipeline_pass(clf, video, hop, batch, timing)
    T, (h, w) = clf.sampling.num_frames, clf.transform.input_size
    clips = np.random.default_rng(0).standard_normal((batch, 3, T, h, w)).astype(np.float32)
    t1 = time.perf_counter()
    started = [clf.backend.submit(clips) for _ in range(-(-n // batch))]  # as many in flight as the pipeline
    for future in started:
        future.result()
    infer_only = time.perf_counter() - t1
    decode_cpu = decode_core_seconds(video, clf.sampling.frame_stride or 1)
    return {"wall_s": wall, "windows": n, "inference_only_wall_s": infer_only,
            "decode_only_1thread_cpu_s": decode_cpu, "load_avg_start": load_start,
            "load_avg_end": os.getloadavg()[0],
            **{k: timing[k] for k in ("decode_s", "preprocess_s", "infer_s")}}


def compute_precision(backend: Any) -> str:
    """fp32, bf16 or int8: how ``backend``'s artifact computes (which peak bounds it)."""
    if str((getattr(backend, "metadata", None) or {}).get("precision", "")).strip('"') == "int8":
        return "int8"
    return "bf16" if getattr(backend, "precision", "f32") == "bf16" else "fp32"


def model_macs(clf, model: str, artifact: Optional[str]) -> Optional[int]:
    """MACs per window from the spec (the one place they are counted): of ``model``, or of
    the architecture an export records (its manifest's source, or the artifact's metadata)."""
    from e3d_zoo import complexity
    from e3d_zoo.spec import ArchSpec
    from e3d_zoo.zoo import spec_for

    T, (h, w) = clf.sampling.num_frames, clf.transform.input_size
    if h != w:
        return None
    arch: Any = None
    if artifact:
        folder = Path(artifact) if Path(artifact).is_dir() else Path(artifact).parent
        if (folder / "manifest.json").is_file():
            arch = json.loads((folder / "manifest.json").read_text()).get("source", {}).get("arch")
        if arch is None:
            raw = (getattr(clf.backend, "metadata", None) or {}).get("arch")
            arch = json.loads(raw) if isinstance(raw, str) else raw
        if arch is None:
            return None
        spec = ArchSpec.from_dict(arch)
    else:
        spec = spec_for(model)
    return complexity.macs(spec, T, h, num_classes=clf.cfg.get("num_classes") or 400)


def ceilings(duration: float, windows: float, macs: Optional[int], peak_gflops: float,
             decode_core_s: float, cores: int) -> Dict[str, Optional[float]]:
    """The RTF no pipeline can pass here: the model at the peak, and with the decoding."""
    if not macs:
        return {"rtf_ceiling_model_at_peak": None, "rtf_ceiling": None}
    model_s = windows * 2 * macs / (peak_gflops * 1e9)
    return {"rtf_ceiling_model_at_peak": duration / model_s,
            "rtf_ceiling": duration / (model_s + decode_core_s / max(cores, 1))}


def verdict(rtf: float, ceiling: Optional[float], cpu: Mapping[str, Any], what: str) -> str:
    """One line against issue 15's goals."""
    from e3d_runtime.machine import is_target_class

    parts = [f"verdict ({what}): {rtf:.2f}x real time"]
    if is_target_class(cpu):
        parts.append(f"target >= {TARGET_RTF:g}x on this 2-core AVX-512 VNNI machine: "
                     + ("MET" if rtf >= TARGET_RTF else "NOT MET"))
    else:
        parts.append(f"(the >= {TARGET_RTF:g}x target is for 2-core AVX-512 VNNI machines; this one has "
                     f"{cpu.get('cores')} cores, {'/'.join(cpu.get('flags', [])[-3:]) or 'no SIMD flags'})")
    if ceiling:
        frac = rtf / ceiling
        parts.append(f"{frac:.2f} of the ceiling {ceiling:.2f}x, target >= {TARGET_FRACTION_OF_CEILING:g}: "
                     + ("MET" if frac >= TARGET_FRACTION_OF_CEILING else "NOT MET"))
    return "; ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.bench_pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e3d_s")
    p.add_argument("--backend", default="openvino")
    p.add_argument("--artifact", default=None,
                   help="benchmark this e3d-export folder (its default artifact) or exported .xml/.onnx "
                        "instead of exporting --model")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads (default: e3d-infer's for stream mode, every core but one: "
                        "e3d_runtime.video.pipeline.default_stream_threads)")
    p.add_argument("--streams", type=int, default=1,
                   help="openvino: inference requests in flight, sharing --threads")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="FFmpeg decoder threads (0: FFmpeg's choice; default: the pipeline's, "
                        "e3d_runtime.video.pipeline.default_decode_threads)")
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
    p.add_argument("--quick-peaks", action="store_true",
                   help="measure the machine's peaks with fewer sizes and runs (tests; a lower bound)")
    p.add_argument("--cache", default=None, help="folder for the video and the exported model "
                   "(default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)

    from tqdm import tqdm

    from e3d_runtime.machine import bound_gflops, cpu_info, measure_peaks, usable_cores
    from e3d_runtime.video.pipeline import default_stream_threads

    cores = usable_cores()
    threads = args.threads or default_stream_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    cpu = cpu_info()
    load_start = os.getloadavg()[0]
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="e3d_bench_pipeline."))
    bitrate = None if args.bitrate.lower() in ("none", "0", "") else args.bitrate
    video = make_video(cache / f"bench_640x360_30fps_{int(args.seconds)}s_{bitrate or 'crf23'}.mp4",
                       args.seconds, bitrate=bitrate)
    from e3d_zoo.video.pipeline import backend_for_artifact

    runtime = (backend_for_artifact(args.artifact) or args.backend) if args.artifact else args.backend
    if args.streams != 1 and runtime != "openvino":
        p.error("--streams: only the openvino backend runs requests concurrently")
    clf, note = build_classifier(args.model, args.backend, threads, args.batch, cache,
                                 args.artifact, streams=args.streams, decode_threads=args.decode_threads)
    from e3d_zoo.video.decode import VideoReader

    with VideoReader(video) as r:
        info = r.info
    macs = model_macs(clf, args.model, args.artifact)
    precision = compute_precision(clf.backend)
    other = None
    if args.compare_streams is not None:
        if clf.backend.name != "openvino":
            p.error("--compare-streams: needs the openvino backend")
        from e3d_zoo.video.pipeline import VideoClassifier

        other = VideoClassifier.from_artifact(clf.backend.path, threads=threads,
                                              batch_size=args.batch, decode_threads=args.decode_threads,
                                              backend_options={"streams": args.compare_streams,
                                                               "precision": clf.backend.precision})
        pipeline_pass(other, video, args.hop, args.batch)  # warm-up
    wanted = sorted({"fp32", precision})
    peaks = [measure_peaks(cores, precisions=wanted, quick=args.quick_peaks)]
    run_once(clf, video, args.hop, args.batch)  # warm-up: first-call allocations, page cache
    runs: List[Dict[str, float]] = []
    other_walls: List[float] = []
    for i in tqdm(range(args.repeats), desc="pipeline runs", file=sys.stderr, disable=None):
        if other is not None and i % 2:  # alternate which setting goes first
            other_walls.append(pipeline_pass(other, video, args.hop, args.batch)[0])
        runs.append(run_once(clf, video, args.hop, args.batch))
        if other is not None and not i % 2:
            other_walls.append(pipeline_pass(other, video, args.hop, args.batch)[0])
    peaks.append(measure_peaks(cores, precisions=wanted, quick=args.quick_peaks))
    peak = max((pk for pk in peaks), key=lambda pk: bound_gflops(pk, precision))
    peak_gflops = bound_gflops(peak, precision)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    duration = float(info.duration or info.num_frames / info.fps)
    decode_core_s = min(r["decode_only_1thread_cpu_s"] for r in runs)
    ceiling = ceilings(duration, med["windows"], macs, peak_gflops, decode_core_s, cores)
    rtf = duration / med["wall_s"]
    result: Dict[str, Any] = {
        "machine": {"cpu": cpu, "load_avg_1min_start": load_start, "load_avg_1min_end": os.getloadavg()[0]},
        "video": {"width": info.width, "height": info.height, "fps": info.fps, "seconds": duration,
                  "bitrate_cap": bitrate, "mbit_per_s": video.stat().st_size * 8 / duration / 1e6},
        "model": args.artifact or args.model, "backend": clf.backend.describe(), "note": note,
        "precision": precision, "threads": threads, "streams": args.streams,
        "decode_threads": clf.decode_threads, "hop_s": args.hop, "batch": args.batch,
        "repeats": args.repeats,
        "window": {"num_frames": clf.sampling.num_frames, "frame_stride": clf.sampling.frame_stride,
                   "input_size": list(clf.transform.input_size)},
        "median": med,
        "rtf": rtf,
        "rtf_runs": [duration / r["wall_s"] for r in runs],
        "load_avg_1min_runs": [[r["load_avg_start"], r["load_avg_end"]] for r in runs],
        "per_video_second": {k.replace("_s", "_ms"): 1000 * med[k] / duration
                             for k in ("decode_s", "preprocess_s", "infer_s")},
        "infer_ms_per_window": 1000 * med["infer_s"] / med["windows"],
        # same-run ratios: robust to the machine's load, unlike the absolute figures
        "pipeline_over_inference_only": statistics.median(
            r["wall_s"] / r["inference_only_wall_s"] for r in runs),
        "rtf_if_inference_only": statistics.median(duration / r["inference_only_wall_s"] for r in runs),
        "stage_share_of_wall": {k: med[k] / med["wall_s"] for k in ("decode_s", "preprocess_s", "infer_s")},
        "macs_per_window": macs,
        "peaks": peaks, "peak_gflops_used": peak_gflops,
        "peak_used": {"precision_bound": precision, **{k: v for k, v in peak["peak"].items()
                                                        if k in ("fp32", precision)}},
        "decode_only_1thread_cpu_ms_per_video_second": 1000 * decode_core_s / duration,
        **ceiling,
        "fraction_of_ceiling": rtf / ceiling["rtf_ceiling"] if ceiling["rtf_ceiling"] else None,
        "cores": cores, "target_rtf": TARGET_RTF, "target_fraction_of_ceiling": TARGET_FRACTION_OF_CEILING,
    }
    if other is not None:
        result["compare_streams"] = {
            "streams": args.compare_streams, "backend": other.backend.describe(),
            "rtf": duration / statistics.median(other_walls),
            "rtf_runs": [duration / w for w in other_walls],
            # paired within each repeat: robust to the load drifting between repeats
            "wall_ratio_to_main": statistics.median(w / r["wall_s"] for w, r in zip(other_walls, runs)),
        }
    result["verdict"] = verdict(rtf, ceiling["rtf_ceiling"], cpu, "in-process pipeline")
    if args.out:
        from e3d_zoo.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result, args, note))
    return 0


def render(result: Mapping[str, Any], args: argparse.Namespace, note: str) -> str:
    b, v, med = result["backend"], result["video"], result["median"]
    cpu = result["machine"]["cpu"]
    lines = [f"{result['model']} on {b['backend']} ({b.get('runtime_version', '?')}, {result['precision']}), "
             f"{result['threads']} threads, hop {args.hop}s, {v['width']}x{v['height']}@{v['fps']:g}fps, "
             f"{v['seconds']:.1f}s video at {v['mbit_per_s']:.2f} Mbit/s" + (f"  [{note}]" if note else ""),
             f"  machine: {cpu.get('model', '?')}, {result['cores']} cores, {' '.join(cpu.get('flags', []))}",
             f"  real-time factor: {result['rtf']:.2f}x (median of {args.repeats}; runs "
             + ", ".join(f"{x:.2f}" for x in result["rtf_runs"]) + ")",
             f"  windows: {med['windows']:.0f}; wall {med['wall_s']:.2f}s; per second of video: "
             + ", ".join(f"{k} {x:.1f}" for k, x in result["per_video_second"].items()),
             f"  inference {result['infer_ms_per_window']:.1f} ms/window; same run, backend alone: "
             f"RTF {result['rtf_if_inference_only']:.2f}x, pipeline/backend-alone wall "
             f"{result['pipeline_over_inference_only']:.2f}"]
    if result["macs_per_window"]:
        used = result["peak_used"]
        best = max((x for k, x in used.items() if k != "precision_bound"), key=lambda x: x["gflops"])
        lines.append(f"  ceiling: peak {result['peak_gflops_used']:.1f} GFLOP/s for {result['precision']} "
                     f"({best['engine']}, {best['workload']}; best of both peak measurements), "
                     f"{2 * result['macs_per_window'] / 1e9:.2f} GFLOP per window: the model alone could reach "
                     f"at most {result['rtf_ceiling_model_at_peak']:.2f}x real time; with the decoding "
                     f"({result['decode_only_1thread_cpu_ms_per_video_second']:.0f} CPU-ms per video-second) "
                     f"on the same cores, {result['rtf_ceiling']:.2f}x")
    if "compare_streams" in result:
        c = result["compare_streams"]
        lines.append(f"  with {c['streams']} stream(s), alternating in the same repeats: RTF {c['rtf']:.2f}x "
                     f"(runs " + ", ".join(f"{x:.2f}" for x in c["rtf_runs"]) + f"); paired wall ratio to "
                     f"{args.streams} stream(s): {c['wall_ratio_to_main']:.3f}")
    loads = result["load_avg_1min_runs"]
    lines.append("  load avg (1 min) at start/end of each run: "
                 + ", ".join(f"{a:.1f}/{b_:.1f}" for a, b_ in loads) + f" on {result['cores']} cores")
    lines.append(result["verdict"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
