"""The STEntr-Score (spatio-temporal entropy score): pure functions of an ArchSpec.

Definitions: ``shared/reference/E3D_DEFINITIONS.md``. A running integer feature
size r starts at R; each top-level block first sets r = floor(r / s), then adds
one term per conv (plain block) or residual layer (super-block), all at that r.

The ablation ``refine=False`` drops the spatio-temporal refinement factor
(alpha = 1 everywhere): the plain entropy score of a 3D CNN.
"""
from __future__ import annotations

import math
from typing import Sequence

from .errors import ArchError
from .spec import ArchSpec, BlockSpec

DEFAULT_STAGE_WEIGHTS = (0.0, 0.0, 0.0, 0.0, 1.0)
# cos can reach 1 when (kt, k, k) is parallel to (T, r, r); -ln(0) is infinite, so
# clamp. Never hit by the reference space at its clip shapes.
_MIN_ONE_MINUS_COS = 1e-12


def refinement_factor(frames: int, r: int, kt: int, k: int) -> float:
    """alpha: 1 for k == 1, else -ln(1 - cos((T, r, r), (kt, k, k)))."""
    if k == 1:
        return 1.0
    dot = frames * kt + 2 * r * k
    norm = math.sqrt(frames * frames + 2 * r * r) * math.sqrt(kt * kt + 2 * k * k)
    cos = dot / norm
    return -math.log(max(1.0 - cos, _MIN_ONE_MINUS_COS))


def block_terms(b: BlockSpec, frames: int, r: int, refine: bool = True) -> float:
    """Sum of the block's terms at the post-stride feature size ``r``."""
    alpha = refinement_factor(frames, r, b.kt, b.k) if refine else 1.0
    kvol = b.kt * b.k * b.k * alpha
    if not b.is_super:
        return 0.5 * math.log(b.in_channels * kvol)
    total = 0.5 * math.log(b.in_channels * b.btn * kvol)
    if b.L > 1:
        total += (b.L - 1) * 0.5 * math.log(b.out_channels * b.btn * kvol)
    return total


def stage_scores(spec: ArchSpec, frames: int | None = None, size: int | None = None,
                 refine: bool = True) -> list[float]:
    """Score of each stage: terms up to the stage's end + ln(channels there)."""
    T = spec.frames if frames is None else frames
    r = spec.size if size is None else size
    ends = set(spec.stage_ends())
    running = 0.0
    scores = []
    for i, b in enumerate(spec.blocks):
        r = r // b.stride
        running += block_terms(b, T, r, refine)
        if i in ends:
            scores.append(running + math.log(b.out_channels))
    return scores


def stentr_score(spec: ArchSpec, frames: int | None = None, size: int | None = None,
                 stage_weights: Sequence[float] | None = None, refine: bool = True) -> float:
    """The STEntr-Score. Default weights [0, 0, 0, 0, 1] give the final-stage form."""
    scores = stage_scores(spec, frames, size, refine)
    if stage_weights is None:
        return scores[-1]
    if len(stage_weights) != len(scores):
        raise ArchError(f"stage_weights: expected {len(scores)} weights (one per stage of "
                        f"{spec.name or 'the architecture'}), found {len(stage_weights)}")
    if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in stage_weights):
        raise ArchError(f"stage_weights: expected finite numbers, found {list(stage_weights)}")
    return float(sum(w * s for w, s in zip(stage_weights, scores)))


def entropy_score(spec: ArchSpec, frames: int | None = None, size: int | None = None,
                  stage_weights: Sequence[float] | None = None) -> float:
    """Ablation: the entropy score without spatio-temporal refinement (alpha = 1)."""
    return stentr_score(spec, frames, size, stage_weights, refine=False)
