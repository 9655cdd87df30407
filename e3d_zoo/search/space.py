"""The search space as data: mutation choices, constraints and the seed structure.

A candidate is a tuple of block keys, ``(class, in, out, s, kt, k, L, btn)`` per
top-level block (``BlockSpec.key()``), so that mutating and hashing one costs no
object construction. :meth:`SearchSpace.mutate` returns only candidates that satisfy
every constraint of :meth:`SearchSpace.violations`; budgets are checked separately
(``budgets.py``), because a candidate may be valid but too expensive.

The default space is the reference search's (``reference_search`` in
``shared/reference/e3d_reference.json``; a test keeps the copy below equal to it).
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import SearchError
from ..spec import (CONV, MAX_CHANNELS, MAX_KERNEL, MAX_LAYERS_PER_BLOCK, SUPER, ArchSpec,
                    BlockSpec)

Block = tuple  # (class, in, out, s, kt, k, L, btn)
Candidate = tuple  # tuple[Block, ...]

# Field positions inside a block key.
KIND, CIN, COUT, STRIDE, KT, K, NL, BTN = range(8)

REFERENCE_SEED_STRUCTURE = [
    {"class": CONV, "in": 3, "out": 24, "s": 2, "kt": 1, "k": 3},
    {"class": SUPER, "in": 24, "out": 24, "s": 2, "kt": 1, "k": 5, "L": 1, "btn": 48},
    {"class": SUPER, "in": 24, "out": 48, "s": 2, "kt": 3, "k": 3, "L": 1, "btn": 96},
    {"class": SUPER, "in": 48, "out": 96, "s": 2, "kt": 3, "k": 3, "L": 1, "btn": 192},
    {"class": SUPER, "in": 96, "out": 96, "s": 1, "kt": 3, "k": 3, "L": 1, "btn": 192},
    {"class": SUPER, "in": 96, "out": 192, "s": 2, "kt": 3, "k": 3, "L": 1, "btn": 384},
    {"class": CONV, "in": 192, "out": 512, "s": 1, "kt": 1, "k": 1},
]

# The reference search's budgets per zoo model ("iterations" = candidates). Its configs
# (configs/action_recognition/E3D_X3D{S,M,L}_FLOPs.py) give the space and the FLOPs
# image_size 160 / 224 / 312, but the score only ``frames``: the score's own default
# image_size, 160, applies to all three ("score_size").
REFERENCE_BUDGETS = {
    "e3d_s": {"frames": 13, "size": 160, "score_size": 160, "flops": 2.0e9, "layers": 83,
              "iterations": 500000},
    "e3d_m": {"frames": 16, "size": 224, "score_size": 160, "flops": 5.0e9, "layers": 83,
              "iterations": 100000},
    "e3d_l": {"frames": 16, "size": 312, "score_size": 160, "flops": 18.5e9, "layers": 167,
              "iterations": 100000},
}

# Keys of the reference's ``reference_search`` object that describe rather than configure
# (prose, budgets, population); a space file may carry them and they are ignored.
_DESCRIPTIVE_KEYS = ("budgets", "population", "stem", "constraints", "channel_rounding",
                     "measured_reference_throughput", "about", "notes")


def round_channels(x: float, base: int = 8) -> int:
    """The reference's ``smart_round``: nearest multiple of ``base`` (Python's
    round-half-to-even, as the reference does), at least ``base``."""
    return max(base, round(x / float(base)) * base)


@dataclass(frozen=True)
class SearchSpace:
    """Mutation choices and constraints. Build with :func:`load_space` or :func:`default_space`."""

    kernel_choices: tuple[tuple[int, int], ...] = ((1, 3), (1, 5), (3, 3))
    layer_deltas: tuple[int, ...] = (-2, -1, 1, 2)
    channel_scales: tuple[float, ...] = (2.0, 1.5, 1.25, 0.8, 0.6, 0.5)
    bottleneck_ratios: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    channel_multiple: int = 8
    max_channels: int = 640
    max_stem_channels: int = 32
    first_block_max_layers: int = 3
    mutations_per_candidate: int = 2
    seed_structure: tuple[dict, ...] = field(
        default_factory=lambda: tuple(dict(b) for b in REFERENCE_SEED_STRUCTURE))

    # ---- description ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kernel_choices"] = [list(p) for p in self.kernel_choices]
        d["seed_structure"] = [dict(b) for b in self.seed_structure]
        for k in ("layer_deltas", "channel_scales", "bottleneck_ratios"):
            d[k] = list(d[k])
        return d

    def seed_spec(self, frames: int, size: int, name: str = "seed") -> ArchSpec:
        return ArchSpec.from_dict({"name": name, "frames": frames, "size": size,
                                   "blocks": list(self.seed_structure)})

    def check(self) -> None:
        """Contradicting or nonsensical settings -> SearchError, before any work."""
        def bad(field_name: str, value: Any, expected: str) -> SearchError:
            return SearchError(f"search space: {field_name}: expected {expected}, found {value!r}")

        if not self.kernel_choices:
            raise bad("kernel_choices_kt_k", [], "a non-empty list of [kt, k] pairs")
        for p in self.kernel_choices:
            if len(p) != 2 or any((not _is_int(v)) or v < 1 or v % 2 == 0 for v in p):
                raise bad("kernel_choices_kt_k", list(p), "[kt, k] with odd positive integers")
        if not self.layer_deltas or any(not _is_int(d) or d == 0 for d in self.layer_deltas):
            raise bad("layer_deltas", list(self.layer_deltas), "a non-empty list of non-zero integers")
        if not self.channel_scales or any(not _is_num(s) or s <= 0 for s in self.channel_scales):
            raise bad("channel_scales", list(self.channel_scales), "a non-empty list of positive numbers")
        if not self.bottleneck_ratios or any(not _is_num(s) or s <= 0 for s in self.bottleneck_ratios):
            raise bad("bottleneck_ratios", list(self.bottleneck_ratios),
                      "a non-empty list of positive numbers")
        if not _is_int(self.channel_multiple) or self.channel_multiple < 1:
            raise bad("channel_multiple", self.channel_multiple, "an integer >= 1")
        if not _is_int(self.max_channels) or self.max_channels < self.channel_multiple:
            raise bad("max_channels", self.max_channels,
                      f"an integer >= channel_multiple ({self.channel_multiple}); "
                      "no channel count could satisfy both")
        if not _is_int(self.max_stem_channels) or self.max_stem_channels < self.channel_multiple:
            raise bad("max_stem_channels", self.max_stem_channels,
                      f"an integer >= channel_multiple ({self.channel_multiple})")
        if not _is_int(self.first_block_max_layers) or self.first_block_max_layers < 1:
            raise bad("first_block_max_layers", self.first_block_max_layers, "an integer >= 1")
        if not _is_int(self.mutations_per_candidate) or self.mutations_per_candidate < 1:
            raise bad("mutations_per_candidate", self.mutations_per_candidate, "an integer >= 1")
        # Every architecture the search can reach must load again as an arch file.
        for p in self.kernel_choices:
            if max(p) > MAX_KERNEL:
                raise bad("kernel_choices_kt_k", list(p), f"kernel sizes <= {MAX_KERNEL}")
        widest = self.max_channels * max(max(self.bottleneck_ratios), 1)
        if max(self.max_channels, self.max_stem_channels, widest) > MAX_CHANNELS:
            raise bad("max_channels", self.max_channels,
                      f"at most {MAX_CHANNELS} channels, bottlenecks (max_channels x the largest "
                      f"bottleneck ratio) included")
        if self.first_block_max_layers > MAX_LAYERS_PER_BLOCK:
            raise bad("first_block_max_layers", self.first_block_max_layers,
                      f"an integer <= {MAX_LAYERS_PER_BLOCK}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def default_space() -> SearchSpace:
    return SearchSpace()


# Field names in a space file -> SearchSpace attribute. The reference's own names are
# accepted so that ``reference_search`` can be used as a space file unchanged.
_FILE_FIELDS = {
    "kernel_choices_kt_k": "kernel_choices",
    "kernel_choices": "kernel_choices",
    "layer_deltas": "layer_deltas",
    "channel_scales": "channel_scales",
    "bottleneck_ratios": "bottleneck_ratios",
    "channel_multiple": "channel_multiple",
    "max_channels": "max_channels",
    "max_stem_channels": "max_stem_channels",
    "first_block_max_layers": "first_block_max_layers",
    "mutations_per_candidate": "mutations_per_candidate",
    "seed_structure": "seed_structure",
}


def space_from_dict(data: Any, where: str = "<space>", base: SearchSpace | None = None) -> SearchSpace:
    """Override ``base`` (default: the reference space) with the fields in ``data``."""
    if isinstance(data, Mapping) and "reference_search" in data:
        data = data["reference_search"]
        where = f"{where}: reference_search"
    if not isinstance(data, Mapping):
        raise SearchError(f"{where}: expected a JSON object with search-space fields "
                          f"{sorted(_FILE_FIELDS)}, found {type(data).__name__}")
    unknown = [k for k in data if k not in _FILE_FIELDS and k not in _DESCRIPTIVE_KEYS]
    if unknown:
        raise SearchError(f"{where}: unknown field(s) {unknown}; expected some of "
                          f"{sorted(_FILE_FIELDS)}")
    values: dict[str, Any] = {}
    for key, attr in _FILE_FIELDS.items():
        if key not in data:
            continue
        v = data[key]
        try:
            if attr == "kernel_choices":
                v = tuple(tuple(p) for p in v)
            elif attr in ("layer_deltas", "channel_scales", "bottleneck_ratios"):
                v = tuple(v)
            elif attr == "seed_structure":
                v = tuple(dict(b) for b in v)
        except (TypeError, ValueError):
            raise SearchError(f"{where}.{key}: expected a list, found {v!r:.80}") from None
        values[attr] = v
    base = base or default_space()
    space = SearchSpace(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **values})
    try:
        space.check()
    except SearchError as exc:
        raise SearchError(f"{where}: {exc}") from None
    return space


def load_space(path: str | os.PathLike) -> SearchSpace:
    from ..atomic import read_json_limited

    path = Path(path)
    data = read_json_limited(path, 1 << 20, what="search-space file", error=SearchError)
    return space_from_dict(data, str(path))


# ---- the space bound to a clip shape and a layer budget -----------------------

class BoundSpace:
    """A SearchSpace applied to one network skeleton (strides), clip size and layer budget.

    Strides never mutate, so the input feature size of every block position is fixed;
    so are the per-position caps on ``L``.
    """

    def __init__(self, space: SearchSpace, seed: ArchSpec, size: int,
                 layer_budget: int | None = None):
        space.check()
        self.space = space
        self.n = len(seed.blocks)
        if self.n < 3:
            raise SearchError(f"seed architecture: expected at least 3 blocks (stem, super-blocks, "
                              f"head conv), found {self.n}")
        self.strides = tuple(b.stride for b in seed.blocks)
        self.kinds = tuple(b.kind for b in seed.blocks)
        self.stem_in = seed.blocks[0].in_channels
        # Float input feature size per position: the reference's kernel-shrink rule uses it.
        r = float(size)
        self.r_in = []
        for s in self.strides:
            self.r_in.append(r)
            r = r / s
        self.r_in = tuple(self.r_in)
        self.layer_budget = layer_budget
        self.max_layers = tuple(self._max_layers(i) for i in range(self.n))
        for i, cap in enumerate(self.max_layers):
            if cap is not None and cap < 1:
                raise SearchError(
                    f"layer budget {layer_budget} leaves no room: super-blocks after the first "
                    f"may have at most floor({layer_budget} / 3 / {self.n - 3}) = {cap} residual "
                    f"layers (blocks[{i}]); expected a layer budget >= {3 * (self.n - 3)}")
        self.kernel_choices = tuple(tuple(p) for p in space.kernel_choices)
        self.mutable = tuple(range(self.n - 1))  # the last block (head conv) never mutates
        self.m = space.mutations_per_candidate
        self.q = space.channel_multiple
        self._memo: dict = {}

    def _max_layers(self, i: int) -> int | None:
        if self.kinds[i] != SUPER:
            return None
        if i == 1:
            return self.space.first_block_max_layers
        if self.layer_budget and self.n > 3:
            return min(int(self.layer_budget // 3 // (self.n - 3)), MAX_LAYERS_PER_BLOCK)
        return MAX_LAYERS_PER_BLOCK  # what an arch file may hold

    def shrink_kernel(self, i: int, k: int) -> int:
        r = self.r_in[i]
        while k * 1.5 > r and k > 1:
            k -= 2
        return k

    def allowed_kernels(self, i: int) -> set[tuple[int, int]]:
        return {(kt, self.shrink_kernel(i, k)) for kt, k in self.kernel_choices}

    # ---- constraints --------------------------------------------------------
    def violations(self, cand: Candidate, *, check_kernels: bool = True) -> list[str]:
        """Every constraint the candidate breaks, in words (empty: valid)."""
        out: list[str] = []
        sp = self.space
        q = self.q
        if len(cand) != self.n:
            return [f"expected {self.n} blocks, found {len(cand)}"]
        for i, b in enumerate(cand):
            where = f"blocks[{i}]"
            if b[KIND] != self.kinds[i] or b[STRIDE] != self.strides[i]:
                out.append(f"{where}: class/stride differ from the skeleton "
                           f"({self.kinds[i]}, s={self.strides[i]})")
                continue
            expected_in = self.stem_in if i == 0 else cand[i - 1][COUT]
            if b[CIN] != expected_in:
                out.append(f"{where}.in: expected {expected_in} (previous block's out), found {b[CIN]}")
            if i == self.n - 1:
                continue
            if b[COUT] % q or b[COUT] < q:
                out.append(f"{where}.out: expected a multiple of {q} >= {q}, found {b[COUT]}")
            if b[COUT] > sp.max_channels:
                out.append(f"{where}.out: expected <= max_channels {sp.max_channels}, found {b[COUT]}")
            if b[COUT] > cand[i + 1][COUT]:
                out.append(f"{where}.out: expected <= the next block's out {cand[i + 1][COUT]}, "
                           f"found {b[COUT]}")
            if i == 0:
                if b[COUT] > sp.max_stem_channels:
                    out.append(f"{where}.out: expected <= max_stem_channels {sp.max_stem_channels}, "
                               f"found {b[COUT]}")
                continue
            if b[KIND] != SUPER:
                continue
            if b[COUT] < b[CIN]:
                out.append(f"{where}.out: expected >= its in {b[CIN]}, found {b[COUT]}")
            if b[BTN] % q or b[BTN] < q:
                out.append(f"{where}.btn: expected a multiple of {q} >= {q}, found {b[BTN]}")
            cap = self.max_layers[i]
            if b[NL] < 1 or (cap is not None and b[NL] > cap):
                out.append(f"{where}.L: expected 1..{cap if cap is not None else 'inf'}, found {b[NL]}")
            if check_kernels and (b[KT], b[K]) not in self.allowed_kernels(i):
                out.append(f"{where}: kernel (kt={b[KT]}, k={b[K]}) not among "
                           f"{sorted(self.allowed_kernels(i))} (choices after the k*1.5 <= "
                           f"input size {self.r_in[i]:g} rule)")
        return out

    # ---- mutation -----------------------------------------------------------
    def mutate(self, parent: Candidate, rng: random.Random) -> Candidate:
        """``mutations_per_candidate`` random mutations of random mutable blocks.

        The reference's mutators, with the choice lists and roundings looked up in
        small dicts: this runs once per candidate, hundreds of thousands of times.
        """
        blocks = list(parent)
        rnd = rng.random
        mutable = self.mutable
        n_mut = len(mutable)
        scaled = self._scaled_out
        n_scales = len(self.space.channel_scales)
        for _ in range(self.m):
            i = mutable[int(rnd() * n_mut)]
            kind, cin, cout, s, kt, k, L, btn = blocks[i]
            if kind != SUPER:
                new_out = scaled(i, cout, int(rnd() * n_scales))
                new_out = min(blocks[i + 1][COUT], new_out)
                if i > 0:
                    new_out = max(cin, new_out)
                if new_out != cout:
                    blocks[i] = (kind, cin, new_out, s, kt, k, L, btn)
                    nb = blocks[i + 1]
                    blocks[i + 1] = (nb[0], new_out) + nb[2:]
                continue
            method = int(rnd() * 4)
            if method == 0:  # out channels, keeping the bottleneck ratio
                ratio = self._snap_ratio(btn, cout)
                new_out = scaled(i, cout, int(rnd() * n_scales))
                new_out = min(blocks[i + 1][COUT], max(cin, new_out))
                blocks[i] = (kind, cin, new_out, s, kt, k, L, self._btn(new_out, ratio))
                if new_out != cout:
                    nb = blocks[i + 1]
                    blocks[i + 1] = (nb[0], new_out) + nb[2:]
            elif method == 1:  # kernel
                opts = self._kernel_opts(i, kt, k)
                nkt, nk = opts[int(rnd() * len(opts))]
                blocks[i] = (kind, cin, cout, s, nkt, nk, L, btn)
            elif method == 2:  # bottleneck ratio
                opts = self._ratio_opts(self._snap_ratio(btn, cout))
                blocks[i] = (kind, cin, cout, s, kt, k, L,
                             self._btn(cout, opts[int(rnd() * len(opts))]))
            else:  # layers
                opts = self._layer_opts(i, L)
                blocks[i] = (kind, cin, cout, s, kt, k, opts[int(rnd() * len(opts))], btn)
        return tuple(blocks)

    def _scaled_out(self, i: int, cout: int, scale_index: int) -> int:
        key = (i == 0, cout, scale_index)
        v = self._memo.get(key)
        if v is None:
            sp = self.space
            v = min(sp.max_channels, round_channels(sp.channel_scales[scale_index] * cout, self.q))
            if i == 0:
                v = min(sp.max_stem_channels, v)
            self._memo[key] = v
        return v

    def _btn(self, cout: int, ratio: float) -> int:
        key = ("btn", cout, ratio)
        v = self._memo.get(key)
        if v is None:
            v = self._memo[key] = round_channels(cout * ratio, self.q)
        return v

    def _snap_ratio(self, btn: int, cout: int) -> float:
        key = ("snap", btn, cout)
        v = self._memo.get(key)
        if v is None:
            ratios = self.space.bottleneck_ratios
            ratio = btn / cout
            v = ratio if ratio in ratios else min(ratios, key=lambda x: abs(x - ratio))
            self._memo[key] = v
        return v

    def _ratio_opts(self, ratio: float) -> tuple:
        key = ("ratios", ratio)
        v = self._memo.get(key)
        if v is None:
            ratios = self.space.bottleneck_ratios
            v = self._memo[key] = tuple(r for r in ratios if r != ratio) or tuple(ratios)
        return v

    def _kernel_opts(self, i: int, kt: int, k: int) -> tuple:
        """New (kt, k) choices other than the current, after the kernel-shrink rule."""
        key = ("kernel", i, kt, k)
        v = self._memo.get(key)
        if v is None:
            opts = [p for p in self.kernel_choices if p != (kt, k)] or list(self.kernel_choices)
            v = self._memo[key] = tuple((a, self.shrink_kernel(i, c)) for a, c in opts)
        return v

    def _layer_opts(self, i: int, L: int) -> tuple:
        """New L values: L + delta (at least 1, one that changes L if any does), capped."""
        key = ("layers", i, L)
        v = self._memo.get(key)
        if v is None:
            deltas = self.space.layer_deltas
            opts = [d for d in deltas if max(1, L + d) != L] or list(deltas)
            cap = self.max_layers[i]
            v = self._memo[key] = tuple(max(1, L + d) if cap is None else min(cap, max(1, L + d))
                                        for d in opts)
        return v

    # ---- the cheapest network of the space: a lower bound for every budget -----
    def smallest(self, seed: Candidate) -> Candidate:
        """Every mutable channel at the minimum, L = 1, the cheapest kernel.

        Params, MACs, tinynas FLOPs and layers all grow with channels, L and kernel
        volume, so no candidate reachable from this skeleton costs less.
        """
        q = self.q
        blocks = []
        prev = self.stem_in
        for i, b in enumerate(seed):
            kind, cin, cout, s, kt, k, L, btn = b
            if i == self.n - 1:
                blocks.append((kind, prev, cout, s, kt, k, L, btn))
                break
            if kind == SUPER:
                kt2, k2 = min(((a, self.shrink_kernel(i, c)) for a, c in self.kernel_choices),
                              key=lambda p: p[0] * p[1] * p[1])
                blocks.append((kind, prev, q, s, kt2, k2, 1, q))
            else:
                blocks.append((kind, prev, q, s, kt, k, L, btn))
            prev = q
        return tuple(blocks)


def candidate_of(spec: ArchSpec) -> Candidate:
    return spec.key()


def spec_of(cand: Candidate, frames: int, size: int, **fields: Any) -> ArchSpec:
    blocks = tuple(BlockSpec(*b) for b in cand)
    return ArchSpec(blocks=blocks, frames=frames, size=size, **fields)


def blocks_as_dicts(cand: Candidate) -> list[dict]:
    return [BlockSpec(*b).to_dict() for b in cand]


def candidate_from_dicts(blocks: Sequence[Mapping], where: str = "<candidate>") -> Candidate:
    spec = ArchSpec.from_dict({"frames": 1, "size": 1 << 12, "blocks": list(blocks)}, where)
    return spec.key()
