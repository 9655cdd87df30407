"""The edge install's numbers (issue 16): its size and install time, every CLI's start-up,
E3D-S's time to first prediction and the streaming CLI's real-time factor with start-up.

    python -m e3d_eval.bench_edge --json docs/pipeline/edge.json        # ~5 min on 2 cores
    python -m e3d_eval.bench_edge --only-stream --source runs/synthetic/e3d_s_160/model \
        --held-out synthetic --json docs/pipeline/edge_stream.json      # the 20x check (issue 15)

What it does, in order (every figure is a median over ``--repeats`` runs):

1. Builds a fresh venv and times ``pip install ./runtime[openvino,video]`` into it from
   pip's package cache, pinned to the versions installed here; reports ``du`` of the venv
   (the documented edge install: numpy, PyAV, OpenVINO; no torch).
2. ``--help`` of every CLI as a process (wall clock from spawn to exit), and which heavy
   modules (torch, timm, a runtime, PyAV) that command imports; e3d-infer and e3d-export
   from the edge venv, the zoo's commands from this environment.
3. Exports E3D-S with OpenVINO: random weights (speed does not depend on them) at fp32, or
   with ``--source`` trained weights through ``--precision auto`` judged on ``--held-out``
   clips (e3d_export.precision), so the folder's default is the fastest artifact that
   still agrees with fp32 here. Encodes a ``--seconds`` 640x360 30 fps H.264 video
   (e3d_eval.bench_pipeline's, 1 Mbit/s), and runs ``e3d-infer VIDEO --artifact FOLDER
   --mode stream --hop 0.5`` as a user would (the edge venv's; with ``--only-stream`` the
   edge venv of ``--workdir`` if it exists, else this environment's): time from spawn to
   the first printed prediction, and the whole command's wall time, whose ratio to the
   video's duration is the real-time factor including start-up. Beside it, the ceiling
   (e3d_eval.bench_pipeline.ceilings: the machine's peak for the artifact's precision,
   measured before and after the runs, and one-thread decoding of the same video) and the
   verdict against issue 15's goals.
4. The stages before the first prediction, timed inside one edge-venv process (imports,
   model compile with and without OpenVINO's compiled-blob cache, first decode,
   preprocess, inference): cumulative ms since the interpreter started.
5. Preprocessing alone: ms per 640x360 frame on one core, numpy vs torchvision's uint8
   kernel (the implementation before this issue), interleaved.

The JSON records the CPU model and flags, cores, the peaks used and the load average around
each step and each stream run: these machines are shared, so compare figures from one run,
and re-measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
EDGE_EXTRAS = "openvino,video"
HEAVY = ("torch", "timm", "torchvision", "openvino", "onnxruntime", "av")
# console script -> (where it runs, module holding main)
# each command and the environment it is timed in
COMMANDS = {"e3d-infer": "edge", "e3d-export": "edge",
            "e3d-zoo": "full", "e3d-search": "full", "e3d-bench": "full", "e3d-train": "full"}


def _median_ms(samples: Sequence[float]) -> float:
    return round(1000.0 * statistics.median(samples), 1)


def build_edge_venv(where: Path) -> Dict[str, Any]:
    """A fresh venv with e3d-runtime[openvino,video] from pip's cache; its size and times."""
    from importlib.metadata import PackageNotFoundError, version

    if where.exists():
        shutil.rmtree(where)
    t0 = time.perf_counter()
    venv.EnvBuilder(with_pip=True).create(where)
    t_venv = time.perf_counter() - t0
    pins = where.parent / "edge-pins.txt"
    lines = []
    for name in ("numpy", "openvino", "openvino-telemetry", "av", "pillow", "tqdm", "packaging"):
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    pins.write_text("\n".join(lines) + "\n")
    src = shutil.copytree(ROOT / "runtime", where.parent / "e3d-runtime-src", dirs_exist_ok=True,
                          ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    t0 = time.perf_counter()
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
                    "--disable-pip-version-check", "-c", str(pins), f"{src}[{EDGE_EXTRAS}]"],
                   check=True, timeout=900)
    t_pip = time.perf_counter() - t0
    du = subprocess.run(["du", "-sk", str(where)], capture_output=True, text=True, check=True)
    listed = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True)
    packages = {d["name"]: d["version"] for d in json.loads(listed.stdout)}
    return {"extras": EDGE_EXTRAS, "venv_create_s": round(t_venv, 2), "pip_install_s": round(t_pip, 2),
            "size_mib": round(int(du.stdout.split()[0]) / 1024, 1), "packages": packages,
            "torch_installed": any(n.lower().startswith(("torch", "nvidia-")) for n in packages)}


