"""The model an export starts from, and re-creating it later from what the manifest recorded.

:func:`load_source` turns a registered name, an arch file, a checkpoint, a
save-pretrained folder, an ``hf-hub:`` id or an nn.Module into a model in eval mode
plus a description for the manifest. A source without trained weights (a name or an
arch file without ``--pretrained``) is seeded and given trained-like BatchNorm
statistics (:func:`~.verify.randomize_statistics`), so its export can be verified and
re-created bit for bit: :func:`rebuild_source` does that for ``e3d-export --verify``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from e3d_zoo.errors import ExportError, WeightsError

from .manifest import sha256_file

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


def load_source(source: Any, *, arch: Any = None, num_classes: Optional[int] = None,
                frames: Optional[int] = None, size: Optional[int] = None,
                pretrained: bool = False, seed: int = 0) -> Tuple[nn.Module, Dict[str, Any]]:
    """(model in eval mode, description for the manifest) from a name, arch file,
    checkpoint file, save-pretrained folder, ``hf-hub:`` id or nn.Module.

    A checkpoint (``.pth``/``.pt``/``.safetensors``) needs ``arch`` (a name or arch
    file) unless it is an ``e3d-train`` checkpoint, which carries its config. Random
    weights are drawn under ``torch.manual_seed(seed)`` and their BatchNorm statistics
    randomized with the same seed.
    """
    from e3d_zoo.zoo import create_model, spec_for

    if isinstance(source, nn.Module):
        model = source
        info: Dict[str, Any] = {"kind": "module", "name": getattr(getattr(model, "spec", None), "name", None),
                                "weights": "in-memory module"}
    else:
        src = os.fspath(source)
        path = Path(src)
        if path.is_dir() or src.startswith("hf-hub:"):
            from e3d_zoo import hub  # save-pretrained folder (config.json + weights) or Hub repo

            model = hub.from_pretrained(src, num_classes=num_classes)
            info = {"kind": "pretrained folder" if path.is_dir() else "hub", "name": model.spec.name,
                    "path": src, "weights": src}
            weights_file = path / "model.safetensors"
            if weights_file.is_file():
                info["weights_sha256"] = sha256_file(weights_file)
        elif path.suffix in CHECKPOINT_SUFFIXES:
            model, info = _from_checkpoint(path, arch=arch, num_classes=num_classes, frames=frames, size=size)
        else:
            spec = spec_for(src, frames=frames, size=size)  # ModelNotFoundError / ArchError
            kwargs = {"num_classes": num_classes} if num_classes else {}
            if pretrained:
                model = create_model(src, pretrained=True, **kwargs)
                weights = f"pretrained ({(model.pretrained_cfg or {}).get('hf_hub_id')})"
                info = {"weights": weights}
            else:
                from .verify import randomize_statistics

                torch.manual_seed(seed)
                model = create_model(spec if (frames or size) or path.exists() else src, **kwargs)
                randomize_statistics(model, seed)
                info = {"weights": f"random initialization (seed {seed}), BatchNorm statistics measured "
                                   "on random clips (randomize_statistics) so verification can fail",
                        "seed": seed, "randomized_statistics": True}
            info.update({"kind": "arch file" if path.exists() else "registered name", "name": spec.name,
                         "path": str(path) if path.exists() else None})
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError(f"{type(model).__name__}: expected an E3D model (with a .spec)")
    if frames is not None or size is not None:
        model.spec = spec = spec.with_clip(frames, size)
    info["arch"] = spec.to_dict()
    info["num_classes"] = getattr(model, "num_classes", None)
    return model.eval(), info


def _read_state(path: Path) -> Dict[str, Any]:
    from e3d_zoo.hub import check_finite

    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = {"model": load_file(str(path))}
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable checkpoint ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    if not isinstance(state.get("model"), dict):
        if isinstance(state.get("state_dict"), dict):
            state = {**state, "model": state["state_dict"]}
        elif all(isinstance(v, torch.Tensor) for v in state.values()):
            state = {"model": state}
        else:
            raise WeightsError(f"{path}: no weights found (expected a state dict, or one under "
                               "'model' or 'state_dict')")
    check_finite(state["model"], str(path))  # NaN weights export "fine" and label everything
    return state


def _from_checkpoint(path: Path, *, arch: Any, num_classes: Optional[int], frames: Optional[int],
                     size: Optional[int]) -> Tuple[nn.Module, Dict[str, Any]]:
    from e3d_zoo.zoo import create_model, spec_for

    state = _read_state(path)
    weights = state["model"]
    classes = state.get("classes")
    cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    if arch is None:
        arch = cfg.get("model")
        if arch is None:
            raise WeightsError(f"{path}: the checkpoint does not say which architecture it is; "
                               "pass --arch NAME_OR_ARCH_JSON")
    spec = spec_for(arch, frames=frames if frames is not None else cfg.get("frames"),
                    size=size if size is not None else cfg.get("size"))
    head = weights.get("classifier.weight")
    n_cls = num_classes or (int(head.shape[0]) if isinstance(head, torch.Tensor) else 400)
    kwargs: Dict[str, Any] = {"num_classes": n_cls}
    hidden = weights.get("head_fc.weight")
    if isinstance(hidden, torch.Tensor) and hidden.shape[0] != spec.head_hidden:
        kwargs["head_hidden"] = int(hidden.shape[0])
    model = create_model(spec, **kwargs)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise WeightsError(f"{path}: the checkpoint does not fit architecture {spec.name!r}: "
                           + " ".join(lines[1:4] or lines[:1])) from None
    if classes:
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": list(classes)}
    return model, {"kind": "checkpoint", "name": spec.name, "path": str(path),
                   "weights": str(path), "weights_sha256": sha256_file(path)}


def rebuild_source(source: Mapping[str, Any], base: Optional[Path] = None) -> Tuple[Optional[nn.Module], str]:
    """Re-create the model a manifest's ``source`` describes: (model, how) or (None, why not).

    Registered names and arch files are rebuilt from their recorded seed; checkpoints
    and save-pretrained folders only when the file is still there with the recorded
    sha256. Relative paths are tried as given, then relative to ``base``.
    """
    from e3d_zoo.spec import ArchSpec

    kind = source.get("kind")
    arch = source.get("arch")
    spec = ArchSpec.from_dict(arch) if isinstance(arch, Mapping) else None
    n_cls = source.get("num_classes")

    def locate(p: Optional[str]) -> Optional[Path]:
        if not p:
            return None
        for cand in (Path(p), (base / p) if base is not None else None):
            if cand is not None and cand.exists():
                return cand
        return None

    if kind in ("registered name", "arch file"):
        if not source.get("randomized_statistics") or "seed" not in source:
            return None, f"the {kind} export has no recorded seed (exported by an older e3d-export)"
        from e3d_zoo.zoo import create_model

        from .verify import randomize_statistics

        torch.manual_seed(int(source["seed"]))
        model = create_model(spec, **({"num_classes": n_cls} if n_cls else {}))
        randomize_statistics(model, int(source["seed"]))
        return model.eval(), f"{source.get('name')} rebuilt from its arch and seed {source['seed']}"
    if kind == "checkpoint":
        path = locate(source.get("path"))
        if path is None:
            return None, f"checkpoint {source.get('path')} is not on this machine"
        if source.get("weights_sha256") and sha256_file(path) != source["weights_sha256"]:
            return None, f"checkpoint {path} differs from the recorded one (sha256 mismatch)"
        model, _ = _from_checkpoint(path, arch=spec, num_classes=n_cls, frames=None, size=None)
        return model.eval(), f"checkpoint {path} (sha256 matches)"
    if kind == "pretrained folder":
        path = locate(source.get("path"))
        if path is None:
            return None, f"save-pretrained folder {source.get('path')} is not on this machine"
        weights = path / "model.safetensors"
        if source.get("weights_sha256") and (not weights.is_file()
                                             or sha256_file(weights) != source["weights_sha256"]):
            return None, f"{weights} differs from the recorded weights (sha256 mismatch)"
        model, _ = load_source(path, num_classes=n_cls)
        return model, f"save-pretrained folder {path} (sha256 matches)"
    return None, f"a {kind!r} source cannot be re-created from the manifest"


def check_source(folder: str | os.PathLike, manifest: Mapping[str, Any], clips: Any,
                 logits: Any) -> Dict[str, Any]:
    """Does the recorded source still produce the folder's reference logits?

    {"status": "passed" | "failed" | "skipped", ...}: skipped (with the reason) when
    the source cannot be re-created here. Judged by the fp32 criteria, like an fp32
    artifact: PyTorch on another machine may round differently, never by more.
    """
    from e3d_runtime.criteria import compare, criteria_for, summarize
    from .verify import reference_logits

    model, how = rebuild_source(manifest.get("source") or {}, base=Path(folder))
    if model is None:
        return {"status": "skipped", "reason": how}
    agreement = compare(logits, reference_logits(model, clips), criteria_for("fp32"))
    stats = agreement.to_dict()
    stats.pop("passed")
    return {"status": "passed" if agreement.passed else "failed", "how": how, **stats,
            "summary": summarize(agreement)}
