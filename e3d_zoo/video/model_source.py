"""The PyTorch side of the video pipeline: a zoo model as a classifier's backend + config.

``VideoClassifier.from_model`` (in the torch-free ``e3d_runtime``) imports this module
only when asked for a PyTorch model, so the edge install never needs torch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from e3d_runtime.backends.base import canonical_backend_name, load_backend
from e3d_runtime.criteria import Criteria, compare
from e3d_runtime.errors import BackendError, ConfigError, WeightsError

#: how far an artifact's logits may stray from its --model's, relative to the logits' scale:
#: fp32 exports differ by ~1e-5 of it, fp16 ~1e-2, INT8 a few 1e-2; another network (or
#: other weights) by about the scale itself
ARTIFACT_RTOL = 0.25


def classifier_parts(model: Any = "e3d_s", *, backend: str = "torch",
                     artifact: Optional[str | os.PathLike] = None, threads: Optional[int] = None,
                     weights: Optional[str | os.PathLike] = None, pretrained: bool = False,
                     num_classes: Optional[int] = None,
                     cache_dir: Optional[str | os.PathLike] = None,
                     backend_options: Optional[Mapping[str, Any]] = None,
                     **rest: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """({"backend", "cfg"}, the classifier's other options) for a zoo name, arch file,
    ``hf-hub:`` id, save-pretrained folder (its weights included) or an ``nn.Module``.

    ``pretrained`` loads the published weights (zoo names, ``hf-hub:`` ids);
    ``weights`` loads a local checkpoint instead; with neither the weights are
    random (speed tests only). With ``backend`` other than torch and no
    ``artifact``, the model is exported (e3d_export) into ``cache_dir`` first and
    that artifact is loaded.

    With an ``artifact`` (an e3d-export folder or one exported file) the artifact is
    what runs, on the runtime it is for when ``backend`` is torch, and the model
    supplies the preprocessing; the two must be the same network. The returned
    ``check_artifact`` (called with the classifier, see :func:`check_artifact`) compares
    clip shape and classes, and, when the model has trained weights (``weights``,
    ``pretrained`` or a save-pretrained folder), their logits on two seeded clips.
    """
    from ..zoo import create_model

    name = canonical_backend_name(backend)
    opts = dict(backend_options or {})
    if artifact is not None:
        from e3d_runtime.video.pipeline import artifact_and_cfg

        # the artifact decides the runtime when the caller left it at torch; a folder's
        # choice may come with options (an IR chosen at bf16 runs with precision="bf16")
        runtime, artifact, _, folder_opts = artifact_and_cfg(
            artifact, None if name == "torch" else name)
        name = canonical_backend_name(runtime)
        opts = {**folder_opts, **opts}
    if isinstance(model, torch.nn.Module):
        module = model
    elif Path(os.fspath(model)).is_dir():  # a save_pretrained folder (e3d-train's output)
        from ..hub import from_pretrained

        module = from_pretrained(model, num_classes=num_classes, pretrained=weights is None)
    else:
        extra = {"num_classes": num_classes} if num_classes else {}
        module = create_model(model, pretrained=pretrained, **extra)
    if weights is not None:
        load_weights_strict(module, weights)
    module.eval()
    cfg = dict(module.pretrained_cfg)
    cfg["num_classes"] = getattr(module, "num_classes", cfg.get("num_classes"))
    parts: Dict[str, Any] = {"cfg": cfg, "check_artifact": None}
    if name == "torch":
        parts["backend"] = load_backend("torch", module, threads=threads, **opts)
        return parts, rest
    given = artifact
    if artifact is None:
        artifact = export_for(module, name, cfg, cache_dir)
    parts["backend"] = load_backend(name, artifact, threads=threads, **opts)
    if given is not None:
        trained = weights is not None or pretrained or (
            not isinstance(model, torch.nn.Module) and Path(os.fspath(model)).is_dir())
        parts["check_artifact"] = lambda clf: check_artifact(clf, module, artifact,
                                                             compare_outputs=trained)
    return parts, rest


def check_artifact(clf: Any, module: torch.nn.Module, artifact: str | os.PathLike, *,
                   compare_outputs: bool, rtol: float = ARTIFACT_RTOL) -> Dict[str, Any]:
    """ConfigError unless the artifact ``clf`` runs is ``module``'s network: same input clip
    shape and classes; with ``compare_outputs``, logits on two seeded clips within ``rtol``
    of the logits' scale (:data:`ARTIFACT_RTOL`). Returns what was compared."""
    name = getattr(getattr(module, "spec", None), "name", None) or type(module).__name__
    c, h, w = (int(v) for v in clf.cfg["input_size"])
    x = np.random.default_rng(0).standard_normal((2, c, int(clf.cfg["num_frames"]), h, w),
                                                 dtype=np.float32)
    what = f"{artifact}: not an export of --model {name}"
    try:
        got = clf.logits(x)
    except BackendError as exc:
        raise ConfigError(f"{what}: it cannot take the model's {tuple(x.shape[1:])} clips "
                          f"({exc})") from None
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).float().numpy()
    if got.shape != ref.shape:
        raise ConfigError(f"{what}: it outputs {got.shape[-1]} classes, the model {ref.shape[-1]}")
    report: Dict[str, Any] = {"artifact": str(artifact), "model": name, "shapes": "match"}
    if not compare_outputs:
        report["outputs"] = "not compared (the model has no trained weights)"
        return report
    # the question is "is this --model's network?", which the error relative to the logits'
    # scale answers for any export precision; the per-precision cosine and top-k bounds are
    # e3d-export --verify's job
    agreement = compare(ref, got, Criteria("artifact", max_rel_err=rtol, min_cosine=-1.0,
                                           min_top1=0.0, min_topk=0.0))
    err, scale = agreement.max_abs_err, agreement.reference_scale
    if not agreement.passed:
        if not np.isfinite(got).all():
            raise ConfigError(f"{what}: on the probe clips it returns non-finite logits (NaN or "
                              "inf); export the model again (e3d-export) or drop --model")
        raise ConfigError(f"{what}: on the same probe clips their logits differ by up to "
                          f"{err:.3g} (the model's logits reach {scale:.3g}); export the "
                          "model again (e3d-export) or drop --model")
    report.update(outputs="match", max_abs_err=err, logit_scale=scale)
    return report