def help_startup(bins: Dict[str, Path], repeats: int) -> Dict[str, Any]:
    out = {}
    for name, side in COMMANDS.items():
        exe = bins[side] / name
        if not exe.exists():
            continue
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([str(exe), "--help"], stdout=subprocess.DEVNULL, check=True, timeout=120)
            times.append(time.perf_counter() - t0)
        # through the console script's declared entry point, as the installed command starts
        probe = (f"import json, sys\nfrom importlib.metadata import entry_points\n"
                 f"main = entry_points(group='console_scripts')[{name!r}].load()\n"
                 f"try:\n    main(['--help'])\n"
                 f"except SystemExit:\n    pass\nprint()\n"
                 f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
        p = subprocess.run([str(bins[side] / "python"), "-c", probe], capture_output=True, text=True,
                           check=True, timeout=120)
        out[name] = {"env": side, "help_median_ms": _median_ms(times), "runs": repeats,
                     "heavy_modules_imported": json.loads(p.stdout.strip().splitlines()[-1])}
    return out


def preprocess_times(repeats: int) -> Dict[str, Any]:
    """ms per 640x360 frame -> E3D-S's 160x160 input, one core: the numpy implementation,
    and torchvision's uint8 kernel (the implementation before 2026-11-29) when installed,
    interleaved so both see the same load."""
    import numpy as np

    from e3d_runtime.video.transforms import EvalTransform

    clip = np.random.default_rng(0).integers(0, 256, (13, 360, 640, 3), dtype=np.uint8)
    tf = EvalTransform(160)
    runs: Dict[str, Any] = {"numpy": lambda: tf(clip)}
    try:
        import torch
        from torchvision.transforms.v2 import functional as TF

        torch.set_num_threads(1)
        mean = torch.tensor(tf.mean).view(1, 3, 1, 1)
        std = torch.tensor(tf.std).view(1, 3, 1, 1)

        def torchvision_uint8():
            x = TF.resize(torch.from_numpy(clip).permute(0, 3, 1, 2), [160], antialias=True)
            x = TF.center_crop(x, [160, 160]).float().div_(255).sub_(mean).div_(std)
            return x.permute(1, 0, 2, 3).contiguous()

        runs["torchvision_uint8"] = torchvision_uint8
    except ImportError:
        pass
    samples: Dict[str, List[float]] = {k: [] for k in runs}
    for _ in range(max(repeats, 3) * 3):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) / len(clip))
    return {k: {"ms_per_frame_median": round(1000 * statistics.median(v[1:]), 3), "runs": len(v) - 1}
            for k, v in samples.items()}


# the stages before the first prediction, timed inside one process of the edge venv
_BREAKDOWN = """
import json, sys, time
t0 = time.perf_counter(); marks = {}
def mark(name): marks[name] = round(1000 * (time.perf_counter() - t0), 1)
import numpy as np; mark("import_numpy")
from e3d_runtime.video.pipeline import VideoClassifier; mark("import_pipeline")
import openvino; mark("import_openvino")
clf = VideoClassifier.from_artifact(sys.argv[1], backend_options={"cache_dir": sys.argv[3]} if sys.argv[3] else None)
mark("compile_model")
from e3d_runtime.video.decode import VideoReader
reader = VideoReader(sys.argv[2]); mark("import_av_open_video")
frames, stride, T = [], clf.sampling.frame_stride, clf.sampling.num_frames
for fr in reader.frames(keep=lambda i, t: i % stride == 0):
    if fr.image is not None:
        frames.append(fr.image)
    if len(frames) == T:
        break
mark("decode_first_window")
x = clf.transform(np.stack(frames)); mark("preprocess_first_window")
clf.predict(x[None]); mark("infer_first_window")
print(json.dumps(marks))
"""


