"""Agreement criteria: when are an artifact's logits "the same" as the reference's?

Torch-free (numpy only), so it lives in the edge install (``e3d_runtime``; the old name
``e3d_export.criteria`` is the same module): the folder verifier (``e3d-export --verify``)
runs it on an edge box, and issue 15's ``--precision auto`` asks the same question of a candidate
precision (:func:`agrees`).

Every criterion scales with the output, so an artifact that returns zeros, or a
network whose logits are all ~1e-5, cannot pass by being small:

* ``max_rel_err``: ``max |got - ref| / max |ref|`` over every clip and class;
* ``min_cosine``: the worst clip's cosine similarity between its logit vectors;
* ``min_top1``: the share of clips whose top-1 class agrees. A clip whose artifact
  top-1 is within the ``max_rel_err`` tolerance of the reference top-1 logit counts as
  agreeing: near-ties flip under any rounding and say nothing about the artifact;
* ``min_topk``: mean overlap of the top-k class sets (k = ``topk``, at most half
  the classes);
* ``min_exact_top1`` and ``max_prob_diff`` (off unless set): the share of clips whose
  top-1 class is exactly the reference's, and the largest change of any class's softmax
  probability. :func:`selection_criteria` sets them for ``e3d-export --precision auto``,
  which asks a reduced precision to agree with fp32 on held-out clips of the training
  distribution before it may replace fp32.

One :class:`Criteria` per precision, in :data:`CRITERIA`; the INT8 ones are the
loosest that still catch the faults INT8 can catch (see docs/export.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from .errors import ExportError, VerificationError


@dataclass(frozen=True)
class Criteria:
    """Thresholds one artifact's logits must meet against the reference logits."""

    precision: str
    max_rel_err: float
    min_cosine: float
    min_top1: float
    min_topk: float
    topk: int = 5
    min_exact_top1: float = 0.0
    max_prob_diff: float = 1.0
    # judge only clips first_clip.. (a folder's data clips, stored after its random ones):
    # a quantized artifact is calibrated on data, and noise drives its activations outside
    # the calibrated ranges, where its error says nothing about the artifact (docs/export.md)
    first_clip: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Criteria":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        s = (f"max_rel_err <= {self.max_rel_err:g}, cosine >= {self.min_cosine:g}, "
             f"top-1 >= {self.min_top1:g}, top-k overlap >= {self.min_topk:g} (k <= {self.topk})")
        if self.min_exact_top1 > 0:
            s += f", exact top-1 >= {self.min_exact_top1:g}"
        if self.max_prob_diff < 1:
            s += f", probability change <= {self.max_prob_diff:g}"
        if self.first_clip:
            s += f", on clips {self.first_clip}.. (the data clips)"
        return s


# Calibrated on our CPUs (docs/export.md, "Verification" has the tables and commands):
# untouched fp32 artifacts differ from PyTorch by ~1e-6 of the logit range (E3D-S and the
# tiny test net), fp16 ones by 1.5e-3 - 2.3e-3 (cosine >= 0.9999975), INT8 ones by
# 0.04 - 0.24 (cosine >= 0.98) on random-weight nets. The injected faults
# (tests/export/test_fault_injection.py) move fp32/fp16 logits by >= 3e-2 (cosine
# <= 0.99965) and INT8 ones by >= 0.4 (cosine <= 0.87), except weights x 1.01, which
# INT8's own error hides. bf16 (8-bit mantissa, 8x fp16's step) is derived, not measured.
CRITERIA: Dict[str, Criteria] = {
    "fp32": Criteria("fp32", max_rel_err=1e-4, min_cosine=0.99999, min_top1=1.0, min_topk=1.0),
    "fp16": Criteria("fp16", max_rel_err=1e-2, min_cosine=0.9999, min_top1=1.0, min_topk=0.9),
    "bf16": Criteria("bf16", max_rel_err=5e-2, min_cosine=0.999, min_top1=0.75, min_topk=0.8),
    "int8": Criteria("int8", max_rel_err=0.35, min_cosine=0.95, min_top1=0.75, min_topk=0.6),
}
PRECISION_ALIASES = {"fp16 weights": "fp16", "float32": "fp32", "float16": "fp16", "f32": "fp32",
                     "f16": "fp16", "int8+fp16": "int8", "tf32": "fp32"}


