"""Score and costs of a candidate without building an nn.Module.

Strides never mutate, so the feature size at every block position is fixed for a
search; every per-block number (score terms, tinynas FLOPs, MACs, params, layers)
then depends only on (position, block). Each is computed once by the authoritative
per-block functions of ``complexity.py``/``stentr.py`` and cached; a candidate is
a handful of dict lookups, summed in the same order as the authoritative functions
(the score's layer terms one at a time, as the reference adds them), so results are
bit-for-bit equal to them (tests/search/test_evaluate.py).

The score may be taken at another frame size than the costs (``score_size``): the
reference's E3D-M and E3D-L searches count FLOPs at 224 and 312 but score STEntr at
160, its score's default. A candidate whose score is undefined there (a kernel
parallel to the clip's (T, r, r), see :mod:`e3d_zoo.stentr`) scores ``None``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from .. import complexity, stentr
from ..errors import ArchError
from ..spec import ArchSpec, BlockSpec
from .scores import Score
from .space import COUT, Candidate


class Costs(NamedTuple):
    score: Optional[float]  # None: undefined at this clip shape
    tinynas_flops: float
    macs: int
    params: int
    layers: int


class FastEvaluator:
    """Evaluates candidates of one skeleton (block kinds and strides of ``seed``)."""

    def __init__(self, seed: ArchSpec, frames: int, size: int, score: Score,
                 stage_weights: Optional[Sequence[float]] = None, num_classes: Optional[int] = 400,
                 score_size: Optional[int] = None):
        self.frames = frames
        self.size = size
        self.score_size = size if score_size is None else score_size
        self.score = score
        self.stage_weights = None if stage_weights is None else tuple(stage_weights)
        self.num_classes = num_classes
        strides = [b.stride for b in seed.blocks]
        self.n = len(strides)
        # Three size conventions, each the one its authoritative function uses:
        # integer floor-divided r after the stride (STEntr, from score_size), float r
        # before it (tinynas FLOPs), integer conv input size (MACs).
        self.r_score, self.r_flops, self.h_macs = [], [], []
        r_int, r_float, h = self.score_size, float(size), size
        for b in seed.blocks:
            r_int = r_int // b.stride
            self.r_score.append(r_int)
            self.r_flops.append(r_float)
            r_float = r_float / b.stride
            self.h_macs.append(h)
            h = complexity.conv_out(h, b.k, b.stride)
        ends = set(seed.stage_ends())
        self.is_end = tuple(i in ends for i in range(self.n))
        self.n_stages = len(ends)
        # The head (classifier) never mutates and only depends on the last block's out.
        self.head_hidden = seed.head_hidden
        self.head_macs = (complexity.macs(seed, frames, size, num_classes)
                          - complexity.macs(seed, frames, size, None))
        self.head_params = complexity.head_params(seed, num_classes)
        self.caches: list[dict] = [{} for _ in range(self.n)]
        self._logs: dict[int, float] = {}
        self.undefined: dict[tuple[int, tuple], str] = {}  # (position, block) -> why

    def block_entry(self, i: int, b: tuple) -> tuple:
        e = self.caches[i].get(b)
        if e is None:
            bs = BlockSpec(*b)
            try:
                terms = tuple(self.score.layer_terms(bs, self.frames, self.r_score[i]))
            except ArchError as exc:
                terms = None
                self.undefined[(i, b)] = str(exc)
            e = (terms,
                 complexity.block_tinynas_flops(bs, self.frames, self.r_flops[i]),
                 complexity.block_macs(bs, self.frames, self.h_macs[i]),
                 complexity.block_params(bs), complexity.block_layers(bs))
            self.caches[i][b] = e
        return e

    def _log(self, c: int) -> float:
        v = self._logs.get(c)
        if v is None:
            v = self._logs[c] = stentr.channel_term(c)
        return v

    def costs(self, cand: Candidate) -> tuple[float, int, int, int, list]:
        """(tinynas_flops, macs, params, layers, entries): the budgets' numbers."""
        flops = 0.0
        macs = self.head_macs
        params = self.head_params
        layers = 0
        entries = []
        caches = self.caches
        for i, b in enumerate(cand):
            e = caches[i].get(b)
            if e is None:
                e = self.block_entry(i, b)
            flops += e[1]
            macs += e[2]
            params += e[3]
            layers += e[4]
            entries.append(e)
        return flops, macs, params, layers, entries

    def score_from(self, cand: Candidate, entries: list) -> Optional[float]:
        """The score from cached terms, or None where it is undefined."""
        running = 0.0
        if self.stage_weights is None:
            for e in entries:
                terms = e[0]
                if terms is None:
                    return None
                for t in terms:
                    running += t
            return running + self._log(cand[-1][COUT])
        scores = []
        is_end = self.is_end
        for i, e in enumerate(entries):
            terms = e[0]
            if terms is None:
                return None
            for t in terms:
                running += t
            if is_end[i]:
                scores.append(running + self._log(cand[i][COUT]))
        return stentr.weighted_sum(scores, self.stage_weights)

    def why_undefined(self, cand: Candidate) -> Optional[str]:
        """Why ``cand``'s score is undefined (None if it is defined)."""
        for i, b in enumerate(cand):
            self.block_entry(i, b)
            if (i, b) in self.undefined:
                return f"blocks[{i}]: {self.undefined[(i, b)]}"
        return None

    def evaluate(self, cand: Candidate) -> Costs:
        flops, macs, params, layers, entries = self.costs(cand)
        return Costs(self.score_from(cand, entries), flops, macs, params, layers)

    def cache_size(self) -> int:
        return sum(len(c) for c in self.caches)
