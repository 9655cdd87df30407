"""The zoo: ``default_cfgs`` and registered constructors, in timm's registry.

``import e3d_zoo`` registers ``e3d_s``, ``e3d_m`` and ``e3d_l`` so that
``timm.create_model("e3d_s")`` and ``timm.list_models("e3d*")`` find them, and
``timm.create_model("hf-hub:ORG/NAME")`` / ``"local-dir:FOLDER"`` rebuild any folder
``e3d_zoo.hub.save_pretrained`` wrote (its config.json names the constructor and
carries the architecture in ``model_args``). :func:`create_model` also takes an
arch JSON file (or the reference's structure text) and an ``ArchSpec``.

Pretrained configs are timm's ``PretrainedCfg``, plus the clip half that timm's
image-only dataclass has no fields for (``num_frames``, ``frame_stride``,
``input_layout``): it is added to ``model.pretrained_cfg`` in place (so
``model.default_cfg is model.pretrained_cfg`` holds) and travels in config.json's
``model_args.video_cfg``, where timm's loader passes it back to the constructor.
No weights are published yet, so no tag claims any (``timm.list_pretrained('e3d*')``
is empty); a published checkpoint gets a tagged cfg with its ``hf_hub_id``.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import is_model as timm_is_model
from timm.models import list_models as timm_list_models
from timm.models._builder import pretrained_cfg_for_features
from timm.models._features import (FeatureDictNet, FeatureGetterNet, FeatureHookNet,
                                   FeatureListNet)
from timm.models._features_fx import FeatureGraphNet

from . import hub
from .errors import ArchError, ModelNotFoundError, WeightsError
from .model import E3D
from .spec import ArchSpec, load_arch

ZOO_MODELS = ("e3d_s", "e3d_m", "e3d_l")
CUSTOM_ARCH_BASE = hub.CUSTOM_ARCH_BASE
_FEATURE_CLASSES = {"getter": FeatureGetterNet, "list": FeatureListNet, "dict": FeatureDictNet,
                    "hook": FeatureHookNet, "fx": FeatureGraphNet}


def arch_path(name: str) -> Path:
    """Path of a shipped searched architecture (works from an installed wheel)."""
    return Path(str(resources.files("e3d_zoo.searched_archs").joinpath(f"{name}.json")))


def load_zoo_arch(name: str) -> ArchSpec:
    path = arch_path(name)
    if not path.is_file():
        raise ModelNotFoundError(f"no shipped architecture named {name!r}; known: {list(ZOO_MODELS)}")
    return load_arch(path)


def clip_cfg(spec: ArchSpec, frame_stride: int = hub.DEFAULT_FRAME_STRIDE) -> Dict[str, Any]:
    """The clip half of a pretrained config: ``num_frames`` and ``frame_stride`` say how
    the pipelines sample a clip, ``input_layout`` what the network takes."""
    return {"num_frames": spec.frames, "frame_stride": frame_stride, "input_layout": "NCTHW"}


def _cfg(name: str, **kwargs: Any) -> Dict[str, Any]:
    spec = load_zoo_arch(name)
    cfg = {
        "num_classes": 400,
        **hub.input_cfg(spec),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "classifier": "classifier",
        "license": "apache-2.0",
        "paper_name": "Maximizing Spatio-Temporal Entropy of Deep 3D CNNs for Efficient Video "
                      "Recognition (ICLR 2023)",
        "origin_url": "https://github.com/alibaba/lightweight-neural-architecture-search",
    }
    cfg.update(kwargs)
    return cfg


# One untagged cfg per architecture, without a weight source: nothing is published.
# A published checkpoint is added as "e3d_s.<tag>": _cfg("e3d_s", hf_hub_id="ORG/NAME").
default_cfgs = generate_default_cfgs({name: _cfg(name) for name in ZOO_MODELS})


def _as_spec(spec: Union[None, ArchSpec, Mapping[str, Any]], variant: str) -> ArchSpec:
    if spec is None:
        return load_zoo_arch(variant)
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, Mapping):  # model_args of a config.json
        return ArchSpec.from_dict(spec, source=f"{variant}: spec")
    raise ArchError(f"{variant}: spec: expected an ArchSpec or an arch JSON object, found "
                    f"{type(spec).__name__}")


def _feature_cfg(spec: ArchSpec, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """timm's features_only arguments, taken out of ``kwargs`` (the wrapper is applied
    after the weights load, as timm's builder does)."""
    cfg = dict(feature_cls="getter", out_indices=tuple(range(len(spec.stage_ends()))),
               flatten_sequential=True)
    cfg.update(kwargs.pop("feature_cfg", None) or {})
    for key in ("out_indices", "feature_cls"):
        if key in kwargs:
            cfg[key] = kwargs.pop(key)
    return cfg