# `--precision auto` (issue 15): a reduced precision replaces fp32 only if, on held-out clips
# of the training distribution, >= 99 % of the clips keep exactly fp32 PyTorch's top-1 class
# and no class probability moves by more than 0.1, judged on at least SELECTION_MIN_CLIPS
# clips (fewer cannot show 99 %). Fixed before any INT8/bf16 artifact was measured.
SELECTION_MIN_EXACT_TOP1 = 0.99
SELECTION_MAX_PROB_DIFF = 0.1
SELECTION_MIN_CLIPS = 100


def selection_criteria(precision: str) -> Criteria:
    """The criteria of ``precision`` plus the exact-top-1 and probability bounds above."""
    return criteria_for(precision, min_exact_top1=SELECTION_MIN_EXACT_TOP1,
                        max_prob_diff=SELECTION_MAX_PROB_DIFF)


def criteria_for(precision: str, **overrides: Any) -> Criteria:
    """The :class:`Criteria` of ``precision`` (fp32, fp16, bf16, int8), with overrides."""
    key = PRECISION_ALIASES.get(precision, precision)
    if key not in CRITERIA:
        raise ExportError(f"precision {precision!r}: no verification criteria; expected one of "
                          f"{sorted(CRITERIA)}")
    base = CRITERIA[key]
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **given) if given else base


@dataclass
class Agreement:
    """How ``got`` compares with ``ref`` and which criteria it failed."""

    max_abs_err: float
    max_rel_err: float
    min_cosine: float
    top1_agreement: float
    topk_agreement: float
    reference_scale: float
    failed: List[str] = field(default_factory=list)
    exact_top1: float = 0.0
    max_prob_diff: float = 1.0
    clips: int = 0

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, np.finfo(np.float64).tiny)
    return np.where(both_zero, 1.0, cos)


