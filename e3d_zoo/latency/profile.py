"""Measure layer configurations and whole networks on a runtime backend.

Every measurement goes through the deployment path: the unit is built from
``model.py`` (the same modules the network uses), exported by ``e3d_export`` (BN
folded, ONNX, OpenVINO IR) and run by the ``e3d_zoo.runtime`` backend, so a table
entry times exactly the graph a user would deploy.

Noise: the machines are shared, so units are measured in *interleaved rounds*: a
chunk of loaded units is timed round-robin, ``runs_per_round`` runs each, for
``rounds`` rounds, and the median over all runs is kept, with p90/p50. A burst of
load from another process then hits every unit of the chunk a little instead of one
unit a lot. Threads are pinned (default 1) and recorded in the table.
"""
from __future__ import annotations

import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import BackendError, LatencyTableError
from ..spec import ArchSpec
from .table import STATISTICS, LatencyTable, LayerKey

PROFILE_BACKENDS = ("openvino", "onnxruntime", "torch")
KERNEL_BACKENDS = ("openvino",)


# ---- the unit each key stands for -------------------------------------------------

def layer_module(key: LayerKey):
    """The nn.Module a key times: the network's own block classes, in eval mode."""
    import torch.nn as nn

    from ..model import ConvBnAct3d, ResidualK1DWK1

    if key.kind == "conv":
        mod: nn.Module = ConvBnAct3d(key.cin, key.cout, key.kt, key.k, key.stride)
    elif key.kind == "res":
        mod = ResidualK1DWK1(key.cin, key.cout, key.btn, key.kt, key.k, key.stride)
    elif key.kind == "head":
        mod = _HeadOnly(key.cin, key.btn, key.cout, key.t, key.h)
    else:  # pragma: no cover - LayerKey.parse rejects other kinds
        raise LatencyTableError(f"unknown layer kind {key.kind!r}")
    mod.in_chans = key.cin  # what e3d_export reads to shape the example input
    return mod.eval()


def _HeadOnly(features: int, hidden: int, classes: int, frames: int, size: int):
    """E3D's classifier head (pool -> fc -> swish -> fc), taken from an E3D instance."""
    import torch.nn as nn

    from ..model import E3D

    spec = ArchSpec.from_dict({"frames": frames, "size": max(size, 1), "head_hidden": hidden,
                               "blocks": [{"class": "Conv3DKXBNRELU", "in": features,
                                           "out": features, "s": 1, "kt": 1, "k": 1}]})
    net = E3D(spec, num_classes=classes)

    class HeadOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_head(x)

    return HeadOnly()


def reference_key(frames: int) -> LayerKey:
    """The drift reference: a mid-size residual layer timed in every measuring session.

    Load from other processes comes and goes over the minutes a table takes; every
    chunk of units and every session of whole networks also times this unit, and the
    predictor rescales each entry by (nominal reference / its session's reference),
    so entries measured at different times share one time base.
    """
    return LayerKey("res", 32, 32, 96, 3, 3, 1, frames, 14, 14)


REF_FIELDS = ("median_ms", "min_ms", "cpu_ms", "kernel_ms")


def _ref_stats(summary: Dict[str, float]) -> Dict[str, float]:
    return {f: summary[f] for f in REF_FIELDS if f in summary}


def _overhead_module():
    """The smallest graph a backend can run: what one call costs with no work in it."""
    return layer_module(LayerKey("conv", 1, 1, 0, 1, 1, 1, 1, 1, 1))


# ---- loading units on a backend ---------------------------------------------------

