"""Networks measured against a reference network in one interleaved run.

A latency budget is only as good as the measurement that checks it. On a shared
machine the same network's latency moves by 5-10 % between sessions minutes apart
(docs/latency.md), so a figure measured now against a number measured earlier says
as much about the machine as about the network. Here the candidates and a reference
network (E3D-S, or the network that defined the budget) are exported, loaded and
timed round-robin in the same rounds: a burst of load from another process slows
every one of them, and their ratio survives it.

The reference is the yardstick of every verdict in the run, so it is loaded as several
instances (``reference_instances``, default 3) and its figure is their median. On this
project's shared machine one compiled instance of a network ran up to 21 % faster than
five identical instances in the same rounds, for the whole run (memory placement, not
load: the five agreed within 1 %; ``docs/latency/budget/ratio_noise_8x112_single_ref.json``,
session 10); with one instance of the reference that error would hit every finalist at once.

:class:`DeviceMeasurer` is the search's :class:`~e3d_zoo.search.budgets.LatencyMeasurer`
on this machine's runtimes.
"""
from __future__ import annotations

import random
import statistics
from typing import Any, Dict, List, Optional, Sequence

from ..errors import LatencyTableError
from ..spec import ArchSpec
from .profile import Loader, interleaved_times, load_average, load_networks, summarize
from .table import LatencyTable, current_environment

#: statistics a whole network can be compared on (per-layer kernel sums are a unit
#: statistic: whole networks run without counters, in wall-clock time)
NETWORK_STATISTICS = ("median", "min", "cpu")


#: per-network figures a reference takes the median of over its instances
_CENTRAL = ("median_ms", "min_ms", "cpu_ms")


def _per_round(series: Sequence[float], rounds: int, statistic: str) -> List[float]:
    n = len(series) // rounds
    chunks = [series[i * n:(i + 1) * n] for i in range(rounds)]
    pick = min if statistic == "min" else statistics.median
    return [pick(c) for c in chunks]


def _network_stats(wall: List[float], cpu_ms: List[float], statistic: str,
                   rounds: int) -> Dict[str, Any]:
    s = summarize(wall, statistic, cpu_ms)
    s["rounds"] = rounds
    s["round_ms"] = _per_round(cpu_ms if statistic == "cpu" else wall, rounds, statistic)
    return s


def measure_against(reference: ArchSpec, specs: Sequence[ArchSpec], loader: Loader, *,
                    frames: int, size: int, num_classes: int = 400, rounds: int = 7,
                    runs_per_round: int = 3, warmup: int = 2, statistic: str = "median",
                    reference_instances: int = 3, progress: bool = False) -> Dict[str, Any]:
    """Time ``reference`` and every spec end to end, interleaved, in one run.

    The networks are visited in a new random order every round (see
    ``interleaved_times``). Each result is :func:`~e3d_zoo.latency.profile.summarize`'s (``ms`` is
    ``statistic``) plus ``rounds`` and ``round_ms`` (the statistic within each round);
    each network adds ``ratio`` (its ``ms`` over the reference's) and
    ``round_ratios`` (the same per round: how steady the ratio was). The reference's
    ``ms`` and ``round_ms`` are the medians over its ``reference_instances`` instances
    (each exported and compiled separately; ``instance_ms`` lists them); its other
    statistics pool their runs.
    """
    if statistic not in NETWORK_STATISTICS:
        raise LatencyTableError(f"statistic: expected one of {list(NETWORK_STATISTICS)} for whole "
                                f"networks, found {statistic!r}")
    if rounds < 1 or runs_per_round < 1 or reference_instances < 1:
        raise LatencyTableError(f"rounds, runs per round and reference instances: expected >= 1, "
                                f"found {rounds}, {runs_per_round} and {reference_instances}")
    k = reference_instances
    nets = [reference] * k + list(specs)
    units = load_networks(nets, loader, frames=frames, size=size, num_classes=num_classes,
                          progress=progress)
    load_before = load_average()
    cpu: List[List[float]] = []
    # a fresh random order every round (seeded: the same run repeats the same orders)
    times = interleaved_times(units, rounds=rounds, runs_per_round=runs_per_round, warmup=warmup,
                              cpu=cpu, shuffle=random.Random(0))
    stats = [_network_stats(wall, cpu_ms, statistic, rounds) for wall, cpu_ms in zip(times, cpu)]
    ref = summarize([t for ts in times[:k] for t in ts], statistic, [c for cs in cpu[:k] for c in cs])
    ref["rounds"] = rounds
    ref["instances"] = k
    ref["instance_ms"] = [s["ms"] for s in stats[:k]]
    for key in _CENTRAL:  # each the median over the instances
        ref[key] = statistics.median(s[key] for s in stats[:k])
    ref["ms"] = ref[f"{statistic}_ms"]
    ref["round_ms"] = [statistics.median(s["round_ms"][r] for s in stats[:k])
                       for r in range(rounds)]
    nets_stats = stats[k:]
    for s in nets_stats:
        s["ratio"] = s["ms"] / ref["ms"]
        s["round_ratios"] = [a / b for a, b in zip(s["round_ms"], ref["round_ms"])]
        # the other figures' ratios ride along (wall clock beside CPU time)
        s.update({f"{key[:-3]}_ratio": s[key] / ref[key] for key in _CENTRAL})
    return {"reference": ref, "networks": nets_stats, "statistic": statistic,
            "rounds": rounds, "runs_per_round": runs_per_round, "warmup": warmup,
            "reference_instances": k,
            "interleaved": True, "order": "shuffled every round", "frames": frames, "size": size, "num_classes": num_classes,
            "load_before": load_before, "load_after": load_average(),
            "environment": current_environment(loader.backend, loader.threads)}