def compare(ref: np.ndarray, got: np.ndarray, criteria: Criteria) -> Agreement:
    """Statistics of ``got`` against ``ref`` (both (N, classes)) judged by ``criteria``."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if criteria.first_clip:
        if criteria.first_clip >= len(ref):
            return Agreement(float("inf"), float("inf"), -1.0, 0.0, 0.0, 0.0,
                             failed=[f"the criteria judge clips {criteria.first_clip}.., there are "
                                     f"only {len(ref)}"])
        ref, got = ref[criteria.first_clip:], got[criteria.first_clip:]
    if ref.shape != got.shape:
        return Agreement(float("inf"), float("inf"), -1.0, 0.0, 0.0, 0.0,
                         failed=[f"output shape {tuple(got.shape)} != reference {tuple(ref.shape)}"])
    if not np.all(np.isfinite(got)):
        return Agreement(float("inf"), float("inf"), -1.0, 0.0, 0.0, 0.0,
                         failed=["non-finite logits (NaN or inf)"])
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    diff = np.abs(ref - got)
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    cos = float(_cosine_rows(ref, got).min()) if len(ref) else 1.0
    # a clip agrees on top-1 when the artifact's pick is (within tolerance) as good as the reference's
    picked = ref[np.arange(len(ref)), got.argmax(1)]
    top1 = float(np.mean(picked >= ref.max(1) - criteria.max_rel_err * scale)) if len(ref) else 1.0
    k = max(1, min(criteria.topk, ref.shape[1] // 2)) if ref.ndim == 2 and ref.shape[1] > 1 else 1
    ref_k = np.argsort(-ref, axis=1)[:, :k]
    got_k = np.argsort(-got, axis=1)[:, :k]
    topk = float(np.mean([len(set(r) & set(g)) / k for r, g in zip(ref_k, got_k)])) if len(ref) else 1.0
    exact = float(np.mean(ref.argmax(1) == got.argmax(1))) if len(ref) else 1.0
    prob_diff = float(np.abs(_softmax(ref) - _softmax(got)).max()) if ref.size else 0.0
    failed = []
    if rel > criteria.max_rel_err:
        failed.append(f"max_rel_err {rel:.3g} > {criteria.max_rel_err:g}")
    if cos < criteria.min_cosine:
        failed.append(f"cosine {cos:.6f} < {criteria.min_cosine:g}")
    if top1 < criteria.min_top1:
        failed.append(f"top-1 agreement {top1:.3f} < {criteria.min_top1:g}")
    if topk < criteria.min_topk:
        failed.append(f"top-{k} overlap {topk:.3f} < {criteria.min_topk:g}")
    if exact < criteria.min_exact_top1:
        failed.append(f"exact top-1 agreement {exact:.4f} < {criteria.min_exact_top1:g}")
    if prob_diff > criteria.max_prob_diff:
        failed.append(f"probability change {prob_diff:.3g} > {criteria.max_prob_diff:g}")
    return Agreement(max_abs_err=max_abs, max_rel_err=rel, min_cosine=cos, top1_agreement=top1,
                     topk_agreement=topk, reference_scale=scale, failed=failed, exact_top1=exact,
                     max_prob_diff=prob_diff, clips=int(len(ref)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def agrees(ref: np.ndarray, got: np.ndarray, precision: str, **overrides: Any) -> bool:
    """Does ``got`` (e.g. a bf16 or INT8 run) still agree with the fp32 ``ref``?"""
    return compare(ref, got, criteria_for(precision, **overrides)).passed


# Below these the reference logits cannot tell a working artifact from a broken one.
MIN_CLIP_SPREAD = 1e-3   # clips must differ: std over clips / RMS logit
MIN_CLASS_SPREAD = 1e-3  # classes must differ: std over classes / RMS logit


def reference_problems(ref: np.ndarray) -> List[str]:
    """Why ``ref`` (N, classes) is too degenerate to verify anything against ([] if fine).

    A network that ignores its input (the same logits for every clip) or whose logits
    are all equal cannot reveal a wrong artifact: an artifact returning a constant
    would agree with it. Untrained E3Ds with identity BatchNorm statistics come close.
    """
    ref = np.asarray(ref, dtype=np.float64)
    problems = []
    if ref.ndim != 2 or ref.size == 0:
        return [f"expected (clips, classes) logits, found shape {ref.shape}"]
    if not np.all(np.isfinite(ref)):
        return ["the reference logits are not finite"]
    rms = float(np.sqrt(np.mean(ref ** 2)))
    if rms == 0.0:
        return ["the reference logits are all zero"]
    if len(ref) > 1:
        clip_spread = float(ref.std(axis=0).mean()) / rms
        if clip_spread < MIN_CLIP_SPREAD:
            problems.append(f"every clip gives nearly the same logits (spread {clip_spread:.2g} of "
                            f"their RMS, need >= {MIN_CLIP_SPREAD:g}): the network ignores its input")
    if ref.shape[1] > 1:
        class_spread = float(ref.std(axis=1).mean()) / rms
        if class_spread < MIN_CLASS_SPREAD:
            problems.append(f"all classes get nearly the same logit (spread {class_spread:.2g} of "
                            f"their RMS, need >= {MIN_CLASS_SPREAD:g})")
    return problems


def check_reference(ref: np.ndarray, what: str = "the reference") -> None:
    """Raise VerificationError when :func:`reference_problems` finds any."""
    problems = reference_problems(ref)
    if problems:
        raise VerificationError(
            f"{what}: cannot verify against these logits: " + "; ".join(problems)
            + ". Untrained weights? Give trained weights, or randomize the BatchNorm statistics "
              "(e3d_export.randomize_statistics) so every branch computes")


def summarize(agreement: Agreement, criteria: Optional[Criteria] = None) -> str:
    """One line: the statistics, and what failed when something did."""
    s = (f"max rel err {agreement.max_rel_err:.2e}, cosine {agreement.min_cosine:.6f}, "
         f"top-1 {agreement.top1_agreement:.2f}, top-k {agreement.topk_agreement:.2f}")
    if agreement.failed:
        s += "; failed: " + "; ".join(agreement.failed)
    return s
