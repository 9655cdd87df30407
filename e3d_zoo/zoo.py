"""The zoo: ``default_cfgs`` and registered constructors, in timm's registry.

``import e3d_zoo`` registers ``e3d_s``, ``e3d_m`` and ``e3d_l`` so that
``timm.create_model("e3d_s")`` and ``timm.list_models("e3d*")`` find them.
:func:`create_model` also takes a path to an arch JSON (or TinyNAS text).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import is_model as timm_is_model
from timm.models import list_models as timm_list_models

from .errors import ArchError, ModelNotFoundError, WeightsError
from .model import E3D
from .spec import ArchSpec, load_arch

ZOO_MODELS = ("e3d_s", "e3d_m", "e3d_l")
HF_HUB_ORG = "e3d-zoo"


def arch_path(name: str) -> Path:
    """Path of a shipped searched architecture (works from an installed wheel)."""
    return Path(str(resources.files("e3d_zoo.searched_archs").joinpath(f"{name}.json")))


def load_zoo_arch(name: str) -> ArchSpec:
    path = arch_path(name)
    if not path.is_file():
        raise ModelNotFoundError(f"no shipped architecture named {name!r}; known: {list(ZOO_MODELS)}")
    return load_arch(path)


def _cfg(name: str, **kwargs: Any) -> Dict[str, Any]:
    spec = load_zoo_arch(name)
    cfg = {
        "num_classes": 400,
        "input_size": (3, spec.size, spec.size),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "blocks.0.conv",
        "classifier": "classifier",
        "label_names": None,
        "license": "apache-2.0",
        "hf_hub_id": f"{HF_HUB_ORG}/{name}",
    }
    cfg.update(kwargs)
    return cfg


default_cfgs = generate_default_cfgs({name: _cfg(name) for name in ZOO_MODELS})


def video_cfg(spec: ArchSpec) -> Dict[str, Any]:
    """The clip-shape half of a pretrained config (timm's PretrainedCfg is image-only).

    Merged into ``model.pretrained_cfg``: ``num_frames`` and ``frame_stride`` say how
    the pipelines sample a clip, ``input_layout`` what the network takes.
    """
    return {"num_frames": spec.frames, "frame_stride": 2, "input_layout": "NCTHW",
            "architecture_spec": spec.name}


def _load_pretrained(model: E3D, variant: str) -> None:
    """Fill ``model`` with the weights its pretrained_cfg points at (local file or Hub repo);
    raises WeightsError naming the repo tried, never returns random weights silently."""
    from . import hub

    hub.load_pretrained_weights(model, model.pretrained_cfg)


def _create_e3d(variant: str, pretrained: bool = False, spec: Optional[ArchSpec] = None,
                **kwargs: Any) -> E3D:
    spec = spec if spec is not None else load_zoo_arch(variant)
    model = build_model_with_cfg(
        E3D, variant, pretrained=False, spec=spec,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3, 4)),
        **kwargs)
    base = model.model if hasattr(model, "model") else model  # features_only wrapper
    for target in {id(model): model, id(base): base}.values():
        target.pretrained_cfg = {**target.pretrained_cfg, **video_cfg(spec)}
    if pretrained:
        _load_pretrained(base, variant)
    return model


@register_model
def e3d_s(pretrained: bool = False, **kwargs: Any) -> E3D:
    """E3D-S: 13 x 160^2 clips, 1.9 GMACs (SSv1 top-1 47.1)."""
    return _create_e3d("e3d_s", pretrained, **kwargs)


@register_model
def e3d_m(pretrained: bool = False, **kwargs: Any) -> E3D:
    """E3D-M: 16 x 224^2 clips, 4.7 GMACs (SSv1 top-1 49.4)."""
    return _create_e3d("e3d_m", pretrained, **kwargs)


@register_model
def e3d_l(pretrained: bool = False, **kwargs: Any) -> E3D:
    """E3D-L: 16 x 312^2 clips, 18.3 GMACs (SSv1 top-1 51.1)."""
    return _create_e3d("e3d_l", pretrained, **kwargs)


def list_models(pattern: str = "e3d*", pretrained: bool = False) -> List[str]:
    """Registered E3D models (timm's registry, filtered to this zoo by default)."""
    return timm_list_models(pattern, pretrained=pretrained)


def _looks_like_path(name: str) -> bool:
    return (os.sep in name or "/" in name or name.endswith((".json", ".txt"))
            or os.path.exists(name))


def spec_for(name_or_path: str | os.PathLike | ArchSpec, *, frames: Optional[int] = None,
             size: Optional[int] = None) -> ArchSpec:
    """The ArchSpec behind a registered name, an arch file, or a spec."""
    if isinstance(name_or_path, ArchSpec):
        return name_or_path.with_clip(frames, size)
    name = os.fspath(name_or_path)
    if name in ZOO_MODELS:
        return load_zoo_arch(name).with_clip(frames, size)
    if _looks_like_path(name) and not name.startswith("hf-hub:"):
        return load_arch(name, frames=frames, size=size)
    if timm_is_model(name):
        raise ArchError(f"{name!r} is a timm model but not an E3D architecture")
    raise ModelNotFoundError(
        f"unknown model {name!r}: expected one of {list_models()} or a path to an arch "
        "JSON file (see searched_archs/)")


def create_model(name_or_path: str | os.PathLike | ArchSpec, pretrained: bool = False,
                 **kwargs: Any) -> E3D:
    """Build an E3D model from a registered name, an arch file, a spec or an ``hf-hub:`` id.

    Keyword arguments go to :class:`~e3d_zoo.model.E3D` (``num_classes``,
    ``drop_rate``, ``drop_path_rate``, ``features_only``, ``out_indices``, ...).
    """
    if isinstance(name_or_path, str) and name_or_path.startswith("hf-hub:"):
        from . import hub

        return hub.create_model_from_hub(name_or_path[len("hf-hub:"):], pretrained=pretrained,
                                         **kwargs)
    if isinstance(name_or_path, str) and name_or_path in ZOO_MODELS:
        return _create_e3d(name_or_path, pretrained, **kwargs)
    spec = spec_for(name_or_path)
    if pretrained:
        raise WeightsError(f"{spec.name or name_or_path}: an architecture file carries no "
                           "weights; load a checkpoint folder or hf-hub: id instead")
    variant = spec.name or "e3d_custom"
    overlay = {"input_size": (spec.in_chans, spec.size, spec.size), "hf_hub_id": None,
               "architecture": variant}
    base = "e3d_s"  # borrow the zoo's preprocessing config; the arch file sets the shape
    return _create_e3d(base, False, spec=spec, pretrained_cfg_overlay=overlay, **kwargs)