class Loader:
    """Turns an nn.Module into a loaded :class:`~e3d_zoo.runtime.base.Backend`."""

    def __init__(self, backend: str = "openvino", threads: int = 1, workdir: Optional[Path] = None,
                 *, kernel: bool = False):
        from ..runtime.base import backend_class, canonical_backend_name

        self.backend = canonical_backend_name(backend)
        if self.backend not in PROFILE_BACKENDS:
            raise BackendError(f"profiling backend: expected one of {list(PROFILE_BACKENDS)}, "
                               f"found {backend!r}")
        cls = backend_class(self.backend)
        ok, why = cls.availability()
        if not ok:
            raise BackendError(f"backend {self.backend!r} is not usable here: {why}")
        if kernel and self.backend not in KERNEL_BACKENDS:
            raise BackendError(f"statistic 'kernel' needs per-layer performance counters, which only "
                               f"the {'/'.join(KERNEL_BACKENDS)} backend has; found {self.backend!r}")
        #: layer units are loaded with per-layer counters on (statistic "kernel")
        self.kernel = bool(kernel)
        self.threads = int(threads)
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="e3d-latency-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self._n = 0
        self._refs: Dict[int, tuple] = {}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @classmethod
    def for_table(cls, table: LatencyTable, workdir: Optional[Path] = None) -> "Loader":
        """A loader that measures units the way ``table``'s entries were measured."""
        return cls(table.backend, table.threads, workdir,
                   kernel=table.settings.get("statistic") == "kernel")

    def load(self, module, frames: int, size: int, *, deployable: bool = True,
             profile: bool = False):
        """Export ``module`` for the backend and load it.

        ``deployable=False`` (layer units): plain ONNX without the onnxslim pass, read by
        OpenVINO directly. The operators are the same (BN folded, conv/ReLU/add) and
        OpenVINO applies its own graph passes either way; it loads ~5x faster than an
        IR conversion, which matters for tables of hundreds of units. Whole networks
        use the deployable artifact (``e3d_export.export_openvino``), so the predictor
        validation also checks that units and deployed networks agree.
        """
        from ..runtime.base import load_backend

        if self.backend == "torch":
            return load_backend("torch", module, threads=self.threads)
        import e3d_export

        self._n += 1
        if self.backend == "openvino" and deployable:
            path = e3d_export.export_openvino(module, self.workdir / f"u{self._n}.xml",
                                              frames=frames, size=size, dynamic_batch=False)
        else:
            path = e3d_export.export_onnx(module, self.workdir / f"u{self._n}.onnx",
                                          frames=frames, size=size, dynamic_batch=False,
                                          simplify=deployable)
        return load_backend(self.backend, path, threads=self.threads,
                            **({"profile": True} if profile else {}))

    def load_key(self, key: LayerKey):
        return self.load(layer_module(key), key.t, key.h, deployable=False, profile=self.kernel)

    def reference(self, frames: int) -> tuple:
        """(backend, input) of the drift reference unit, loaded once per loader."""
        if frames not in self._refs:
            key = reference_key(frames)
            unit = self.load_key(key)
            self._refs[frames] = (unit, _input_for(unit, (1, key.cin, key.t, key.h, key.w)))
        return self._refs[frames]

    def load_spec(self, spec: ArchSpec, frames: int, size: int, num_classes: int = 400):
        from ..model import E3D

        return self.load(E3D(spec, num_classes=num_classes).eval(), frames, size)


# ---- interleaved timing -----------------------------------------------------------