def _features(model: E3D, feature_cfg: Dict[str, Any]) -> nn.Module:
    """Wrap ``model`` like timm's build_model_with_cfg does for ``features_only``."""
    cfg = dict(feature_cfg)
    cls = cfg.pop("feature_cls")
    if isinstance(cls, str):
        if cls.lower() not in _FEATURE_CLASSES:
            raise ArchError(f"feature_cls: expected one of {sorted(_FEATURE_CLASSES)} or a class, "
                            f"found {cls!r}")
        cls = _FEATURE_CLASSES[cls.lower()]
    if not issubclass(cls, (FeatureDictNet, FeatureHookNet)):
        cfg.pop("flatten_sequential", None)
    if not issubclass(cls, FeatureHookNet):
        cfg.pop("no_rewrite", None)
    wrapper = cls(model, **cfg)
    wrapper.in_chans = model.in_chans
    wrapper.pretrained_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    wrapper.default_cfg = wrapper.pretrained_cfg
    return wrapper


def _create_e3d(variant: str, pretrained: bool = False, spec=None,
                video_cfg: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> nn.Module:
    """Build, load weights into the full network (before any features wrapper, so a
    full checkpoint fits), then wrap for ``features_only``."""
    spec = _as_spec(spec, variant)
    features_only = kwargs.pop("features_only", False)
    feature_cfg = _feature_cfg(spec, kwargs)
    if not kwargs.get("pretrained_cfg"):
        # The registry cfg describes the zoo architecture; another spec brings its shape.
        kwargs["pretrained_cfg_overlay"] = {**hub.input_cfg(spec),
                                            **(kwargs.get("pretrained_cfg_overlay") or {})}
    model = build_model_with_cfg(E3D, variant, pretrained=False, spec=spec, **kwargs)
    clip = clip_cfg(spec)
    clip.update({k: v for k, v in (video_cfg or {}).items() if k in hub.CLIP_KEYS})
    model.pretrained_cfg.update(clip)  # in place: default_cfg is the same dict
    if pretrained:
        hub.load_pretrained_weights(model, model.pretrained_cfg, cache_dir=kwargs.get("cache_dir"))
    if model.num_classes != model.pretrained_cfg.get("num_classes"):
        model.pretrained_cfg.pop("label_names", None)  # they named the checkpoint's classes
    if features_only:
        return _features(model, feature_cfg)
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
    if _looks_like_path(name) and not name.startswith(("hf-hub:", "local-dir:")):
        return load_arch(name, frames=frames, size=size)
    if timm_is_model(name):
        raise ArchError(f"{name!r} is a timm model but not an E3D architecture")
    raise ModelNotFoundError(
        f"unknown model {name!r}: expected one of {list_models()} or a path to an arch "
        "JSON file (see searched_archs/)")


def create_model(name_or_path: str | os.PathLike | ArchSpec, pretrained: bool = False,
                 **kwargs: Any) -> nn.Module:
    """Build an E3D model from a registered name, an arch file, a spec, an
    ``hf-hub:ORG/NAME[@REV]`` id or a save-pretrained folder (``local-dir:`` optional).

    Keyword arguments are timm's (``num_classes``, ``in_chans``, ``global_pool``,
    ``drop_rate``, ``drop_path_rate``, ``features_only``, ``out_indices``,
    ``pretrained_cfg_overlay``, ...) and :class:`~e3d_zoo.model.E3D`'s.
    """
    if isinstance(name_or_path, str) and name_or_path.startswith(("hf-hub:", "local-dir:")):
        source = name_or_path[len("local-dir:"):] if name_or_path.startswith("local-dir:") else name_or_path
        return hub.from_pretrained(source, pretrained=pretrained, **kwargs)
    if not isinstance(name_or_path, ArchSpec) and os.path.isdir(name_or_path):  # a save-pretrained folder
        return hub.from_pretrained(name_or_path, pretrained=pretrained, **kwargs)
    if isinstance(name_or_path, str) and name_or_path in ZOO_MODELS:
        return _create_e3d(name_or_path, pretrained, **kwargs)
    spec = spec_for(name_or_path)
    if pretrained:
        raise WeightsError(f"{spec.name or name_or_path}: an architecture file carries no "
                           "weights; load a save-pretrained folder or hf-hub: id instead")
    return _create_e3d(CUSTOM_ARCH_BASE, False, spec=spec, **kwargs)
