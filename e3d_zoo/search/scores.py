"""Pluggable zero-cost scores for the search, by name.

A score here has the additive stage form of the STEntr-Score: terms per layer of a
top-level block (functions of the block and the post-stride feature size ``r`` only),
added one at a time from the network's first layer to each stage end, plus
``log(channels there)`` (:func:`e3d_zoo.stentr.channel_term`), then weighted over
stages (:func:`e3d_zoo.stentr.weighted_sum`). That form is what lets the search cache
the terms per (block position, block) and score a candidate with a handful of lookups
and additions, in the reference's order, so bit for bit. ``reference`` is the slow,
authoritative function the fast path is tested equal to. A term function raises
:class:`~e3d_zoo.errors.ArchError` where the score is undefined.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .. import stentr
from ..errors import SearchError
from ..spec import ArchSpec, BlockSpec

LayerTerms = Callable[[BlockSpec, int, int], tuple]  # (block, frames, r after stride) -> terms
Reference = Callable[[ArchSpec, int, int, Optional[Sequence[float]]], float]


@dataclass(frozen=True)
class Score:
    name: str
    description: str
    layer_terms: LayerTerms
    reference: Reference


def _stentr_terms(b: BlockSpec, frames: int, r: int) -> tuple:
    return stentr.layer_terms(b, frames, r, refine=True)


def _entropy_terms(b: BlockSpec, frames: int, r: int) -> tuple:
    return stentr.layer_terms(b, frames, r, refine=False)


def _stentr_ref(spec: ArchSpec, frames: int, size: int, w: Optional[Sequence[float]]) -> float:
    return stentr.stentr_score(spec, frames, size, w, refine=True)


def _entropy_ref(spec: ArchSpec, frames: int, size: int, w: Optional[Sequence[float]]) -> float:
    return stentr.stentr_score(spec, frames, size, w, refine=False)


SCORES: dict[str, Score] = {
    "stentr": Score("stentr", "STEntr-Score: entropy with the spatio-temporal refinement factor",
                    _stentr_terms, _stentr_ref),
    "entropy": Score("entropy", "ablation: the entropy score without refinement (alpha = 1)",
                     _entropy_terms, _entropy_ref),
}


def register_score(score: Score) -> None:
    """Add a score of the additive stage form (see the module docstring)."""
    SCORES[score.name] = score


def get_score(name: str) -> Score:
    try:
        return SCORES[name]
    except KeyError:
        raise SearchError(f"unknown score {name!r}; expected one of {sorted(SCORES)}") from None
