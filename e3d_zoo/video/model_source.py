"""The PyTorch side of the video pipeline: a zoo model as a classifier's backend + config.

``VideoClassifier.from_model`` (in the torch-free ``e3d_runtime``) imports this module
only when asked for a PyTorch model, so the edge install never needs torch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from e3d_runtime.backends.base import canonical_backend_name, load_backend
from e3d_runtime.errors import ConfigError, WeightsError


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
    """
    from ..zoo import create_model

    name = canonical_backend_name(backend)
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
    opts = dict(backend_options or {})
    if name == "torch":
        be = load_backend("torch", module, threads=threads, **opts)
    else:
        if artifact is not None and Path(os.fspath(artifact)).is_dir():  # an e3d-export folder
            from e3d_runtime.video.pipeline import artifact_and_cfg

            artifact = artifact_and_cfg(artifact, name)[1]
        if artifact is None:
            artifact = export_for(module, name, cfg, cache_dir)
        be = load_backend(name, artifact, threads=threads, **opts)
    return {"backend": be, "cfg": cfg}, rest


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