def first_prediction_breakdown(python: Path, folder: Path, video: Path, repeats: int,
                               cache_dir: str = "") -> Dict[str, Any]:
    """Cumulative ms since interpreter start at each stage (median per stage)."""
    runs = []
    for _ in range(repeats):
        p = subprocess.run([str(python), "-c", _BREAKDOWN, str(folder), str(video), cache_dir],
                           capture_output=True, text=True, check=True, timeout=300)
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def stream_runs(exe: Path, video: Path, folder: Path, seconds: float, repeats: int,
                extra: Sequence[str] = (), variants: Optional[Dict[str, Sequence[str]]] = None) -> Dict[str, Any]:
    """Spawn-to-first-prediction and whole-command wall time of e3d-infer in stream mode.

    ``variants`` (name -> extra e3d-infer arguments) run interleaved with the main command,
    one run of each per repeat, so they see the same load; each gets its own figures
    under ``variants``."""
    commands = {"main": list(extra), **{k: list(v) for k, v in (variants or {}).items()}}
    runs: Dict[str, Dict[str, list]] = {k: {"first": [], "total": [], "loads": []} for k in commands}
    windows = 0
    for _ in range(repeats):
        for name, args in commands.items():
            r = runs[name]
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(exe), str(video), "--artifact", str(folder), "--mode", "stream",
                                     "--hop", "0.5", "--no-progress", *args],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            r["first"].append(time.perf_counter() - t0)
            rest = proc.stdout.read()
            if proc.wait() != 0 or not line:
                raise RuntimeError(f"e3d-infer {' '.join(args)} failed: {line}{rest[-500:]}")
            r["total"].append(time.perf_counter() - t0)
            r["loads"].append([round(load0, 2), round(os.getloadavg()[0], 2)])
            windows = 1 + rest.count("\n")

    def summary(name: str) -> Dict[str, Any]:
        r = runs[name]
        wall = statistics.median(r["total"])
        return {"first_prediction_median_ms": _median_ms(r["first"]),
                "first_prediction_all_ms": [round(1000 * t, 1) for t in r["first"]],
                "wall_median_s": round(wall, 3), "wall_all_s": [round(t, 3) for t in r["total"]],
                "windows": windows, "rtf_including_startup": round(seconds / wall, 2),
                "rtf_all": [round(seconds / t, 2) for t in r["total"]], "runs": repeats,
                "load_avg_1min_per_run": r["loads"], "extra_args": commands[name]}

    out = summary("main")
    if variants:
        out["variants"] = {k: summary(k) for k in variants}
    return out


def stream_ceiling(folder: Path, video: Path, seconds: float, windows: int, quick: bool = False,
                   decoder_resize: bool = False) -> Dict[str, Any]:
    """What e3d-infer's default artifact of ``folder`` could reach here at most (see
    e3d_eval.bench_pipeline): the machine's peak for its precision, one-thread decoding.

    ``decoder_resize``: the measured command runs with ``--decoder-resize``, which
    converts frames at the model's resize size: the decoding counted here does the same,
    else the ceiling would count more work than the command does."""
    from e3d_eval.bench_pipeline import decode_core_seconds
    from e3d_runtime.machine import measure_peaks, usable_cores
    from e3d_runtime.manifest import (MANIFEST_NAME, artifact_entry_for, artifact_precision,
                                      load_manifest, preprocess_cfg)
    from e3d_runtime.video.transforms import EvalTransform
    from e3d_zoo import complexity
    from e3d_zoo.spec import ArchSpec

    manifest = load_manifest(folder)
    _, key, entry = artifact_entry_for(folder, manifest, ["openvino"])
    precision = artifact_precision(entry)
    pre = manifest["preprocess"]
    spec = ArchSpec.from_dict(manifest["source"]["arch"])
    macs = complexity.macs(spec, pre["num_frames"], pre["input_size"][1], num_classes=pre["num_classes"])
    cores = usable_cores()
    peaks = [measure_peaks(cores, precisions=sorted({"fp32", precision}), quick=quick)]
    # the size e3d-infer's stream mode hands the decoder (e3d_runtime.video.streaming)
    short_side = (EvalTransform.from_cfg(preprocess_cfg(pre, str(folder / MANIFEST_NAME))).resize_size
                  if decoder_resize else None)
    decode_s = min(decode_core_seconds(video, pre["frame_stride"], short_side) for _ in range(2))
    return {"artifact": key, "file": entry["file"], "precision": precision, "macs_per_window": macs,
            "peaks": peaks, "decode_only_1thread_cpu_s": decode_s,
            "decode_converted_short_side": short_side, "cores": cores,
            "windows": windows, "seconds": seconds}


def finish_ceiling(c: Dict[str, Any], rtf: float, quick: bool = False) -> Dict[str, Any]:
    """Add the second peak measurement (after the runs), the ceilings and the verdict."""
    from e3d_eval.bench_pipeline import ceilings, verdict
    from e3d_runtime.machine import bound_gflops, cpu_info, measure_peaks

    c["peaks"].append(measure_peaks(c["cores"], precisions=sorted({"fp32", c["precision"]}), quick=quick))
    c["peak_gflops_used"] = max(bound_gflops(pk, c["precision"]) for pk in c["peaks"])
    c.update(ceilings(c["seconds"], c["windows"], c["macs_per_window"], c["peak_gflops_used"],
                      c["decode_only_1thread_cpu_s"], c["cores"]))
    c["fraction_of_ceiling"] = rtf / c["rtf_ceiling"]
    c["verdict"] = verdict(rtf, c["rtf_ceiling"], cpu_info(), "e3d-infer, start-up included")
    return c


