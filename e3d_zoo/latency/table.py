"""The latency lookup table: measured milliseconds per layer configuration, as JSON.

A table belongs to one device, runtime (and its version) and thread count; those are
stored with it (``environment``) and compared with the machine that loads it, because
a table measured elsewhere predicts nothing here.

File format (``schema_version`` 1)::

    {
      "schema": "e3d-latency-table",
      "schema_version": 1,
      "environment": {"backend": "openvino", "runtime_version": "2026.4...", "threads": 1,
                      "cpu": "AMD EPYC", "machine": "x86_64", "cpu_count": 2, "precision": "f32"},
      "settings": {"warmup": 3, "runs": 15, "statistic": "median"},
      "created": "2026-11-23T19:30:00Z",
      "e3d_zoo_version": "0.1.0",
      "calibration": {"call_overhead_ms": 0.05, "scale": 1.0, "offset_ms": 0.3, ...} | null,
      "entries": {"res/24/48/96/3/3/2/8/56/56": {"ms": 1.23, "p90_ms": 1.31, "runs": 15}, ...}
    }

Entry keys (:class:`LayerKey`): one per conv block (``conv``), residual layer (``res``)
and classifier head (``head``), with the layer's channels, kernel, stride and its input
clip shape (T, H, W). A super-block with L layers looks up two keys: its first layer
and (L - 1) times the repeated one.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional

from e3d_runtime.machine import cpu_info

from ..atomic import atomic_write_text
from ..errors import LatencyTableError
from ..spec import ArchSpec

SCHEMA = "e3d-latency-table"
SCHEMA_VERSION = 1
KINDS = ("conv", "res", "head")
#: what an entry's headline ``ms`` is (``e3d_zoo.latency.profile.summarize`` defines each)
STATISTICS = ("median", "min", "cpu", "kernel")
# Environment fields that must match for a table to describe this machine.
MATCH_FIELDS = ("backend", "runtime_version", "threads", "cpu", "machine", "precision")


class LayerKey(NamedTuple):
    """One profiled unit. For ``head``: cin = features, cout = classes, btn = hidden."""

    kind: str
    cin: int
    cout: int
    btn: int
    kt: int
    k: int
    stride: int
    t: int
    h: int
    w: int

    def __str__(self) -> str:
        return "/".join([self.kind] + [str(v) for v in self[1:]])

    @classmethod
    def parse(cls, text: str) -> "LayerKey":
        parts = str(text).split("/")
        if len(parts) != 10 or parts[0] not in KINDS:
            raise ValueError(f"expected 'kind/cin/cout/btn/kt/k/stride/t/h/w' with kind in "
                             f"{list(KINDS)}, found {text!r}")
        try:
            nums = [int(p) for p in parts[1:]]
        except ValueError:
            raise ValueError(f"expected integers after the kind, found {text!r}") from None
        if any(n < 0 for n in nums):
            raise ValueError(f"expected non-negative integers, found {text!r}")
        return cls(parts[0], *nums)

    @property
    def out_hw(self) -> tuple[int, int]:
        from ..complexity import conv_out

        if self.kind == "head":
            return 1, 1
        return conv_out(self.h, self.k, self.stride), conv_out(self.w, self.k, self.stride)


def block_layer_keys(block, frames: int, h: int, w: int) -> tuple[List[LayerKey], int, int]:
    """Keys of one top-level block entered at (h, w); returns (keys, h_out, w_out)."""
    from ..complexity import conv_out

    keys = []
    if not block.is_super:
        keys.append(LayerKey("conv", block.in_channels, block.out_channels, 0, block.kt, block.k,
                             block.stride, frames, h, w))
        return keys, conv_out(h, block.k, block.stride), conv_out(w, block.k, block.stride)
    for c, o, s in block.residual_layers():
        keys.append(LayerKey("res", c, o, block.btn, block.kt, block.k, s, frames, h, w))
        h, w = conv_out(h, block.k, s), conv_out(w, block.k, s)
    return keys, h, w


def head_key(spec: ArchSpec, frames: int, h: int, w: int, num_classes: int) -> LayerKey:
    return LayerKey("head", spec.num_features, num_classes, spec.head_hidden, 1, 1, 1, frames, h, w)


def layer_keys(spec: ArchSpec, frames: Optional[int] = None, size: Optional[int] = None,
               num_classes: int = 400) -> List[LayerKey]:
    """Every profiled unit of ``spec`` in network order (repeats included), head last.

    Feature sizes follow complexity.conv_layers (padding k//2, integer sizes): the
    tests keep the two equal.
    """
    T = spec.frames if frames is None else frames
    h = w = spec.size if size is None else size
    keys: List[LayerKey] = []
    for b in spec.blocks:
        ks, h, w = block_layer_keys(b, T, h, w)
        keys.extend(ks)
    keys.append(head_key(spec, T, h, w, num_classes))
    return keys


# ---- environment -------------------------------------------------------------

def runtime_version(backend: str) -> str:
    if backend == "openvino":
        import openvino

        return openvino.get_version()
    if backend == "torch":
        import torch

        return torch.__version__
    if backend == "onnxruntime":
        import onnxruntime

        return onnxruntime.__version__
    return "unknown"


def current_environment(backend: str, threads: int, precision: str = "f32") -> Dict[str, Any]:
    """What a table measured now, here, with this backend would record."""
    cpu = cpu_info()
    return {"backend": backend, "runtime_version": runtime_version(backend), "threads": threads,
            "cpu": cpu.get("model") or platform.processor() or platform.machine(),
            "cpu_flags": cpu["flags"], "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "precision": precision}


def environment_mismatches(table_env: Mapping[str, Any], here: Mapping[str, Any]) -> List[str]:
    return [f"{k}: table has {table_env.get(k)!r}, this machine has {here.get(k)!r}"
            for k in MATCH_FIELDS if table_env.get(k) != here.get(k)]


# ---- the table -----------------------------------------------------------------

def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LatencyTable:
    environment: Dict[str, Any]
    entries: Dict[LayerKey, Dict[str, Any]] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    calibration: Optional[Dict[str, Any]] = None
    created: str = field(default_factory=_utc_now)
    e3d_zoo_version: str = ""
    path: Optional[Path] = None

    @classmethod
    def new(cls, backend: str, threads: int, *, precision: str = "f32",
            **settings: Any) -> "LatencyTable":
        from .. import __version__

        return cls(environment=current_environment(backend, threads, precision),
                   settings=dict(settings), e3d_zoo_version=__version__)

    @property
    def backend(self) -> str:
        return str(self.environment.get("backend"))

    @property
    def threads(self) -> int:
        return int(self.environment.get("threads") or 1)

    def __contains__(self, key: LayerKey) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def ms(self, key: LayerKey) -> float:
        return float(self.entries[key]["ms"])

    def add(self, key: LayerKey, ms: float, **stats: Any) -> None:
        if not (isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0):
            raise LatencyTableError(f"entry {key}: expected a non-negative latency, found {ms!r}")
        self.entries[key] = {"ms": float(ms), **stats}

    def missing(self, keys) -> List[LayerKey]:
        seen = set()
        out = []
        for k in keys:
            if k not in self.entries and k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def check_environment(self, here: Optional[Mapping[str, Any]] = None, *,
                          strict: bool = False, threads: Optional[int] = None) -> List[str]:
        """Warn (or raise under ``strict``) when the table was measured elsewhere.

        ``threads``: the thread count the caller will run with (default: the table's).
        """
        if here is None:
            here = current_environment(self.backend, threads or self.threads,
                                       str(self.environment.get("precision", "f32")))
        bad = environment_mismatches(self.environment, here)
        if bad:
            where = self.path or "latency table"
            msg = (f"{where}: measured on a different device/runtime: " + "; ".join(bad)
                   + ". Its predictions do not describe this machine; re-profile with "
                     "`e3d-bench --profile-table`.")
            if strict:
                raise LatencyTableError(msg)
            warnings.warn(msg, LatencyTableWarning, stacklevel=3)
        return bad

    # ---- JSON --------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "environment": dict(self.environment),
            "settings": dict(self.settings),
            "created": self.created,
            "e3d_zoo_version": self.e3d_zoo_version,
            "calibration": None if self.calibration is None else dict(self.calibration),
            "entries": {str(k): dict(v) for k, v in sorted(self.entries.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: Optional[str | os.PathLike] = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise LatencyTableError("latency table: no path to save to")
        atomic_write_text(target, self.to_json())
        self.path = target
        return target

    @classmethod
    def from_dict(cls, data: Any, where: str = "<latency table>") -> "LatencyTable":
        return _parse(data, where)


class LatencyTableWarning(UserWarning):
    """A latency table was measured on another device, runtime version or thread count."""


MAX_TABLE_BYTES = 256 << 20  # a full 13x160 table is ~5 MB


def load_table(path: str | os.PathLike) -> LatencyTable:
    from ..atomic import read_json_limited

    path = Path(path)
    if not os.path.lexists(path):
        raise LatencyTableError(f"{path}: no such latency table (make one with "
                                "`e3d-bench --profile-table PATH`)")
    data = read_json_limited(path, MAX_TABLE_BYTES, what="latency table", error=LatencyTableError,
                             label="corrupt latency table")
    table = _parse(data, str(path))
    table.path = path
    return table


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse(data: Any, where: str) -> LatencyTable:
    if not isinstance(data, Mapping):
        raise LatencyTableError(f"{where}: expected a JSON object (an e3d latency table), found "
                                f"{type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise LatencyTableError(f"{where}.schema: expected {SCHEMA!r}, found {data.get('schema')!r}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise LatencyTableError(f"{where}.schema_version: expected {SCHEMA_VERSION}, found "
                                f"{data.get('schema_version')!r}")
    env = data.get("environment")
    if not isinstance(env, Mapping):
        raise LatencyTableError(f"{where}.environment: expected an object with {list(MATCH_FIELDS)}, "
                                f"found {env!r:.60}")
    for k in ("backend", "runtime_version"):
        if not isinstance(env.get(k), str):
            raise LatencyTableError(f"{where}.environment.{k}: expected a string, found {env.get(k)!r}")
    threads = env.get("threads")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise LatencyTableError(f"{where}.environment.threads: expected an integer >= 1, found {threads!r}")
    settings = data.get("settings", {})
    if not isinstance(settings, Mapping):
        raise LatencyTableError(f"{where}.settings: expected an object, found {settings!r:.60}")
    cal = data.get("calibration")
    if cal is not None:
        if not isinstance(cal, Mapping):
            raise LatencyTableError(f"{where}.calibration: expected an object or null, found {cal!r:.60}")
        for k in ("call_overhead_ms", "scale", "offset_ms"):
            if not _num(cal.get(k)):
                raise LatencyTableError(f"{where}.calibration.{k}: expected a number, found {cal.get(k)!r}")
        if cal["scale"] <= 0:
            raise LatencyTableError(f"{where}.calibration.scale: expected a positive number, "
                                    f"found {cal['scale']!r}")
    raw = data.get("entries")
    if not isinstance(raw, Mapping):
        raise LatencyTableError(f"{where}.entries: expected an object mapping layer keys to "
                                f"measurements, found {raw!r:.60}")
    entries: Dict[LayerKey, Dict[str, Any]] = {}
    for ks, v in raw.items():
        try:
            key = LayerKey.parse(ks)
        except ValueError as exc:
            raise LatencyTableError(f"{where}.entries[{ks!r}]: bad layer key: {exc}") from None
        if not isinstance(v, Mapping) or not _num(v.get("ms")) or v["ms"] < 0:
            found = v.get("ms") if isinstance(v, Mapping) else v
            raise LatencyTableError(f"{where}.entries[{ks!r}].ms: expected a non-negative number "
                                    f"of milliseconds, found {found!r}")
        entries[key] = dict(v)
    return LatencyTable(environment=dict(env), entries=entries, settings=dict(settings),
                        calibration=None if cal is None else dict(cal),
                        created=str(data.get("created", "")),
                        e3d_zoo_version=str(data.get("e3d_zoo_version", "")))


def iter_keys_of(specs, frames: Optional[int] = None, size: Optional[int] = None,
                 num_classes: int = 400) -> Iterator[LayerKey]:
    for spec in specs:
        yield from layer_keys(spec, frames, size, num_classes)
