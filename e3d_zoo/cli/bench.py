"""``e3d-bench``: time a model on runtime backends, build latency tables, validate the predictor.

    e3d-bench e3d_s --backends torch,onnxruntime,openvino --threads 1 [--json]
    e3d-bench --profile-table T.json --frames 8 --size 112 --zoo --sample 10 --calibrate 8
    e3d-bench --validate-predictor --table T.json --n 30 --plot pred_vs_measured.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import BackendError, ConfigError
from ..spec import MAX_FRAMES, MAX_SIZE
from ._common import (NON_NEGATIVE_INT, POSITIVE_INT, add_json_flag, float_in, int_in, print_json,
                      run_cli)

PROG = "e3d-bench"
DEFAULT_BACKENDS = ("torch", "onnxruntime", "openvino")


# ---- peak memory -------------------------------------------------------------------
def _rss_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, so each backend gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---- benchmark mode --------------------------------------------------------------------
def _parse_list(text: str, what: str, cast=str) -> List[Any]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what}: expected a comma-separated list, found {text!r}")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ConfigError(f"--{what}: expected a comma-separated list of {cast.__name__}s, "
                          f"found {text!r}") from None


def _load_on(backend: str, model, spec, workdir: Path, threads: int):
    from ..runtime.base import backend_class, canonical_backend_name, load_backend

    name = canonical_backend_name(backend)
    ok, why = backend_class(name).availability()
    if not ok:
        raise BackendError(f"backend {name!r} is not usable on this machine: {why}")
    if name == "torch":
        return load_backend("torch", model, threads=threads)
    import e3d_export

    if name == "onnxruntime":
        path = e3d_export.export_onnx(model, workdir / "model.onnx", frames=spec.frames, size=spec.size)
        return load_backend(name, path, threads=threads)
    if name == "openvino":
        path = e3d_export.export_openvino(model, workdir / "model.xml", frames=spec.frames,
                                          size=spec.size)
        return load_backend(name, path, threads=threads)
    onnx_path = e3d_export.export_onnx(model, workdir / "model.onnx", frames=spec.frames, size=spec.size)
    from e3d_export.tensorrt import build_trt_engine

    engine = build_trt_engine(onnx_path, workdir / "model.engine")
    return load_backend(name, engine, threads=threads)


def benchmark(target: str, *, backends: Sequence[str], batches: Sequence[int], threads: int,
              frames: Optional[int], size: Optional[int], warmup: int, runs: int,
              rounds: int, num_classes: int = 400, progress: bool = False,
              peaks: str = "full") -> Dict[str, Any]:
    """Latency, throughput and peak memory of ``target`` on each backend (interleaved), the
    machine (CPU, flags, cores, load) and, unless ``peaks="off"``, its fp32 peak at
    ``threads`` (:func:`e3d_runtime.machine.measure_peaks`) with each backend's median as a
    multiple of the roofline ``2 x MACs / peak``."""
    import numpy as np

    from ..latency.profile import interleaved_times, load_average, summarize
    from ..runtime.base import backend_class, canonical_backend_name
    from ..zoo import create_model, spec_for

    names = [canonical_backend_name(b) for b in backends]
    if len(set(names)) != len(names):
        raise ConfigError(f"--backends: listed twice: {backends}")
    for name in names:  # before any export: fail in a second, not after minutes of work
        ok, why = backend_class(name).availability()
        if not ok:
            raise BackendError(f"backend {name!r} is not usable on this machine: {why}")
    spec = spec_for(target, frames=frames, size=size)
    model = create_model(spec, num_classes=num_classes).eval()
    for b in batches:
        if b < 1:
            raise ConfigError(f"--batch: expected sizes >= 1, found {b}")
    results: Dict[str, Any] = {"model": spec.name or str(target), "frames": spec.frames,
                               "size": spec.size, "threads": threads, "runs": runs * rounds,
                               "load_before": load_average(), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="e3d-bench-") as tmp:
        loaded = {}
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            can_peak = _reset_peak_rss()
            rss0 = _rss_kb("VmRSS")
            backend = _load_on(name, model, spec, workdir, threads)
            x = np.random.default_rng(0).standard_normal(
                (max(batches), spec.in_chans, spec.frames, spec.size, spec.size)).astype(np.float32)
            backend.run(x)
            peak = _rss_kb("VmHWM") if can_peak else None
            loaded[name] = backend
            results["backends"][name] = {
                "describe": backend.describe(),
                "peak_rss_mb": None if peak is None else peak / 1024.0,
                "peak_rss_delta_mb": None if peak is None or rss0 is None else (peak - rss0) / 1024.0,
            }
        for batch in batches:
            x = np.random.default_rng(1).standard_normal(
                (batch, spec.in_chans, spec.frames, spec.size, spec.size)).astype(np.float32)
            units = [(loaded[n], x) for n in names]
            cpu: List[List[float]] = []
            times = interleaved_times(units, rounds=rounds, runs_per_round=runs, warmup=warmup, cpu=cpu)
            for n, ts, cs in zip(names, times, cpu):
                s = summarize(ts, cpu_ms=cs)
                p99 = float(np.percentile(ts, 99))
                # cpu_ms: process CPU time per run; with 1 thread, the latency net of time
                # spent waiting for a core that another process holds.
                row = {"median_ms": s["median_ms"], "p90_ms": s["p90_ms"], "p99_ms": p99,
                       "min_ms": s["min_ms"], "spread_p90_p50": s["spread"], "cpu_ms": s["cpu_ms"],
                       "clips_per_s": 1000.0 * batch / s["median_ms"], "runs": len(ts)}
                entry = results["backends"][n]
                entry.setdefault("batches", {})[str(batch)] = row
                if batch == batches[0]:
                    entry.update(row)
        results["load_after"] = load_average()
    ref = names[0]
    for n in names:
        results["backends"][n]["speedup_vs_" + ref] = (results["backends"][ref]["median_ms"]
                                                      / results["backends"][n]["median_ms"])
    from e3d_runtime.machine import bound_gflops, describe, measure_peaks

    from ..complexity import macs

    measured = None if peaks == "off" else measure_peaks(threads, precisions=["fp32"], quick=peaks == "quick")
    results["machine"] = describe(measured)
    results["macs"] = macs(spec, spec.frames, spec.size, num_classes=num_classes)
    if measured is not None:
        peak = bound_gflops(measured, "fp32")
        for n in names:
            for batch, row in results["backends"][n]["batches"].items():
                row["x_roofline"] = row["median_ms"] / (2e3 * int(batch) * results["macs"] / (peak * 1e9))
            results["backends"][n]["x_roofline"] = results["backends"][n]["batches"][str(batches[0])]["x_roofline"]
    results["verdict"] = bench_verdict(results)
    return results


def bench_verdict(res: Dict[str, Any]) -> str:
    """One line against issue 15's goals that a model benchmark can speak to."""
    b = res["backends"]
    parts = [f"verdict ({res['model']}, {res['threads']} thread(s))"]
    if "onnxruntime" in b and "openvino" in b:
        ratio = b["onnxruntime"]["median_ms"] / b["openvino"]["median_ms"]
        parts.append(f"ONNX Runtime = {ratio:.2f}x OpenVINO fp32 (target <= 1.5 for the 2D-lowered export: "
                     f"e3d-export --lower-2d; this benchmark runs the 3D graph)")
    if all("x_roofline" in e for e in b.values()):
        parts.append("x fp32 roofline: " + ", ".join(f"{n} {e['x_roofline']:.2f}" for n, e in b.items()))
    else:
        parts.append("no roofline (--peaks off)")
    return "; ".join(parts)