def export_folder(work: Path, args: argparse.Namespace) -> Path:
    """The folder e3d-infer runs: E3D-S fp32 with random weights, or ``--source`` through
    ``--precision auto`` on ``--held-out`` clips."""
    from e3d_export import export

    if args.source:
        folder = work / f"{Path(args.source).name}_auto"
        if not (folder / "manifest.json").is_file():
            print(f"exporting {args.source} with --precision auto ...", file=sys.stderr)
            export(args.source, folder, openvino=True, precision="auto", held_out=args.held_out,
                   n_calibration=args.calibration_clips,
                   log=lambda msg: print(msg, file=sys.stderr))
        return folder
    folder = work / f"{args.model}_openvino"
    if not (folder / "manifest.json").is_file():
        print(f"exporting {args.model} ...", file=sys.stderr)
        export(args.model, folder, openvino=True)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.bench_edge", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seconds", type=float, default=60.0, help="video length (640x360, 30 fps)")
    p.add_argument("--workdir", help="keep the venv, export and video here (default: a temp dir)")
    p.add_argument("--model", default="e3d_s")
    p.add_argument("--source", help="trained weights to export with --precision auto (a save-pretrained "
                   "folder or checkpoint of --model's architecture) instead of random fp32 weights")
    p.add_argument("--held-out", default="synthetic",
                   help="with --source: the held-out clips auto-precision judges agreement on "
                        "(default synthetic: the synthetic benchmark's val split)")
    p.add_argument("--calibration-clips", type=int, default=32, help="with --source: INT8 calibration clips")
    p.add_argument("--only-stream", action="store_true",
                   help="only the streaming runs and their ceiling (no venv build, --help or stage timings)")
    p.add_argument("--quick-peaks", action="store_true", help="tests: a quicker, lower, peak measurement")
    p.add_argument("--infer-arg", action="append", default=[], metavar="ARG",
                   help="extra e3d-infer argument for the streaming runs (repeatable), e.g. --infer-arg=--threads=1")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                   help="also run e3d-infer with these extra arguments (space-separated), interleaved with "
                        "the main command in every repeat; repeatable, e.g. --variant 'fp32=--precision fp32'")
    args = p.parse_args(argv)
    from e3d_runtime.machine import describe

    work = Path(args.workdir or tempfile.mkdtemp(prefix="e3d-edge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"machine": describe(), "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    edge_bin = work / "edge-venv" / "bin"
    bins = {"edge": edge_bin, "full": Path(sys.executable).parent}
    if not args.only_stream:
        print("building the edge venv ...", file=sys.stderr)
        result["install"] = build_edge_venv(work / "edge-venv")
        result["preprocess"] = preprocess_times(args.repeats)
        print("timing --help ...", file=sys.stderr)
        result["help"] = help_startup(bins, args.repeats)

    from e3d_eval.bench_pipeline import make_video

    folder = export_folder(work, args)
    video = make_video(work / f"video_{int(args.seconds)}s_640x360_30fps_1M.mp4", args.seconds,
                       bitrate="1M")
    side = "edge" if (edge_bin / "e3d-infer").exists() else "full"
    if not args.only_stream:
        print("first prediction, by stage ...", file=sys.stderr)
        edge_python = bins["edge"] / "python"
        cache = work / "ov-cache"
        result["first_prediction_stages_ms"] = {
            "compile": first_prediction_breakdown(edge_python, folder, video, args.repeats),
            "compiled_blob_cached": first_prediction_breakdown(edge_python, folder, video, args.repeats,
                                                               str(cache))}
    print(f"streaming ({side} environment's e3d-infer) ...", file=sys.stderr)
    stream_runs(bins[side] / "e3d-infer", video, folder, args.seconds, 1, args.infer_arg)  # warm-up: blob cache, page cache
    ceiling = stream_ceiling(folder, video, args.seconds, 0, quick=args.quick_peaks,
                             decoder_resize="--decoder-resize" in args.infer_arg)
    variants = {}
    for item in args.variant:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            p.error(f"--variant: expected NAME=ARGS, found {item!r}")
        variants[name] = rest.split()
    result["stream"] = stream_runs(bins[side] / "e3d-infer", video, folder, args.seconds, args.repeats,
                                   args.infer_arg, variants)
    result["stream"]["environment"] = side
    ceiling["windows"] = result["stream"]["windows"]
    result["stream_ceiling"] = finish_ceiling(ceiling, result["stream"]["rtf_including_startup"],
                                              quick=args.quick_peaks)
    result["verdict"] = result["stream_ceiling"]["verdict"]
    result["video"] = {"seconds": args.seconds, "size": [640, 360], "fps": 30, "bitrate_cap": "1M",
                       "mbit_per_s": round(video.stat().st_size * 8 / args.seconds / 1e6, 2)}
    result["model"] = args.source or args.model
    result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2)
    if args.json:
        from e3d_runtime.atomic import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    print(result["verdict"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
