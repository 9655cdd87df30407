"""Numerical verification of an artifact on its real runtime against PyTorch.

Both sides get the same clips (seeded random clips, plus any real decoded clips the
caller passes) and the artifact's logits are judged by the :class:`Criteria` of its
precision (:mod:`e3d_runtime.criteria`: relative error, cosine similarity, top-1 and top-k
agreement, all scaled to the reference logits). Verification refuses reference logits
that cannot reveal a wrong artifact (:func:`e3d_runtime.criteria.check_reference`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from e3d_runtime.criteria import Agreement, Criteria, check_reference, compare, criteria_for, summarize
from e3d_zoo.errors import ExportError, VerificationError


@dataclass
class VerificationResult:
    """Which artifact ran where, and its :class:`Agreement` (whose fields read through)."""

    artifact: str
    backend: str
    precision: str
    clips: int
    clip_shape: list
    criteria: Dict[str, Any]
    agreement: Agreement

    def __getattr__(self, name: str) -> Any:  # max_rel_err, min_cosine, ..., failed, passed
        if name == "agreement":
            raise AttributeError(name)
        return getattr(self.agreement, name)

    @property
    def criterion(self) -> str:
        return Criteria.from_dict(self.criteria).describe()

    def to_dict(self) -> Dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "agreement"}
        return {**d, **self.agreement.to_dict(), "criterion": self.criterion}


def random_clips(n: int, *, frames: int, size: int, in_chans: int = 3, seed: int = 0) -> np.ndarray:
    """Normalized-scale random clips (N, C, T, H, W), reproducible by ``seed``.

    Values are rounded to float16 so a folder can store them at half the size and
    still reproduce exactly the float32 inputs its reference logits came from.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, in_chans, frames, size, size), dtype=np.float32)
    return x.astype(np.float16).astype(np.float32)


def randomize_statistics(model: nn.Module, seed: int = 0, *, scale_head: bool = True,
                         clips: Optional[np.ndarray] = None) -> nn.Module:
    """Give an untrained model trained-like numbers, in place, and put it in eval mode.

    A freshly built E3D has identity BatchNorm statistics and zero-initialized
    residual branches (its logits are ~1e-5 and most branches compute nothing), so no
    check against it can fail on a wrong artifact. This sets random BN affine terms
    (gamma in [0.5, 1.5], beta in [-0.2, 0.2]; gamma in [0.1, 0.3] for the BNs the model
    zero-initializes, the last of each residual branch, as training leaves them small:
    with large ones E3D-S turns so sensitive that rounding its weights to fp16 moves the
    logits by 7 %), then measures the running statistics
    on ``clips`` (default: 2 seeded random clips at the model's shape) the way BN
    recalibration does, so every layer sees normalized, input-dependent activations;
    with ``scale_head`` the linear layers get unit-variance weights so logits are
    O(1). Random statistics alone (without the measurement) wash the input out of a
    network as deep as E3D-S. For verification and benchmarks only.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                lo, hi = (0.1, 0.3) if not m.weight.any() else (0.5, 1.5)
                m.weight.copy_(torch.rand(n, generator=g) * (hi - lo) + lo)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            elif scale_head and isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
        if bns:
            if clips is None:
                spec = getattr(model, "spec", None)
                if spec is None:
                    raise ExportError("randomize_statistics: pass clips= for a model without a spec")
                clips = random_clips(2, frames=spec.frames, size=spec.size,
                                     in_chans=getattr(model, "in_chans", 3), seed=seed + 1000)
            momenta = [m.momentum for m in bns]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
            model.train()
            model(torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)))
            for m, mom in zip(bns, momenta):
                m.momentum = mom
    return model.eval()


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


def judge(ref: np.ndarray, got: np.ndarray, *, artifact: str, backend: str, precision: str,
          criteria: Optional[Criteria] = None, clip_shape: Optional[list] = None,
          raise_on_fail: bool = True) -> VerificationResult:
    """Judge ``got`` against ``ref`` by ``criteria`` (default: those of ``precision``).

    The failure message names the artifact, the runtime and every failed criterion.
    """
    crit = criteria or criteria_for(precision)
    agreement = compare(ref, got, crit)
    result = VerificationResult(artifact=artifact, backend=backend, precision=precision,
                                clips=int(len(ref)), clip_shape=list(clip_shape or []),
                                criteria=crit.to_dict(), agreement=agreement)
    if raise_on_fail and not agreement.passed:
        raise VerificationError(f"{artifact}: verification failed on {backend} ({precision}): "
                                + summarize(agreement))
    return result


def verify_backend(backend: Any, model: nn.Module, clips: np.ndarray, *, artifact: str = "",
                   precision: str = "fp32", criteria: Optional[Criteria] = None,
                   reference: Optional[np.ndarray] = None, batch: Optional[int] = 1,
                   raise_on_fail: bool = True) -> VerificationResult:
    """Compare ``backend.run`` with ``model`` on ``clips``; raise VerificationError on failure."""
    ref = reference_logits(model, clips) if reference is None else reference
    check_reference(ref, f"{artifact or backend.name}: reference logits")
    got = backend_logits(backend, clips, batch)
    return judge(ref, got, artifact=artifact or getattr(backend, "name", "?"),
                 backend=getattr(backend, "name", "?"), precision=precision, criteria=criteria,
                 clip_shape=list(clips.shape[1:]), raise_on_fail=raise_on_fail)


def verify_artifact(path: Any, model: nn.Module, *, backend: str = "onnxruntime",
                    clips: Optional[np.ndarray] = None, n_clips: int = 4, frames: Optional[int] = None,
                    size: Optional[int] = None, threads: Optional[int] = None,
                    precision: str = "fp32", criteria: Optional[Criteria] = None,
                    raise_on_fail: bool = True, **backend_options: Any) -> VerificationResult:
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
    return verify_backend(be, model, clips, artifact=str(path), precision=precision, criteria=criteria,
                          raise_on_fail=raise_on_fail)
