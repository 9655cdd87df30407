"""Numerical verification of an exported artifact on its real runtime against PyTorch.

Both sides get the same clips (seeded random clips, plus any real decoded clips the
caller passes). Reported: max abs error on logits, max error relative to the largest
reference logit (elementwise relative error is meaningless for logits near 0), and
top-1 agreement. fp32 artifacts must be within ``abs_tol`` (1e-4 by default);
reduced precisions (fp16, bf16, int8) by top-1 agreement (``min_top1``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from e3d_zoo.errors import ExportError, VerificationError

DEFAULT_ABS_TOL = 1e-4
DEFAULT_MIN_TOP1 = 0.9


@dataclass
class VerificationResult:
    artifact: str
    backend: str
    precision: str
    clips: int
    clip_shape: list
    max_abs_err: float
    max_rel_err: float
    top1_agreement: float
    criterion: str
    passed: bool

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def randomize_statistics(model: nn.Module, seed: int = 0, *, scale_head: bool = True) -> nn.Module:
    """Give an untrained model "trained-like" numbers, in place, and put it in eval mode.

    A freshly built E3D has identity BatchNorm statistics, zero-initialized residual
    branches and near-zero logits, so an export check against it passes an absolute
    tolerance too easily. Random BN statistics and affine terms (and, with
    ``scale_head``, unit-variance linear layers) make logits O(1), so agreement really
    tests the conv arithmetic. For verification and benchmarks only.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            elif scale_head and isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
    return model.eval()


def random_clips(n: int, *, frames: int, size: int, in_chans: int = 3, seed: int = 0) -> np.ndarray:
    """Normalized-scale random clips (N, C, T, H, W), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, in_chans, frames, size, size), dtype=np.float32)


def reference_logits(model: nn.Module, clips: np.ndarray, batch: int = 4) -> np.ndarray:
    model = model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(clips), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(clips[i:i + batch]))).float().numpy())
    return np.concatenate(outs, axis=0)


def backend_logits(backend: Any, clips: np.ndarray, batch: Optional[int] = 1) -> np.ndarray:
    """Run ``backend`` clip by clip (``batch=1`` works for static-batch exports too)."""
    batch = batch or len(clips)
    return np.concatenate([backend.run(clips[i:i + batch]) for i in range(0, len(clips), batch)], axis=0)


def compare(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    if ref.shape != got.shape:
        raise VerificationError(f"logits shape mismatch: PyTorch {ref.shape}, artifact {got.shape}")
    if not np.all(np.isfinite(got)):
        raise VerificationError("the artifact produced non-finite logits (NaN or inf)")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    scale = max(float(np.abs(ref).max()), 1e-12)
    return {"max_abs_err": float(diff.max()), "max_rel_err": float(diff.max() / scale),
            "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1)))}


def verify_backend(backend: Any, model: nn.Module, clips: np.ndarray, *, artifact: str = "",
                   precision: str = "fp32", abs_tol: float = DEFAULT_ABS_TOL,
                   min_top1: float = DEFAULT_MIN_TOP1, reference: Optional[np.ndarray] = None,
                   batch: Optional[int] = 1, raise_on_fail: bool = True) -> VerificationResult:
    """Compare ``backend.run`` with ``model`` on ``clips``; raise VerificationError past tolerance.

    fp32 is judged by ``abs_tol`` on logits, anything else by ``min_top1``.
    """
    ref = reference_logits(model, clips) if reference is None else reference
    got = backend_logits(backend, clips, batch)
    stats = compare(ref, got)
    if precision == "fp32":
        criterion = f"max_abs_err <= {abs_tol:g}"
        passed = stats["max_abs_err"] <= abs_tol
    else:
        criterion = f"top1_agreement >= {min_top1:g} on {len(clips)} clips"
        passed = stats["top1_agreement"] >= min_top1
    result = VerificationResult(artifact=artifact, backend=getattr(backend, "name", "?"),
                                precision=precision, clips=int(len(clips)),
                                clip_shape=list(clips.shape[1:]), criterion=criterion,
                                passed=bool(passed), **stats)
    if raise_on_fail and not passed:
        raise VerificationError(
            f"{artifact or backend.name}: verification failed on {backend.name} ({precision}): "
            f"max abs err {stats['max_abs_err']:.3g}, max rel err {stats['max_rel_err']:.3g}, "
            f"top-1 agreement {stats['top1_agreement']:.3f}; required {criterion}")
    return result


def verify_artifact(path: Any, model: nn.Module, *, backend: str = "onnxruntime",
                    clips: Optional[np.ndarray] = None, n_clips: int = 4, frames: Optional[int] = None,
                    size: Optional[int] = None, threads: Optional[int] = None,
                    precision: str = "fp32", abs_tol: float = DEFAULT_ABS_TOL,
                    min_top1: float = DEFAULT_MIN_TOP1, raise_on_fail: bool = True,
                    **backend_options: Any) -> VerificationResult:
    """Load ``path`` on ``backend`` and verify it against ``model`` (see :func:`verify_backend`)."""
    from e3d_zoo.runtime import load_backend

    if clips is None:
        spec = getattr(model, "spec", None)
        frames = frames or getattr(spec, "frames", None)
        size = size or getattr(spec, "size", None)
        if not frames or not size:
            raise ExportError("verify_artifact: pass clips=, or frames= and size=, for a model "
                              "without a spec")
        clips = random_clips(n_clips, frames=frames, size=size, in_chans=getattr(model, "in_chans", 3))
    be = load_backend(backend, path, threads=threads, **backend_options)
    return verify_backend(be, model, clips, artifact=str(path), precision=precision, abs_tol=abs_tol,
                          min_top1=min_top1, raise_on_fail=raise_on_fail)
