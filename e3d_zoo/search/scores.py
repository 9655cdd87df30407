"""Pluggable zero-cost scores for the search, by name.

A score here has the additive stage form of the STEntr-Score: a term per top-level
block (a function of the block and the post-stride feature size ``r`` only), summed
to each stage end, plus ``ln(channels there)``, then weighted over stages. That form
is what lets the search cache one term per (block position, block) and score a
candidate with a handful of lookups. ``reference`` is the slow, authoritative
function the fast path is tested equal to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .. import stentr
from ..errors import SearchError
from ..spec import ArchSpec, BlockSpec

BlockTerm = Callable[[BlockSpec, int, int], float]  # (block, frames, r after stride)
Reference = Callable[[ArchSpec, int, int, Optional[Sequence[float]]], float]


@dataclass(frozen=True)
class Score:
    name: str
    description: str
    block_term: BlockTerm
    reference: Reference


def _stentr_term(b: BlockSpec, frames: int, r: int) -> float:
    return stentr.block_terms(b, frames, r, refine=True)


def _entropy_term(b: BlockSpec, frames: int, r: int) -> float:
    return stentr.block_terms(b, frames, r, refine=False)


def _stentr_ref(spec: ArchSpec, frames: int, size: int, w: Optional[Sequence[float]]) -> float:
    return stentr.stentr_score(spec, frames, size, w, refine=True)


def _entropy_ref(spec: ArchSpec, frames: int, size: int, w: Optional[Sequence[float]]) -> float:
    return stentr.stentr_score(spec, frames, size, w, refine=False)


SCORES: dict[str, Score] = {
    "stentr": Score("stentr", "STEntr-Score: entropy with the spatio-temporal refinement factor",
                    _stentr_term, _stentr_ref),
    "entropy": Score("entropy", "ablation: the entropy score without refinement (alpha = 1)",
                     _entropy_term, _entropy_ref),
}


def register_score(score: Score) -> None:
    """Add a score of the additive stage form (see the module docstring)."""
    SCORES[score.name] = score


def get_score(name: str) -> Score:
    try:
        return SCORES[name]
    except KeyError:
        raise SearchError(f"unknown score {name!r}; expected one of {sorted(SCORES)}") from None