def _input_for(backend, shape: Sequence[int]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def interleaved_times(units: Sequence[tuple[Any, np.ndarray]], *, rounds: int = 5,
                      runs_per_round: int = 3, warmup: int = 2,
                      cpu: Optional[List[List[float]]] = None,
                      kernel: Optional[List[List[float]]] = None,
                      shuffle: Optional[random.Random] = None) -> List[List[float]]:
    """Wall-clock ms of every run of every unit, timed round-robin.

    ``cpu``: a list that receives, per unit, the process CPU time of each run (ms).
    ``kernel``: receives, per unit, each run's summed layer times (ms) for backends
    loaded with per-layer counters on, an empty list for the others.
    ``shuffle``: visit the units in a new random order every round. A fixed order can
    alias with a periodic load (another process's own benchmark loop) and put one unit
    in the busy slot round after round; results stay in ``units`` order either way.
    """
    for backend, x in units:
        for _ in range(warmup):
            backend.run(x)
    times: List[List[float]] = [[] for _ in units]
    cpu_times: List[List[float]] = [[] for _ in units]
    kernel_times: List[List[float]] = [[] for _ in units]
    profiled = [bool(getattr(backend, "profile", False)) for backend, _ in units]
    order = list(range(len(units)))
    for _ in range(rounds):
        if shuffle is not None:
            shuffle.shuffle(order)
        for i in order:
            backend, x = units[i]
            for _ in range(runs_per_round):
                c0 = time.process_time()
                t0 = time.perf_counter()
                backend.run(x)
                times[i].append((time.perf_counter() - t0) * 1000.0)
                cpu_times[i].append((time.process_time() - c0) * 1000.0)
                if profiled[i]:
                    kernel_times[i].append(backend.kernel_ms())
    if cpu is not None:
        cpu[:] = cpu_times
    if kernel is not None:
        kernel[:] = kernel_times
    return times


#: the whole-network figure each unit statistic predicts: per-layer kernel sums of
#: units add up to a network's wall-clock latency, not to its kernel sum
NETWORK_FIELD = {"median": "median_ms", "min": "min_ms", "cpu": "cpu_ms", "kernel": "median_ms"}


def summarize(times_ms: Sequence[float], statistic: str = "median",
              cpu_ms: Optional[Sequence[float]] = None,
              kernel_ms: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """``ms`` is the chosen statistic; the others and the p90/p50 spread ride along.

    * ``median``: median wall-clock time of the runs (the usual figure);
    * ``min``: fastest run; interference from other processes only ever adds time;
    * ``cpu``: median process CPU time per run. With one thread the inference runs on
      the calling thread, so this is the latency without the time spent waiting for a
      core that another process holds: on a shared machine it is the steady estimate
      of what a dedicated device would measure. Meaningless with several threads
      (CPU time adds up across them), so tables refuse it there.
    * ``kernel``: median over runs of the runtime's own per-layer execution times,
      summed, layout conversions left out (OpenVINO's performance counters). An
      isolated unit pays a call's fixed cost and converts its input and output between
      the plain and the runtime's blocked layout; inside a network neither happens.
      On this project's machines the wall-clock sum of isolated units overshot whole
      networks by 18-55 % (ratio 0.64-0.85 across networks), the kernel sum by 1-9 %
      (0.92-0.99): what is left for calibration is small and nearly constant.
    """
    if statistic not in STATISTICS:
        raise LatencyTableError(f"statistic: expected one of {list(STATISTICS)}, found {statistic!r}")
    ts = sorted(times_ms)
    med = statistics.median(ts)
    p90 = float(np.percentile(ts, 90))
    out = {"ms": med, "median_ms": med, "p90_ms": p90, "min_ms": ts[0],
           "spread": p90 / med if med > 0 else math.nan, "runs": len(ts)}
    if cpu_ms:
        c = sorted(cpu_ms)
        cmed = statistics.median(c)
        out["cpu_ms"] = cmed
        out["cpu_spread"] = float(np.percentile(c, 90)) / cmed if cmed > 0 else math.nan
    if kernel_ms:
        k = sorted(kernel_ms)
        kmed = statistics.median(k)
        out["kernel_ms"] = kmed
        out["kernel_spread"] = float(np.percentile(k, 90)) / kmed if kmed > 0 else math.nan
    if statistic == "min":
        out["ms"] = ts[0]
    elif statistic == "cpu":
        if "cpu_ms" not in out:
            raise LatencyTableError("statistic 'cpu': no CPU times were recorded")
        out["ms"] = out["cpu_ms"]
    elif statistic == "kernel":
        if "kernel_ms" not in out:
            raise LatencyTableError("statistic 'kernel': no per-layer times were recorded (load the "
                                    "units with the backend's profiling on: Loader(kernel=True))")
        out["ms"] = out["kernel_ms"]
    return out


def load_average() -> Optional[float]:
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return None


# ---- profiling a table --------------------------------------------------------------

def measure_call_overhead(loader: Loader, *, rounds: int = 5, runs_per_round: int = 20,
                          statistic: str = "median") -> Dict[str, float]:
    unit = loader.load(_overhead_module(), 1, 1, deployable=False)
    x = _input_for(unit, (1, 1, 1, 1, 1))
    cpu: List[List[float]] = []
    wall = interleaved_times([(unit, x)], rounds=rounds, runs_per_round=runs_per_round, cpu=cpu)
    return summarize(wall[0], "median" if statistic == "kernel" else statistic, cpu[0])


def _uncalibrated(statistic: str, overhead: Dict[str, float]) -> Dict[str, Any]:
    """The predictor's constants before any network was measured, for one statistic.

    Every isolated unit's wall-clock or CPU figure includes one call's fixed cost, which
    the network pays once: it is subtracted per unit (``call_overhead_ms``) and added back
    per network (``offset_ms``). Kernel sums hold no call cost; the network still pays its
    call once, in wall-clock time.
    """
    call = overhead[NETWORK_FIELD[statistic]]
    return {"call_overhead_ms": 0.0 if statistic == "kernel" else call, "call_ms": call,
            "scale": 1.0, "offset_ms": call, "fitted_on": 0}


def profile_keys(table: LatencyTable, keys: Iterable[LayerKey], loader: Loader, *,
                 path: Optional[Path] = None, chunk: int = 12, rounds: int = 5,
                 runs_per_round: int = 3, warmup: int = 2, statistic: Optional[str] = None,
                 progress: bool = True) -> int:
    """Measure the keys the table lacks; saves after every chunk, so a rerun resumes.

    Returns how many entries were added.
    """
    todo = table.missing(keys)
    if not todo:
        return 0
    # A table keeps one statistic: entries measured later (resume, on demand) follow it.
    statistic = table.settings.get("statistic") or statistic or "median"
    if statistic == "cpu" and loader.threads != 1:
        raise LatencyTableError(f"statistic 'cpu' needs 1 thread (CPU time adds up across threads); "
                                f"found threads={loader.threads}")
    if statistic == "kernel" and not loader.kernel:
        raise LatencyTableError("statistic 'kernel': the loader must load units with per-layer "
                                "counters on (Loader(..., kernel=True))")
    if table.calibration is None or "call_overhead_ms" not in table.calibration:
        oh = measure_call_overhead(loader)
        by = {st: _uncalibrated(st, oh) for st in STATISTICS
              if NETWORK_FIELD[st] in oh and (st != "kernel" or loader.kernel)}
        table.calibration = {**by[statistic], "call_overhead_spread": oh["spread"],
                             "by_statistic": by}
    table.settings.update({"rounds": rounds, "runs_per_round": runs_per_round, "warmup": warmup,
                           "statistic": statistic, "interleaved_chunk": chunk,
                           "drift_reference": "res/32/32/96/3/3/1/T/14/14"})
    bar = _progress(total=len(todo), desc="profiling layers", disable=not progress)
    added = 0
    try:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            units = []
            for key in part:
                unit = loader.load_key(key)
                units.append((unit, _input_for(unit, (1, key.cin, key.t, key.h, key.w))))
            units.append(loader.reference(part[0].t))
            cpu: List[List[float]] = []
            kernel: List[List[float]] = []
            times = interleaved_times(units, rounds=rounds, runs_per_round=runs_per_round,
                                      warmup=warmup, cpu=cpu, kernel=kernel)
            load = load_average()
            ref = _ref_stats(summarize(times[-1], "median", cpu[-1], kernel[-1]))
            for key, ts, cs, ks in zip(part, times, cpu, kernel):
                table.add(key, **summarize(ts, statistic, cs, ks), load=load, ref=ref)
                added += 1
            del units
            if path is not None:
                table.save(path)
            bar.update(len(part))
    finally:
        bar.close()
    return added


def _progress(**kwargs: Any):
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


# ---- whole networks -----------------------------------------------------------------

def load_networks(specs: Sequence[ArchSpec], loader: Loader, *, frames: int, size: int,
                  num_classes: int = 400, progress: bool = True) -> List[tuple[Any, np.ndarray]]:
    """(backend, input) of each network's deployable artifact, ready to time."""
    units = []
    for spec in _progress(iterable=specs, desc="exporting networks", disable=not progress):
        unit = loader.load_spec(spec, frames, size, num_classes)
        units.append((unit, _input_for(unit, (1, spec.in_chans, frames, size, size))))
    return units


def measure_specs(specs: Sequence[ArchSpec], loader: Loader, *, frames: int, size: int,
                  num_classes: int = 400, rounds: int = 7, runs_per_round: int = 3,
                  warmup: int = 2, statistic: str = "median",
                  progress: bool = True) -> List[Dict[str, float]]:
    """End-to-end latency of each network (its exported artifact), interleaved.

    The drift reference unit is timed in the same rounds; each result carries its
    stats under ``ref`` (see :func:`reference_key`).
    """
    units = load_networks(specs, loader, frames=frames, size=size, num_classes=num_classes,
                          progress=progress)
    units.append(loader.reference(frames))
    cpu: List[List[float]] = []
    kernel: List[List[float]] = []
    times = interleaved_times(units, rounds=rounds, runs_per_round=runs_per_round, warmup=warmup,
                              cpu=cpu, kernel=kernel)
    load = load_average()
    ref = _ref_stats(summarize(times[-1], "median", cpu[-1], kernel[-1]))
    # networks run without per-layer counters: their figure is what a user measures
    net_statistic = "median" if statistic == "kernel" else statistic
    return [{**summarize(ts, net_statistic, cs), "load": load, "ref": ref}
            for ts, cs in zip(times[:-1], cpu[:-1])]


# ---- sampling the search space ---------------------------------------------------------

def sample_architectures(n: int, *, frames: int, size: int, seed: int = 0,
                         max_flops: Optional[float] = None, layer_budget: int = 83,
                         min_steps: int = 4, max_steps: int = 40,
                         flops_shape: tuple[int, int] = (13, 160)) -> List[ArchSpec]:
    """``n`` distinct random networks of the search's space (e3d_zoo.search.space).

    Each is a random walk of the search's own mutation operator from the space's seed,
    kept when it fits ``max_flops`` (tinynas FLOPs at ``flops_shape``), so the sample
    covers the sizes a search under that budget visits.
    """
    from .. import complexity
    from ..search.space import BoundSpace, candidate_of, default_space, spec_of

    space = default_space()
    seed_spec = space.seed_spec(frames, size)
    bound = BoundSpace(space, seed_spec, size, layer_budget)
    rng = random.Random(seed)
    out: List[ArchSpec] = []
    seen = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n:
            raise LatencyTableError(f"could not sample {n} architectures under {max_flops:g} FLOPs")
        cand = candidate_of(seed_spec)
        for _ in range(rng.randint(min_steps, max_steps)):
            nxt = bound.mutate(cand, rng)
            if max_flops is not None and complexity.tinynas_flops(
                    spec_of(nxt, *flops_shape), *flops_shape) > max_flops:
                continue
            cand = nxt
        if cand in seen:
            continue
        seen.add(cand)
        out.append(spec_of(cand, frames, size, name=f"sample_{seed}_{len(out)}"))
    return out