def default_statistic(threads: int) -> str:
    """What a same-run comparison is judged on by default: process CPU time with one
    thread (the time the network computes, without the time it waits for a core another
    process holds: what a dedicated device measures), else the wall-clock median.

    On this project's shared 2-core machine, 5 copies of E3D-S against 3 reference
    instances in the same runs (8 x 112^2, load 3-5) deviated from 1 by at most 1.5 % in
    CPU time and by up to 6 % in wall-clock medians (``docs/latency/budget/``).
    """
    return "cpu" if threads == 1 else "median"


class DeviceMeasurer:
    """Measures networks on this machine's ``backend`` with ``threads`` pinned threads.

    ``statistic``: what is compared with the budget: ``cpu`` (process CPU time, 1 thread
    only), ``median`` wall-clock time or ``min`` (fastest run); default
    :func:`default_statistic`. Every measurement records the others beside it.
    """

    def __init__(self, backend: str = "openvino", threads: int = 1, *,
                 statistic: Optional[str] = None, rounds: int = 7, runs_per_round: int = 3,
                 warmup: int = 2, reference_instances: int = 3, progress: bool = False):
        statistic = statistic or default_statistic(threads)
        if statistic not in NETWORK_STATISTICS:
            raise LatencyTableError(f"statistic: expected one of {list(NETWORK_STATISTICS)}, "
                                    f"found {statistic!r}")
        if statistic == "cpu" and threads != 1:
            raise LatencyTableError(f"statistic 'cpu' needs 1 thread (CPU time adds up across "
                                    f"threads); found threads={threads}")
        self.backend, self.threads, self.statistic = backend, int(threads), statistic
        self.rounds, self.runs_per_round, self.warmup = rounds, runs_per_round, warmup
        self.reference_instances = reference_instances
        self.progress = progress

    @classmethod
    def for_table(cls, table: LatencyTable, **kwargs: Any) -> "DeviceMeasurer":
        """Measures where ``table`` predicts: its backend and thread count.

        A table made on another device, runtime version or thread count describes a
        machine that is not this one: measuring here would check the budget on the
        wrong device, so that is an error.
        """
        try:
            table.check_environment(strict=True)
        except LatencyTableError as exc:
            raise LatencyTableError(
                f"{exc} Its budget cannot be checked on this machine either: run the search on "
                "that device, or skip the measurement (--finalists 0; the result then fits the "
                "predicted budget only)") from None
        return cls(table.backend, table.threads, **kwargs)

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.backend, "threads": self.threads, "statistic": self.statistic,
                "rounds": self.rounds, "runs_per_round": self.runs_per_round,
                "reference_instances": self.reference_instances}

    def measure(self, reference: ArchSpec, specs: Sequence[ArchSpec], *, frames: int, size: int,
                num_classes: int = 400) -> Dict[str, Any]:
        with Loader(self.backend, self.threads) as loader:
            return measure_against(reference, specs, loader, frames=frames, size=size,
                                   num_classes=num_classes, rounds=self.rounds,
                                   runs_per_round=self.runs_per_round, warmup=self.warmup,
                                   statistic=self.statistic,
                                   reference_instances=self.reference_instances,
                                   progress=self.progress)


def device_measurer(predictor: Any, **kwargs: Any) -> Optional[DeviceMeasurer]:
    """The measurer for a table-backed predictor (None for other predictors)."""
    table = getattr(predictor, "table", None)
    if not isinstance(table, LatencyTable):
        return None
    return DeviceMeasurer.for_table(table, **kwargs)