def load_weights_strict(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a ``.safetensors`` or torch checkpoint; every key must fit (no head re-init:
    a classifier for inference must be the trained one)."""
    from ..hub import read_state_dict

    state = read_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit the model: {str(exc).splitlines()[0]}") from exc


def export_for(module: torch.nn.Module, backend: str, cfg: Mapping[str, Any],
               cache_dir: Optional[str | os.PathLike]) -> Path:
    """Export ``module`` for ``backend`` once; reuse the file while the weights are the same."""
    import hashlib

    try:
        import e3d_export
    except ImportError as exc:
        raise ConfigError(f"backend {backend!r} needs an exported artifact: pass artifact= "
                          "(--artifact) or install the e3d_export package") from exc
    h = hashlib.sha1()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    spec = getattr(module, "spec", None)
    if spec is not None:
        h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    root = Path(cache_dir) if cache_dir else (
        Path(os.environ.get("E3D_CACHE", Path.home() / ".cache" / "e3d_zoo")) / "artifacts")
    stem = f"{cfg.get('architecture') or 'model'}-{h.hexdigest()[:12]}"
    onnx_path = root / f"{stem}.onnx"
    frames, size = int(cfg["num_frames"]), int(cfg["input_size"][-1])
    if not onnx_path.is_file():
        e3d_export.export_onnx(module, onnx_path, frames=frames, size=size)
    if backend == "onnxruntime":
        return onnx_path
    if backend == "openvino":
        xml = root / f"{stem}.xml"
        if not xml.is_file():
            e3d_export.export_openvino(onnx_path, xml)
        return xml
    raise ConfigError(f"backend {backend!r}: build its engine with e3d-export and pass "
                      "artifact= (--artifact)")
