"""This machine: its CPU and SIMD units, how loaded it is, and how fast it can compute at best.

Benchmarks compare what a pipeline achieves with what the machine allows; that only
means something when the "allows" is an upper bound. A single sgemm is not one: on an
AVX-512 Zen 4, OpenVINO's convolutions ran E3D-S at ~285 GFLOP/s while the numpy sgemm
that defined the ceiling gave 224, and under load the same sgemm gave 67. So the peak is
the **best** run of several engines and sizes:

* numpy/OpenBLAS sgemm, in a fresh process with ``OPENBLAS_CORETYPE`` and
  ``OPENBLAS_L2_SIZE`` removed (OpenBLAS reads them once, at load time, and a forced
  core type can pick a slower kernel); the kernel it chose is recorded (threadpoolctl);
* ``torch.mm`` (fp32, and bf16 where the CPU has bf16 units), when torch is installed;
* OpenVINO's CPU plugin on a dense MatMul and a 1x1x1 convolution big enough to be
  compute-bound, at f32, at bf16 (``INFERENCE_PRECISION_HINT``, where the CPU has bf16)
  and in INT8 (FakeQuantize'd inputs and weights, the form NNCF writes, which the plugin
  runs on VNNI/AMX integer dot products); the precision it really ran is recorded.

Each engine runs in its own subprocess, one after the other, so one runtime's thread
pool (OpenMP workers spin after a call) never slows the next, and every one uses all the
cores this process may run on. Rates are GFLOP/s (GOP/s for INT8: 2 ops per
multiply-add). :func:`measure_peaks` returns every measurement and, per precision, the
best; :func:`bound_gflops` is the rate no artifact of a precision can beat here.

    python -m e3d_runtime.machine            # CPU, flags, load and peaks as JSON (~20 s)
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

# the SIMD features that decide inference speed, as /proc/cpuinfo names them
SIMD_FLAGS = ("sse4_2", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
              "amx_fp16")
PRECISIONS = ("fp32", "bf16", "int8")
# environment variables that change which OpenBLAS kernel numpy loads
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---- identity ---------------------------------------------------------------------------

def usable_cores() -> int:
    """CPUs this process may run on (the affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_info(flags: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """CPU model, family/model numbers, the SIMD flags of :data:`SIMD_FLAGS` it has, cores.

    ``flags`` replaces the flags read from ``/proc/cpuinfo`` (to ask what a decision
    would be on another CPU, e.g. an AVX2-only one).
    """
    info: Dict[str, Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count(),
                            "cores": usable_cores()}
    have: set = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    keys = {"model name": "model", "vendor_id": "vendor", "cpu family": "family", "model": "model_number"}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in keys and keys[key] not in info:
            info[keys[key]] = value.strip()
        elif key == "flags" and not have:
            have = set(value.split())
        elif not line.strip() and have:  # the first processor's block is enough
            break
    if flags is not None:
        have = set(flags)
        info["flags_simulated"] = True
    info["flags"] = [f for f in SIMD_FLAGS if f in have]
    info["native"] = native_precisions(info["flags"])
    return info


def has_native_bf16(flags: Iterable[str]) -> bool:
    """bf16 dot products in hardware (AVX512-BF16 or AMX-BF16); elsewhere bf16 is emulated."""
    f = set(flags)
    return "avx512_bf16" in f or "amx_bf16" in f


def has_int8_dot(flags: Iterable[str]) -> bool:
    """int8 dot-product instructions (VNNI or AMX-INT8); without them int8 convs widen to
    int16 first and can be slower than fp32 (measured on an AVX2 Zen 1: 1.13x)."""
    f = set(flags)
    return bool(f & {"avx512_vnni", "avx_vnni", "amx_int8"})


def native_precisions(flags: Iterable[str]) -> Dict[str, Optional[str]]:
    """Which unit computes each precision: a flag name, or None where none does."""
    f = set(flags)
    pick = lambda names: next((n for n in names if n in f), None)  # noqa: E731
    return {"fp32": pick(("avx512f", "avx2", "sse4_2")) or "scalar",
            "bf16": pick(("amx_bf16", "avx512_bf16")),
            "int8": pick(("amx_int8", "avx512_vnni", "avx_vnni"))}


def is_target_class(cpu: Mapping[str, Any]) -> bool:
    """A 2-core AVX-512 VNNI machine: the class issue 15's >= 20x real-time target is for."""
    return cpu.get("cores") == 2 and "avx512_vnni" in cpu.get("flags", ())


def load_average() -> List[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not Unix
        return []


def describe(peaks: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What every benchmark JSON records about the machine: CPU, flags, cores, load now,
    and the peaks it used (when given)."""
    out = {"cpu": cpu_info(), "load_avg": load_average(), "python": platform.python_version()}
    if peaks is not None:
        out["peaks"] = dict(peaks)
    return out


# ---- the peaks --------------------------------------------------------------------------

def bound_gflops(peaks: Mapping[str, Any], precision: str = "fp32") -> float:
    """The highest rate an artifact of ``precision`` can compute at here: that precision's
    peak, or fp32's where it is higher (a reduced-precision model runs some layers in
    fp32, and a CPU without native bf16 falls back to fp32)."""
    best = peaks.get("peak", {})
    rates = [best[p]["gflops"] for p in {"fp32", precision} if p in best]
    if not rates:
        raise KeyError(f"no peak measured for {precision!r} or fp32")
    return max(rates)


def measure_peaks(threads: Optional[int] = None, *, engines: Optional[Sequence[str]] = None,
                  precisions: Optional[Sequence[str]] = None, quick: bool = False,
                  flags: Optional[Iterable[str]] = None, timeout: float = 300.0) -> Dict[str, Any]:
    """Every engine x precision x size in its own subprocess; the best per precision.

    ``precisions``: default fp32 everywhere, bf16 where the CPU has native bf16, int8
    always (without VNNI it is still a rate an INT8 artifact could reach). ``quick``:
    fewer sizes and runs, and no torch (whose import alone takes seconds): tests; the result
    is then a rougher, lower, bound. An engine that is not installed is listed under
    ``skipped`` with the reason.
    """
    threads = int(threads or usable_cores())
    engines = engines or (("numpy", "openvino") if quick else ("numpy", "torch", "openvino"))
    cpu = cpu_info(flags)
    if precisions is None:
        precisions = ["fp32", "int8"] + (["bf16"] if has_native_bf16(cpu["flags"]) else [])
    t0 = time.perf_counter()
    results: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    for engine in engines:
        wanted = [p for p in precisions if p in _ENGINE_PRECISIONS[engine]]
        if not wanted:
            continue
        why = _missing(engine)
        if why:
            skipped.append({"engine": engine, "reason": why})
            continue
        env = dict(os.environ)
        for key in OPENBLAS_OVERRIDES:
            env.pop(key, None)
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(threads)
        cmd = [sys.executable, "-m", "e3d_runtime.machine", "--worker", engine, "--threads", str(threads),
               "--precisions", ",".join(wanted)] + (["--quick"] if quick else [])
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            skipped.append({"engine": engine, "reason": f"did not finish in {timeout:.0f} s"})
            continue
        if p.returncode != 0:
            tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
            skipped.append({"engine": engine, "reason": f"worker failed: {tail}"})
            continue
        results.extend(json.loads(p.stdout.strip().splitlines()[-1]))
    peak: Dict[str, Dict[str, Any]] = {}
    for r in results:
        p = r["precision"]
        if p not in peak or r["gflops_best"] > peak[p]["gflops"]:
            peak[p] = {"gflops": r["gflops_best"], "engine": r["engine"], "workload": r["workload"]}
    return {"threads": threads, "quick": quick, "measurements": results, "peak": peak,
            "skipped": skipped, "seconds": round(time.perf_counter() - t0, 1),
            "cpu_model": cpu.get("model"), "flags": cpu["flags"]}


_ENGINE_PRECISIONS = {"numpy": ("fp32",), "torch": ("fp32", "bf16"), "openvino": ("fp32", "bf16", "int8")}


def _missing(engine: str) -> str:
    import importlib.util

    module = {"numpy": "numpy", "torch": "torch", "openvino": "openvino"}[engine]
    return "" if importlib.util.find_spec(module) is not None else f"{module} is not installed"


# ---- the workers (run as `python -m e3d_runtime.machine --worker ENGINE`) ----------------

def _time_best(fn: Callable[[], Any], min_runs: int, min_seconds: float) -> List[float]:
    for _ in range(2):  # first-call allocations, page faults, thread-pool start
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return times


def _row(engine: str, precision: str, workload: str, ops: float, times: List[float], **extra: Any) -> Dict[str, Any]:
    return {"engine": engine, "precision": precision, "workload": workload, "gop": round(ops / 1e9, 3),
            "gflops_best": round(ops / min(times) / 1e9, 1),
            "gflops_median": round(ops / statistics.median(times) / 1e9, 1), "runs": len(times), **extra}


def _numpy_worker(threads: int, precisions: Sequence[str], quick: bool) -> List[Dict[str, Any]]:
    import numpy as np

    kernel: Dict[str, Any] = {}
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            kernel = {k: blas[0].get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
    except ImportError:
        kernel = {"note": "threadpoolctl not installed: kernel not identified"}
    rows = []
    for n in ((1024,) if quick else (1024, 2048, 3072)):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        times = _time_best(lambda: np.matmul(a, b, out=c), 3 if quick else 5, 0.2 if quick else 1.0)
        rows.append(_row("numpy", "fp32", f"sgemm {n}x{n}x{n}", 2.0 * n ** 3, times, blas=kernel,
                         env_overrides_removed=[k for k in OPENBLAS_OVERRIDES if k not in os.environ]))
    return rows


def _torch_worker(threads: int, precisions: Sequence[str], quick: bool) -> List[Dict[str, Any]]:
    import torch

    torch.set_num_threads(threads)
    rows = []
    for precision in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        for n in ((1024,) if quick else (1024, 2048)):
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g).to(dtype)
            b = torch.randn(n, n, generator=g).to(dtype)
            c = torch.empty(n, n, dtype=dtype)
            with torch.inference_mode():
                times = _time_best(lambda: torch.mm(a, b, out=c), 3 if quick else 5, 0.2 if quick else 1.0)
            rows.append(_row("torch", precision, f"mm {n}x{n}x{n}", 2.0 * n ** 3, times,
                             torch_version=torch.__version__))
    return rows


def _openvino_worker(threads: int, precisions: Sequence[str], quick: bool) -> List[Dict[str, Any]]:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as opset
    core = ov.Core()
    rng = np.random.default_rng(0)

    def fake_quantize(node: Any, low: float, high: float, levels: int) -> Any:
        lo, hi = opset.constant(np.float32(low)), opset.constant(np.float32(high))
        return opset.fake_quantize(node, lo, hi, lo, hi, levels)

    def matmul(m: int, k: int, n: int, int8: bool):
        x = opset.parameter([m, k], ov.Type.f32, name="x")
        w = opset.constant(rng.uniform(-1, 1, (n, k)).astype(np.float32))
        src, wq = (fake_quantize(x, 0.0, 4.0, 256), fake_quantize(w, -1.0, 1.0, 255)) if int8 else (x, w)
        out = opset.matmul(src, wq, False, True)
        return ov.Model([out], [x], "peak_matmul"), rng.uniform(0, 4, (m, k)).astype(np.float32), 2.0 * m * k * n

    def conv1x1(c_in: int, c_out: int, thw: tuple, int8: bool):
        x = opset.parameter([1, c_in, *thw], ov.Type.f32, name="x")
        w = opset.constant(rng.uniform(-1, 1, (c_out, c_in, 1, 1, 1)).astype(np.float32))
        src, wq = (fake_quantize(x, 0.0, 4.0, 256), fake_quantize(w, -1.0, 1.0, 255)) if int8 else (x, w)
        out = opset.convolution(src, wq, [1, 1, 1], [0, 0, 0], [0, 0, 0], [1, 1, 1])
        voxels = int(np.prod(thw))
        return (ov.Model([out], [x], "peak_conv1x1x1"),
                rng.uniform(0, 4, (1, c_in, *thw)).astype(np.float32), 2.0 * c_in * c_out * voxels)

    workloads = [("matmul 1024x1024x1024", lambda q: matmul(1024, 1024, 1024, q))]
    if not quick:
        workloads += [("matmul 2048x2048x2048", lambda q: matmul(2048, 2048, 2048, q)),
                      ("conv 1x1x1 256->1024 over 13x20x20", lambda q: conv1x1(256, 1024, (13, 20, 20), q)),
                      ("conv 1x1x1 512->512 over 8x32x32", lambda q: conv1x1(512, 512, (8, 32, 32), q))]
    rows = []
    for precision in precisions:
        hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]
        for name, build in workloads:
            model, data, ops_count = build(precision == "int8")
            compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": hint})
            request = compiled.create_infer_request()
            times = _time_best(lambda: request.infer({0: data}), 3 if quick else 5, 0.2 if quick else 1.0)
            rows.append(_row("openvino", precision, name, ops_count, times, openvino_version=ov.get_version(),
                             ran_as=_main_kernel(compiled)))
    return rows


def _main_kernel(compiled: Any) -> Dict[str, str]:
    """The plugin's kernel and runtime precision for the graph's compute node: proof that an
    "int8" or "bf16" row really ran in that precision."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = str(info["layerType"].astype(str)) if "layerType" in info else ""
        if layer in ("FullyConnected", "Convolution", "MatMul"):
            return {"layer": layer,
                    "kernel": str(info["primitiveType"].astype(str)) if "primitiveType" in info else "?",
                    "precision": str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "?"}
    return {}


_WORKERS = {"numpy": _numpy_worker, "torch": _torch_worker, "openvino": _openvino_worker}


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m e3d_runtime.machine", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="default: every usable core")
    p.add_argument("--quick", action="store_true", help="fewer sizes and runs (a rougher, lower bound)")
    p.add_argument("--precisions", default=None, help="comma-separated subset of fp32,bf16,int8")
    p.add_argument("--worker", choices=sorted(_WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    wanted = args.precisions.split(",") if args.precisions else None
    if args.worker:
        print(json.dumps(_WORKERS[args.worker](args.threads or usable_cores(), wanted or ["fp32"], args.quick)))
        return 0
    print(json.dumps({**describe(), "peaks": measure_peaks(args.threads, precisions=wanted, quick=args.quick)},
                     indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