def _print_bench(res: Dict[str, Any]) -> None:
    cpu = res["machine"]["cpu"]
    print(f"{res['model']}  clip {res['frames']} x {res['size']}^2  threads {res['threads']}  "
          f"load {res['load_before']} -> {res['load_after']}  on {cpu.get('model', '?')}, {cpu['cores']} cores, "
          f"{' '.join(cpu['flags'])}")
    header = (f"{'backend':<12} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'p99 ms':>9} "
              f"{'p90/p50':>8} {'CPU ms':>8} {'clips/s':>9} {'peak RSS MB':>12}")
    print(header)
    print("-" * len(header))
    for name, e in res["backends"].items():
        for batch, row in e["batches"].items():
            peak = e.get("peak_rss_delta_mb")
            print(f"{name:<12} {batch:>5} {row['median_ms']:>10.2f} {row['p90_ms']:>9.2f} "
                  f"{row['p99_ms']:>9.2f} {row['spread_p90_p50']:>8.2f} {row['cpu_ms']:>8.2f} "
                  f"{row['clips_per_s']:>9.1f} "
                  f"{'' if peak is None else f'+{peak:.0f}':>12}")
    print(res["verdict"])


# ---- CLI -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="zoo name (e3d_s) or arch JSON to benchmark")
    p.add_argument("--backends", default="torch,onnxruntime,openvino",
                   help="comma-separated: torch, onnxruntime, openvino, tensorrt")
    p.add_argument("--batch", default="1", help="batch size(s), comma-separated (default 1)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="pinned thread count (default 1)")
    p.add_argument("--frames", type=int_in(1, MAX_FRAMES), help="clip frames (default: the arch's)")
    p.add_argument("--size", type=int_in(1, MAX_SIZE), help="clip size (default: the arch's)")
    p.add_argument("--warmup", type=NON_NEGATIVE_INT, default=3)
    p.add_argument("--runs", type=POSITIVE_INT, default=3, help="timed runs per round per backend")
    p.add_argument("--rounds", type=POSITIVE_INT, default=7,
                   help="interleaved rounds (runs x rounds in all)")
    p.add_argument("--num-classes", type=POSITIVE_INT, default=400)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--peaks", choices=("full", "quick", "off"), default="full",
                   help="measure this machine's fp32 peak at --threads for the roofline (full: best of "
                        "numpy, torch and OpenVINO kernels over several sizes, ~20 s; quick: fewer; off)")
    g = p.add_argument_group("latency tables")
    g.add_argument("--profile-table", metavar="T.json",
                   help="measure missing layer units into this table (resumes an existing one)")
    g.add_argument("--backend", default="openvino", help="backend a new table measures on")
    g.add_argument("--zoo", action="store_true", help="profile the units of e3d_s/m/l")
    g.add_argument("--arch", action="append", help="profile the units of this arch (repeatable)")
    g.add_argument("--sample", type=NON_NEGATIVE_INT, default=0,
                   help="profile N random search-space archs")
    g.add_argument("--calibrate", type=NON_NEGATIVE_INT, default=0,
                   help="fit offset/scale on N end-to-end measured archs (zoo models first)")
    g.add_argument("--statistic", choices=("kernel", "median", "min", "cpu"), default=None,
                   help="what a new table stores as an entry's latency: the runtime's per-layer "
                        "times summed without layout conversions (kernel; OpenVINO only, the "
                        "default there), median wall-clock (the default elsewhere), fastest "
                        "run, or median process CPU time (1 thread only). The others are stored "
                        "beside it.")
    g.add_argument("--runs-per-round", type=POSITIVE_INT, default=3)
    g.add_argument("--max-flops", type=float_in(0, lo_open=True), default=4.0e9,
                   help="sampled archs fit this tinynas-FLOPs budget at 13x160^2 (default 4e9)")
    g.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    v = p.add_argument_group("predictor validation")
    v.add_argument("--validate-predictor", action="store_true")
    v.add_argument("--table", metavar="T.json")
    v.add_argument("--n", type=POSITIVE_INT, default=30, help="random architectures (default 30)")
    v.add_argument("--missing", choices=("measure", "interpolate"), default="measure",
                   help="units of the sampled archs missing from the table: measure them first "
                        "(default) or leave them to interpolation")
    v.add_argument("--same-session", action="store_true",
                   help="re-measure every unit, the calibration networks and the sampled networks "
                        "in one interleaved session (takes the machine's drift between sessions "
                        "out; the table's entries are not used or changed)")
    v.add_argument("--strict", action="store_true",
                   help="a table from another device/runtime is an error, not a warning")
    v.add_argument("--plot", metavar="PNG", help="write the predicted-vs-measured plot")
    v.add_argument("--out", metavar="JSON", help="write the full validation result")
    add_json_flag(p)
    return p


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    modes = sum(bool(x) for x in (args.model, args.profile_table, args.validate_predictor))
    if modes != 1:
        raise ConfigError("give exactly one of: MODEL (benchmark), --profile-table T.json, "
                          "--validate-predictor")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        progress = not (args.json or args.quiet)
        if args.profile_table:
            from ..latency.build import profile_table

            res = profile_table(args.profile_table, frames=args.frames, size=args.size,
                                backend=args.backend, threads=args.threads,
                                statistic=args.statistic, zoo=args.zoo, archs=args.arch or (),
                                sample=args.sample, calibrate=args.calibrate, seed=args.seed,
                                max_flops=args.max_flops, rounds=args.rounds,
                                runs_per_round=args.runs_per_round,
                                num_classes=args.num_classes, progress=progress)
        elif args.validate_predictor:
            from ..latency.validate import validate_predictor

            if not args.table:
                raise ConfigError("--validate-predictor: needs --table T.json (made by --profile-table)")
            res = validate_predictor(args.table, n=args.n, seed=args.seed, frames=args.frames,
                                     size=args.size, missing=args.missing,
                                     same_session=args.same_session, strict=args.strict,
                                     rounds=args.rounds, runs_per_round=args.runs_per_round,
                                     num_classes=args.num_classes, max_flops=args.max_flops,
                                     plot=args.plot, out=args.out, progress=progress)
        else:
            res = benchmark(args.model, backends=_parse_list(args.backends, "backends"),
                            batches=_parse_list(args.batch, "batch", int), threads=args.threads,
                            frames=args.frames, size=args.size, warmup=args.warmup, runs=args.runs,
                            rounds=args.rounds, num_classes=args.num_classes, peaks=args.peaks)
    from ..latency.table import LatencyTableWarning

    notes = [str(w.message) for w in caught if issubclass(w.category, LatencyTableWarning)]
    for n in notes:
        print(f"{PROG}: warning: {n}", file=sys.stderr)
    if notes:
        res["warnings"] = notes
    if args.json:
        print_json(res)
    elif args.profile_table:
        cal = res["calibration"] or {}
        print(f"{res['table']}: {res['entries']} entries ({res['added']} new) on "
              f"{res['environment']['backend']} {res['environment']['runtime_version']}, "
              f"{res['environment']['threads']} thread(s)")
        for st, c in (cal.get("by_statistic") or {}).items():
            if c.get("fitted_on"):
                print(f"calibration ({st}) on {c['fitted_on']} networks: offset {c['offset_ms']:.3f} ms, "
                      f"scale {c['scale']:.3f}, fit MAPE {c.get('fit_mape_pct', float('nan')):.1f}%")
    elif args.validate_predictor:
        print(f"{'arch':<12} {'predicted':>10} {'measured':>10} {'error':>8} {'p90/p50':>8} {'measured units':>14}")
        for r in res["rows"]:
            print(f"{r['name']:<12} {r['predicted_ms']:>10.2f} {r['measured_ms']:>10.2f} "
                  f"{r['error_pct']:>+7.1f}% {r['spread_p90_p50']:>8.2f} {r['coverage'] * 100:>13.0f}%")
        print(f"N={res['n']} at {res['frames']}x{res['size']}^2 ({res['statistic']} of runs"
              f"{', one session' if res.get('protocol') == 'same-session' else ''}): "
              f"{res['within_10pct'] * 100:.0f}% within +-10%, MAPE {res['mape_pct']:.1f}%, "
              f"max |error| {res['max_abs_error_pct']:.1f}%, median p90/p50 "
              f"{res['median_spread_p90_p50']:.2f}, load {res['load']}")
        for k, v in res.items():
            if k.startswith("by_"):
                print(f"  with the {k[3:]} statistic instead: {v['within_10pct'] * 100:.0f}% within "
                      f"+-10%, MAPE {v['mape_pct']:.1f}%")
    else:
        _print_bench(res)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

