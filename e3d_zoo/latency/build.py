"""Make a latency table: profile the units of the networks asked for, then calibrate.

    from e3d_zoo.latency.build import profile_table
    profile_table("my_cpu.json", frames=13, size=160, archs=["e3d_s"], sample=8, calibrate=6)

What ``e3d-bench --profile-table`` runs. A table that exists is resumed: only the
units it lacks are measured.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..atomic import output_lock
from ..errors import ConfigError
from ..spec import ArchSpec
from .predictor import calibrate as calibrate_table
from .profile import KERNEL_BACKENDS, NETWORK_FIELD, Loader, measure_specs, profile_keys
from .profile import sample_architectures
from .table import LatencyTable, iter_keys_of, load_table


def default_statistic(backend: str) -> str:
    """Kernel sums where the runtime reports per-layer times, wall-clock medians elsewhere."""
    from ..runtime.base import canonical_backend_name

    return "kernel" if canonical_backend_name(backend) in KERNEL_BACKENDS else "median"


def statistics_of(table: LatencyTable) -> tuple:
    """The statistics a table's measurements support, its own first: ``cpu`` needs one
    thread, ``kernel`` units loaded with per-layer counters (tables made for it)."""
    own = table.settings.get("statistic", "median")
    rest = ["median", "min"] + (["cpu"] if table.threads == 1 else [])
    return (own,) + tuple(st for st in rest if st != own)


def network_specs(frames: int, size: int, *, zoo: bool = False,
                  archs: Sequence[Union[str, os.PathLike, ArchSpec]] = (), sample: int = 0,
                  seed: int = 0, max_flops: Optional[float] = None) -> List[ArchSpec]:
    """The zoo models, the given architectures and ``sample`` random search-space
    networks, all at the clip shape."""
    from ..zoo import ZOO_MODELS, spec_for

    specs = [spec_for(n).replace(frames=frames, size=size) for n in (ZOO_MODELS if zoo else ())]
    specs += [spec_for(a).replace(frames=frames, size=size) for a in archs]
    if sample:
        specs += sample_architectures(sample, frames=frames, size=size, seed=seed,
                                      max_flops=max_flops)
    return specs


def calibration_specs(n: int, frames: int, size: int, *, seed: int = 0,
                      max_flops: Optional[float] = None) -> List[ArchSpec]:
    """The zoo models, then random samples from their own seed (``seed + 1000``), so a
    validation's samples (another seed) never calibrate the predictor."""
    from ..zoo import ZOO_MODELS, spec_for

    specs = [spec_for(m).replace(frames=frames, size=size) for m in ZOO_MODELS][:n]
    if n > len(specs):
        specs += sample_architectures(n - len(specs), frames=frames, size=size, seed=seed + 1000,
                                      max_flops=max_flops)
    return specs


def profile_table(path: Union[str, os.PathLike], *, frames: int, size: int,
                  backend: str = "openvino", threads: int = 1, statistic: Optional[str] = None,
                  zoo: bool = False, archs: Sequence[Union[str, os.PathLike, ArchSpec]] = (),
                  sample: int = 0, calibrate: int = 0, seed: int = 0,
                  max_flops: Optional[float] = 4.0e9, rounds: int = 7, runs_per_round: int = 3,
                  num_classes: int = 400, progress: bool = True) -> Dict[str, Any]:
    """Profile the units of the networks asked for into the table at ``path`` (created
    or resumed), then fit its calibration on ``calibrate`` networks measured end to end.

    The table's output lock is held throughout: a second run on the same table is an
    OutputInUseError at once."""
    path = Path(path)
    if not frames or not size:
        raise ConfigError("--profile-table: needs the clip shape to profile at: --frames and --size")
    # one profiling run per table: two would each save the entries they measured over the
    # other's
    with output_lock(path, what="latency table"):
        if path.exists():
            table = load_table(path)  # resume: only the missing units are measured
            table.check_environment(strict=True)
        else:
            table = LatencyTable.new(backend, threads, statistic=statistic or default_statistic(backend))
            table.path = path
        table.settings.setdefault("clip", [frames, size])
        specs = network_specs(frames, size, zoo=zoo, archs=archs, sample=sample, seed=seed,
                              max_flops=max_flops)
        cal_specs = calibration_specs(calibrate, frames, size, seed=seed, max_flops=max_flops)
        if not specs and not cal_specs:
            raise ConfigError("--profile-table: nothing to profile; give --zoo, --arch A.json or --sample N")
        with Loader.for_table(table) as loader:
            keys = list(iter_keys_of(specs + cal_specs, frames, size, num_classes))
            added = profile_keys(table, keys, loader, path=path, rounds=rounds,
                                 runs_per_round=runs_per_round, progress=progress)
            cal = None
            if cal_specs:
                measured = measure_specs(cal_specs, loader, frames=frames, size=size,
                                         num_classes=num_classes, rounds=rounds,
                                         runs_per_round=runs_per_round, progress=progress)
                for st in statistics_of(table):
                    calibrate_table(table, cal_specs, [m[NETWORK_FIELD[st]] for m in measured],
                                    frames=frames, size=size, num_classes=num_classes, statistic=st)
                cal = table.calibration
                cal["measured"] = [{"name": s.name, **m} for s, m in zip(cal_specs, measured)]
            table.save(path)
    return {"table": str(path), "entries": len(table), "added": added,
            "environment": table.environment, "calibration": cal or table.calibration}
