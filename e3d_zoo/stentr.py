"""The STEntr-Score (spatio-temporal entropy score): pure functions of an ArchSpec.

Definitions: ``shared/reference/E3D_DEFINITIONS.md``. A running integer feature
size r starts at R; each top-level block first sets r = floor(r / s), then adds
one term per conv (plain block) or residual layer (super-block), all at that r.

The floating-point arithmetic is the reference implementation's, operation for
operation (``get_alpha_w`` and ``get_stentr_forward`` in its ``blocks_basic_3D.py``
and ``super_res3d_k1dwk1.py``, ``ratio_score`` in ``compute_stentr.py``):

* alpha = -log(1 - ((T/|a|)(kt/|b|) + (r/|a|)(k/|b|)) + (r/|a|)(k/|b|)), with
  |a| = sqrt(T^2 + 2 r^2), |b| = sqrt(kt^2 + 2 k^2) (numpy's norm of exact integers);
* a plain block's term is log(sqrt(in * kt * k^2 * alpha)); a residual layer's is
  (log(sqrt(in)) + log(sqrt(kt * k^2 * alpha))) + log(sqrt(btn));
* a stage's score adds every layer term from the first block on, one at a time,
  to 0.0, then log(channels at the stage end); weighted stages are summed in order.

Logarithms are numpy's (``np.log``), as in the reference: numpy's SIMD log differs
from ``math.log`` in the last bit for about 1 input in 1,000 on AVX-512 machines.
So a score here is bit-identical to what the reference code computes with the same
numpy on the same machine (``tests/test_stentr.py`` checks against the reference's
formulas, written out as the reference writes them).

Where the reference's arithmetic gives no finite number (the clip's (T, r, r) exactly
parallel to a kernel (kt, k, k) can make 1 - cos exactly 0, giving alpha = inf, or
negative, giving nan), :class:`~e3d_zoo.errors.ArchError` is raised naming the
block: the score is undefined there, not a number to rank networks by. When the
computed 1 - cos is positive, however small (e.g. 1.1e-16 for a (1, 5, 5) kernel at
T = 8, r = 40: alpha = 36.74), the value is the reference's, without any clamp.

The ablation ``refine=False`` drops the spatio-temporal refinement factor
(alpha = 1 everywhere): the plain entropy score of a 3D CNN.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .errors import ArchError
from .spec import ArchSpec, BlockSpec

DEFAULT_STAGE_WEIGHTS = (0.0, 0.0, 0.0, 0.0, 1.0)


def _log(x: float) -> float:
    return float(np.log(x))


def _log_sqrt(x: float) -> float:
    return float(np.log(np.sqrt(x)))


def refinement_factor(frames: int, r: int, kt: int, k: int) -> float:
    """alpha: 1 for k == 1, else -log(1 - cos((T, r, r), (kt, k, k))), as the reference
    computes it. ArchError where that is inf or nan (see the module docstring)."""
    if k == 1:
        return 1.0
    # Squared norms of small integers are exact in float64, whatever order numpy's
    # dot product adds them in; sqrt, division and product are correctly rounded, and
    # numpy sums three elements left to right.
    norm_a = math.sqrt(frames * frames + r * r + r * r)
    norm_b = math.sqrt(kt * kt + k * k + k * k)
    t = (frames / norm_a) * (kt / norm_b)
    s = (r / norm_a) * (k / norm_b)
    one_minus_cos = 1 - ((t + s) + s)
    if not one_minus_cos > 0.0:
        what = "0, so alpha = -log(0) = inf" if one_minus_cos == 0.0 else \
            f"{one_minus_cos!r} < 0, so alpha = -log of a negative number = nan"
        raise ArchError(f"STEntr is undefined for a (kt, k, k) = ({kt}, {k}, {k}) kernel at "
                        f"(T, r, r) = ({frames}, {r}, {r}): the vectors are parallel and the "
                        f"reference's floating-point 1 - cos is {what}")
    return -_log(one_minus_cos)


def layer_terms(b: BlockSpec, frames: int, r: int, refine: bool = True) -> tuple[float, ...]:
    """The block's terms at the post-stride feature size ``r``: one per conv (plain
    block) or residual layer (super-block), in order."""
    try:
        alpha = refinement_factor(frames, r, b.kt, b.k) if refine else 1.0
    except ArchError as exc:
        raise ArchError(f"{b.kind} block (in {b.in_channels}, out {b.out_channels}): {exc}") from None
    if not b.is_super:
        return (_log_sqrt(b.in_channels * b.kt * b.k ** 2 * alpha),)
    kernel = _log_sqrt(b.kt * b.k ** 2 * alpha)
    btn = _log_sqrt(b.btn)
    first = (_log_sqrt(b.in_channels) + kernel) + btn
    if b.L == 1:
        return (first,)
    rest = (_log_sqrt(b.out_channels) + kernel) + btn
    return (first,) + (rest,) * (b.L - 1)


def channel_term(channels: int) -> float:
    """log(channels at a stage end)."""
    return _log(channels)


def weighted_sum(scores: Sequence[float], stage_weights: Sequence[float]) -> float:
    """sum(w * s) in stage order; a stage of weight 0 adds 0.0, as in the reference."""
    total = 0.0
    for w, s in zip(stage_weights, scores):
        total += s * w if w != 0 else 0.0
    return total


def stage_scores(spec: ArchSpec, frames: int | None = None, size: int | None = None,
                 refine: bool = True) -> list[float]:
    """Score of each stage: every layer term up to the stage's end + log(channels there)."""
    T = spec.frames if frames is None else frames
    r = spec.size if size is None else size
    ends = set(spec.stage_ends())
    running = 0.0
    scores = []
    for i, b in enumerate(spec.blocks):
        r = r // b.stride
        try:
            terms = layer_terms(b, T, r, refine)
        except ArchError as exc:
            raise ArchError(f"{spec.name or 'architecture'}: blocks[{i}]: {exc}") from None
        for t in terms:
            running += t
        if i in ends:
            scores.append(running + channel_term(b.out_channels))
    return scores


def stentr_score(spec: ArchSpec, frames: int | None = None, size: int | None = None,
                 stage_weights: Sequence[float] | None = None, refine: bool = True) -> float:
    """The STEntr-Score. Default weights [0, 0, 0, 0, 1] give the final-stage form."""
    return combine_stage_scores(stage_scores(spec, frames, size, refine), stage_weights,
                                name=spec.name or "the architecture")


def combine_stage_scores(scores: Sequence[float], stage_weights: Sequence[float] | None = None, *,
                         name: str = "the architecture", what: str = "stage_weights",
                         error: type[Exception] = ArchError) -> float:
    """The STEntr-Score from :func:`stage_scores`: the last stage's, or the ``stage_weights``
    weighted sum (one finite weight per stage, else ``error`` naming ``what`` and ``name``)."""
    if stage_weights is None:
        return scores[-1]
    if len(stage_weights) != len(scores):
        raise error(f"{what}: expected {len(scores)} weights (one per stage of {name}), "
                    f"found {len(stage_weights)}")
    if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in stage_weights):
        raise error(f"{what}: expected finite numbers, found {list(stage_weights)}")
    return weighted_sum(scores, stage_weights)


def entropy_score(spec: ArchSpec, frames: int | None = None, size: int | None = None,
                  stage_weights: Sequence[float] | None = None) -> float:
    """Ablation: the entropy score without spatio-temporal refinement (alpha = 1)."""
    return stentr_score(spec, frames, size, stage_weights, refine=False)
