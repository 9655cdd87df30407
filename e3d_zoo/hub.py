"""Pretrained weights: save-pretrained folders, the Hugging Face Hub, checkpoint import.

A save-pretrained folder (what ``e3d-zoo push`` uploads, what ``hf-hub:`` ids name)::

    model.safetensors   the state_dict (safetensors)
    config.json         timm's layout, so timm's own loader reads it:
                        {"architecture": "e3d_s", "num_classes": ..., "num_features": ...,
                         "global_pool": "avg",
                         "pretrained_cfg": {only timm PretrainedCfg fields},
                         "model_args": {"spec": <the arch JSON>, "video_cfg": {num_frames,
                                        frame_stride, input_layout}, "in_chans": ...},
                         "e3d": {"format_version": 2}}
    README.md           a model card: metrics, intended use, a usage snippet

``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` and ``"local-dir:FOLDER"``
pass ``model_args`` to the registered constructor (``architecture``), which rebuilds
any searched network from its spec and restores the clip fields, then loads the
weights through :func:`load_pretrained_weights`. :func:`from_pretrained` goes the
same way after checking the config itself (one clear error per problem); version-1
folders (clip fields inside ``pretrained_cfg``, which timm rejects) still load here.

Loading goes through huggingface_hub (``hf_hub_download``), so its cache,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and revision pinning (``hf-hub:org/name@rev``)
apply. Pickle checkpoints are read with ``torch.load(weights_only=True)`` only, and
checkpoints saved by the reference implementation (``block_list.*``, ``fc_linear.*``)
are renamed to this package's keys. This module builds no models itself (timm's
registry does), so the zoo can import it without an import cycle.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Tuple

import torch
import torch.nn as nn

from .atomic import read_json_limited
from .errors import ArchError, HubError, WeightsError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: config.json holds the arch, the pretrained_cfg and the label names: tens of kB for 400
#: classes; the bound is the one label files get (e3d_runtime.video.pipeline)
MAX_CONFIG_BYTES = 16 << 20
CARD_NAME = "README.md"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
# The clip fields of a pretrained cfg, which timm's image-only PretrainedCfg has none of.
CLIP_KEYS = ("num_frames", "frame_stride", "input_layout")
DEFAULT_FRAME_STRIDE = 2
# The registered constructor a searched (non-zoo) architecture is built and saved under:
# its preprocessing defaults are E3D-S's, its structure travels in model_args.spec.
CUSTOM_ARCH_BASE = "e3d_s"
LIBRARY_NAME = "e3d-zoo"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_HOW_TO_GET = ("Train one with `e3d-train CONFIG` (it writes OUTPUT/model/), publish it with "
               "`e3d-zoo push OUTPUT/model ORG/NAME`, or build with pretrained=False.")


# ---- saving -----------------------------------------------------------------

def _spec_of(model: nn.Module):
    spec = getattr(model, "spec", None)
    if spec is None:
        raise WeightsError(f"save_pretrained: expected an E3D model (with .spec), found "
                           f"{type(model).__name__}")
    return spec


def input_cfg(spec) -> Dict[str, Any]:
    """The pretrained-cfg fields an architecture's input shape decides (timm's names)."""
    from .complexity import feature_size

    pool = feature_size(spec, spec.size)
    smallest = 2 ** sum(b.stride == 2 for b in spec.blocks)  # one pixel after every downsampling
    return {"input_size": (spec.in_chans, spec.size, spec.size), "pool_size": (pool, pool),
            "min_input_size": (spec.in_chans, smallest, smallest),
            "first_conv": "blocks.0.0.conv_pw" if spec.blocks[0].is_super else "blocks.0.conv"}


def _pretrained_cfg_fields() -> Tuple[str, ...]:
    from dataclasses import fields

    from timm.models import PretrainedCfg

    return tuple(f.name for f in fields(PretrainedCfg))


_SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture",
                "tag", "custom_load")


def _zoo_is_model():
    """timm's ``is_model`` once the zoo's constructors are in its registry.

    They register when ``e3d_zoo.zoo`` is imported. A plain ``import e3d_zoo`` does that,
    but the console scripts defer it (``e3d_zoo_cli``), so the first check of a config's
    architecture must not find an empty registry. Imported here, at call time: zoo imports
    this module when it loads.
    """
    from timm.models import is_model

    from . import zoo  # noqa: F401  (registers the zoo's constructors)

    return is_model


def model_config(model: nn.Module, label_names: Optional[List[str]] = None) -> Dict[str, Any]:
    """config.json content for ``model`` (see the module docstring)."""
    is_model = _zoo_is_model()

    spec = _spec_of(model)
    blocks = getattr(model, "blocks", ())
    if not hasattr(model, "head_fc") or len(blocks) != len(spec.blocks):
        raise WeightsError(f"save_pretrained: expected a full E3D model, found "
                           f"{type(model).__name__} (save the model before wrapping or pruning it)")
    hidden = model.head_fc.out_features if isinstance(model.head_fc, nn.Linear) else 0
    spec = spec.replace(head_hidden=hidden)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    allowed = set(_pretrained_cfg_fields()) - set(_SOURCE_KEYS)
    pretrained_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()
                      if k in allowed and v is not None}
    pretrained_cfg.update({k: list(v) if isinstance(v, tuple) else v for k, v in input_cfg(spec).items()},
                          num_classes=model.num_classes)
    if label_names is not None:
        if len(label_names) != model.num_classes:
            raise WeightsError(f"label_names: {len(label_names)} names for a {model.num_classes}-class head")
        pretrained_cfg["label_names"] = list(label_names)
    elif cfg.get("label_names") and len(cfg["label_names"]) == model.num_classes:
        pretrained_cfg["label_names"] = list(cfg["label_names"])
    else:
        pretrained_cfg.pop("label_names", None)
    clip = {"num_frames": spec.frames, "frame_stride": cfg.get("frame_stride", DEFAULT_FRAME_STRIDE),
            "input_layout": cfg.get("input_layout", "NCTHW")}
    architecture = cfg.get("architecture")
    if not isinstance(architecture, str) or not is_model(architecture):
        architecture = CUSTOM_ARCH_BASE
    return {
        "architecture": architecture,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool,
        "pretrained_cfg": pretrained_cfg,
        "model_args": {"spec": spec.to_dict(), "video_cfg": clip, "in_chans": spec.in_chans,
                       "global_pool": model.global_pool},
        "e3d": {"format_version": FORMAT_VERSION},
    }


def model_card(config: Mapping[str, Any], metrics: Optional[Mapping[str, Any]] = None,
               repo_id: Optional[str] = None, intended_use: Optional[str] = None) -> str:
    """A README.md model card with Hub metadata, metrics, intended use and usage."""
    from . import complexity

    from .spec import ArchSpec

    spec = ArchSpec.from_dict(config["model_args"]["spec"])
    clip = config["model_args"]["video_cfg"]
    pc = config["pretrained_cfg"]
    name = config["architecture"]
    labels = pc.get("label_names")
    T, R = spec.frames, spec.size
    load_id = f"hf-hub:{repo_id}" if repo_id else "hf-hub:ORG/NAME"
    lines = ["---", f"library_name: {LIBRARY_NAME}", f"license: {pc.get('license', 'apache-2.0')}",
             "pipeline_tag: video-classification", "tags:", "- video-classification", "- e3d",
             "- 3d-cnn", "- timm", "---", "", f"# {name}", "",
             "An E3D 3D CNN for video recognition (E3D, ICLR 2023: *Maximizing Spatio-Temporal "
             "Entropy of Deep 3D CNNs for Efficient Video Recognition*), packaged with "
             "[e3d-zoo](https://github.com/e3d-zoo/e3d-zoo).", "",
             "## Model details", "",
             f"- input: clips of {T} frames at {R}x{R} pixels (every {clip['frame_stride']}th frame), "
             f"layout {clip['input_layout']}, "
             f"mean {pc.get('mean')}, std {pc.get('std')}",
             f"- classes: {config['num_classes']}" + (f" ({', '.join(map(str, labels[:20]))}"
                                                     f"{', ...' if len(labels) > 20 else ''})" if labels else ""),
             f"- parameters: {complexity.params(spec, num_classes=config['num_classes']):,}",
             f"- MACs per clip: {complexity.macs(spec, T, R, num_classes=config['num_classes']):,}",
             f"- layers: {complexity.num_layers(spec)}", ""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("No evaluation results were recorded for this checkpoint.")
    lines += ["", "## Intended use", "",
              intended_use or ("Classifying short video clips into the classes above, and as a "
                               "starting point for fine-tuning (`e3d-train --set init=...`). Not "
                               "evaluated for safety-critical use; accuracy outside the training "
                               "distribution is unknown."),
              "", "## Usage", "", "```python", "import e3d_zoo", "",
              f"model = e3d_zoo.create_model({load_id!r}, pretrained=True).eval()",
              f"clip = ...  # float tensor (1, {spec.in_chans}, {T}, {R}, {R}), normalised with the mean/std above",
              "logits = model(clip)", "```", "",
              "timm builds it too, once `e3d_zoo` is imported (it registers the architecture):", "",
              "```python", "import e3d_zoo, timm", "",
              f"model = timm.create_model({load_id!r}, pretrained=True)", "```", ""]
    return "\n".join(lines)


def save_pretrained(model: nn.Module, folder: str | os.PathLike, *, label_names: Optional[List[str]] = None,
                    metrics: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None,
                    intended_use: Optional[str] = None) -> Path:
    """Write a save-pretrained folder atomically (it appears whole or not at all).

    The same weights give the same bytes (see :func:`safetensors_bytes`); files get the
    usual umask permissions. An existing ``folder`` is replaced only if it is a
    save-pretrained folder (it has ``config.json``) or empty.
    """
    from .atomic import atomic_dir

    model = getattr(model, "module", model)  # DDP / EMA wrappers
    config = model_config(model, label_names)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    folder = Path(folder)
    with atomic_dir(folder, owned=_is_pretrained_folder, what="save-pretrained folder",
                    marker=CONFIG_NAME) as staging:
        (staging / WEIGHTS_NAME).write_bytes(safetensors_bytes(state, {"format": "pt",
                                                                       "library": LIBRARY_NAME}))
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / CARD_NAME).write_text(model_card(config, metrics, repo_id, intended_use), encoding="utf-8")
    return folder


def _is_pretrained_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file()


def safetensors_bytes(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors file of ``state``, byte-for-byte the same for the same input.

    ``safetensors`` keeps ``__metadata__`` in a Rust hash map, so its key order (and the
    file's sha256) changes from process to process; the header is re-serialized with
    sorted metadata keys. Offsets are unchanged: only key order moves inside the header,
    which is padded with spaces to 8 bytes as the format requires.
    """
    import struct

    from safetensors.torch import save

    raw = save(dict(state), metadata=dict(metadata))
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    canonical = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    canonical.update(header)
    text = json.dumps(canonical, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """WeightsError naming the tensors that hold NaN or Inf: such weights give NaN logits,
    which argmax turns into a confident-looking label."""
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise WeightsError(f"{source}: non-finite weights (NaN or Inf) in {bad[:5]}{more}; the "
                           "checkpoint is corrupt or training diverged")


# ---- locating files -------------------------------------------------------------

def parse_hub_id(source: str) -> Tuple[str, Optional[str]]:
    """``hf-hub:org/name@rev`` (prefix optional) -> (``org/name``, ``rev``)."""
    rid = source[len("hf-hub:"):] if source.startswith("hf-hub:") else source
    revision = None
    if "@" in rid:
        rid, revision = rid.split("@", 1)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", rid) or (revision is not None and not revision):
        raise HubError(f"{source!r}: expected a Hub id like 'hf-hub:ORG/NAME' or "
                       "'hf-hub:ORG/NAME@REVISION'")
    from huggingface_hub.utils import validate_repo_id

    try:  # the Hub's own rules ('..', '--', leading dots, length), before any request
        validate_repo_id(rid)
    except ValueError as exc:
        raise HubError(f"{source!r}: not a valid Hub repo id: {exc}") from None
    return rid, revision


def _hub_file(repo_id: str, filename: str, revision: Optional[str],
              cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """One file of a Hub repo through huggingface_hub's cache; HubError names the repo."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub import errors as hf_errors

    where = f"Hugging Face Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    library_name=LIBRARY_NAME))
    except hf_errors.RevisionNotFoundError:
        raise HubError(f"{where}: no such revision (branch, tag or commit). {_HOW_TO_GET}") from None
    except hf_errors.RepositoryNotFoundError:
        raise HubError(f"{where}: the repo does not exist (or is private: log in with "
                       f"`hf auth login`). {_HOW_TO_GET}") from None
    except hf_errors.LocalEntryNotFoundError:  # subclasses EntryNotFoundError: first
        offline = constants.HF_HUB_OFFLINE
        why = ("HF_HUB_OFFLINE is set and the file is not in the local cache "
               f"({constants.HF_HUB_CACHE})" if offline else
               f"the Hub ({constants.ENDPOINT}) cannot be reached and the file is not cached")
        raise HubError(f"{where}: cannot get {filename!r}: {why}. {_HOW_TO_GET}") from None
    except (hf_errors.EntryNotFoundError, hf_errors.RemoteEntryNotFoundError):
        raise HubError(f"{where}: the repo has no file {filename!r}; it is not an e3d-zoo "
                       f"save-pretrained folder. {_HOW_TO_GET}") from None
    except hf_errors.HfHubHTTPError as exc:
        raise HubError(f"{where}: download of {filename!r} failed: {exc}. {_HOW_TO_GET}") from None
    except OSError as exc:  # connection refused etc. surface as OSError subclasses
        raise HubError(f"{where}: download of {filename!r} failed: {exc}. {_HOW_TO_GET}") from None


def _resolve(source: str | os.PathLike, revision: Optional[str] = None,
             cache_dir: Optional[str | os.PathLike] = None) -> Tuple[Optional[Path], Optional[Path], str]:
    """(config path or None, weights path, description) for a folder, file or Hub id."""
    if isinstance(source, Path) or os.path.exists(os.fspath(source)):
        path = Path(source)
        if path.is_dir():
            cfg = path / CONFIG_NAME
            weights = path / WEIGHTS_NAME
            if not weights.is_file():
                alt = sorted(p for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
                if not alt:
                    raise WeightsError(f"{path}: no {WEIGHTS_NAME} (nor a .pt/.pth/.bin file) in this folder")
                weights = alt[0]
            return (cfg if cfg.is_file() else None), weights, str(path)
        cfg = path.parent / CONFIG_NAME
        return (cfg if cfg.is_file() and path.name == WEIGHTS_NAME else None), path, str(path)
    source = os.fspath(source)
    if not source.startswith("hf-hub:") and not re.fullmatch(r"[\w.-]+/[\w.-]+(@.+)?", source):
        raise WeightsError(f"{source}: no such file or folder (for a Hub repo write 'hf-hub:ORG/NAME')")
    repo_id, rev = parse_hub_id(source)
    rev = revision or rev
    cfg = _hub_file(repo_id, CONFIG_NAME, rev, cache_dir)
    weights = _hub_file(repo_id, WEIGHTS_NAME, rev, cache_dir)
    return cfg, weights, f"hf-hub:{repo_id}" + (f"@{rev}" if rev else "")


def load_config(source: str | os.PathLike, revision: Optional[str] = None) -> Dict[str, Any]:
    """The checked config.json of a folder or Hub repo: ``architecture`` (a registered
    constructor), ``num_classes``, ``pretrained_cfg`` (timm's fields only), ``spec``
    (an ArchSpec), ``video_cfg``, ``model_args`` (the other constructor arguments)."""
    if isinstance(source, Path) or os.path.exists(os.fspath(source)):
        path = Path(source)
        cfg_path = path / CONFIG_NAME if path.is_dir() else path.parent / CONFIG_NAME
    else:
        text = os.fspath(source)
        if not text.startswith("hf-hub:") and not re.fullmatch(r"[\w.-]+/[\w.-]+(@.+)?", text):
            raise WeightsError(f"{text}: no such file or folder (for a Hub repo write 'hf-hub:ORG/NAME')")
        repo_id, rev = parse_hub_id(text)
        cfg_path = _hub_file(repo_id, CONFIG_NAME, revision or rev)
    where = str(cfg_path)
    if not os.path.lexists(cfg_path):
        raise WeightsError(f"{source}: no {CONFIG_NAME}; a weights file alone does not say which "
                           "architecture it is for (pass the model, or use a save-pretrained folder)")
    # read bounded: a Hub download is whatever the repo holds, not necessarily our config
    raw = read_json_limited(cfg_path, MAX_CONFIG_BYTES, what="e3d-zoo config", error=WeightsError)
    if not isinstance(raw, dict) or not isinstance(raw.get("e3d"), dict):
        raise WeightsError(f"{where}: not an e3d-zoo config (expected an 'e3d' object; "
                           "written by e3d_zoo.hub.save_pretrained)")
    version = raw["e3d"].get("format_version", FORMAT_VERSION)
    if version not in _READABLE_VERSIONS:
        raise WeightsError(f"{where}: e3d.format_version {version!r}; this e3d-zoo reads "
                           f"{list(_READABLE_VERSIONS)} (upgrade e3d-zoo)")
    config = _config_v1(raw, where) if version == 1 else _config_v2(raw, where)
    config["_path"] = str(cfg_path)
    config["format_version"] = version
    return config


def _checked_spec(data: Any, where: str):
    from .spec import ArchSpec

    try:
        return ArchSpec.from_dict(data, source=where)
    except ArchError as exc:
        raise WeightsError(str(exc)) from None


def _config_v2(raw: Dict[str, Any], where: str) -> Dict[str, Any]:
    is_model = _zoo_is_model()

    arch = raw.get("architecture")
    if not isinstance(arch, str) or not is_model(arch):
        raise WeightsError(f"{where}: architecture: {arch!r} is not a registered model "
                           "(expected an e3d-zoo constructor such as 'e3d_s')")
    args = raw.get("model_args")
    if not isinstance(args, dict) or "spec" not in args:
        raise WeightsError(f"{where}: model_args: expected an object with the architecture 'spec'")
    pc = raw.get("pretrained_cfg")
    if not isinstance(pc, dict):
        raise WeightsError(f"{where}: pretrained_cfg: expected an object, found {type(pc).__name__}")
    unknown = sorted(k for k in pc if k not in _pretrained_cfg_fields())
    if unknown:
        raise WeightsError(f"{where}: pretrained_cfg: unknown key(s) {unknown}; timm's PretrainedCfg "
                           "has no such fields (clip fields belong in model_args.video_cfg)")
    clip = args.get("video_cfg") or {}
    if not isinstance(clip, dict):
        raise WeightsError(f"{where}: model_args.video_cfg: expected an object")
    spec = _checked_spec(args["spec"], f"{where}: model_args.spec")
    extra = {k: v for k, v in args.items() if k not in ("spec", "video_cfg")}
    return {"architecture": arch, "num_classes": int(raw.get("num_classes", pc.get("num_classes", 0))),
            "pretrained_cfg": dict(pc), "spec": spec, "video_cfg": dict(clip), "model_args": extra}


def _config_v1(raw: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Format 1: the spec in e3d.spec, clip fields inside pretrained_cfg."""
    is_model = _zoo_is_model()

    if "spec" not in raw["e3d"]:
        raise WeightsError(f"{where}: not an e3d-zoo config (expected the architecture in e3d.spec)")
    spec = _checked_spec(raw["e3d"]["spec"], f"{where}: e3d.spec")
    if "head_hidden" in raw:
        spec = spec.replace(head_hidden=int(raw["head_hidden"]))
    pc = dict(raw.get("pretrained_cfg") or {})
    clip = {k: pc.pop(k) for k in CLIP_KEYS if k in pc}
    fields = set(_pretrained_cfg_fields()) - set(_SOURCE_KEYS)
    pc = {k: v for k, v in pc.items() if k in fields}
    arch = raw.get("architecture")
    return {"architecture": arch if isinstance(arch, str) and is_model(arch) else CUSTOM_ARCH_BASE,
            "num_classes": int(raw.get("num_classes", pc.get("num_classes", 0))),
            "pretrained_cfg": pc, "spec": spec, "video_cfg": clip,
            "model_args": {"global_pool": raw["global_pool"]} if raw.get("global_pool") else {}}


# ---- reading state dicts -------------------------------------------------------

def read_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """A state_dict from .safetensors, or from a pickle read with ``weights_only=True``.

    Wrapped checkpoints (``{"state_dict": ...}``, ``{"model": ...}``, e3d-train
    checkpoints) are unwrapped; DDP's ``module.`` prefix and the reference
    implementation's key names are converted.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{path}: corrupted or not a safetensors file ({exc}); "
                               "download or save it again") from None
    else:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{path}: refused to unpickle: the file holds Python objects "
                               f"beyond tensors and containers, and checkpoints are only read with "
                               f"torch.load(weights_only=True) ({first}). Re-save just the "
                               "state_dict, or convert it to .safetensors") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        for key in ("state_dict", "model", "model_state", "module"):
            if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a mapping of parameter names to tensors")
    check_finite(state, str(path))
    return convert_reference_state_dict(dict(state))


_REF_PATTERNS = [
    # plain blocks: block_list.i.conv1 / bn1 -> blocks.i.conv / bn
    (re.compile(r"^block_list\.(\d+)\.conv1\.(.+)$"), r"blocks.\1.conv.\2"),
    (re.compile(r"^block_list\.(\d+)\.bn1\.(.+)$"), r"blocks.\1.bn.\2"),
    # residual layers: block_list.i.block_list.j.convN.{conv1,bn1}
    (re.compile(r"^block_list\.(\d+)\.block_list\.(\d+)\.conv1\.conv1\.(.+)$"), r"blocks.\1.\2.conv_pw.\3"),
    (re.compile(r"^block_list\.(\d+)\.block_list\.(\d+)\.conv1\.bn1\.(.+)$"), r"blocks.\1.\2.bn1.\3"),
    (re.compile(r"^block_list\.(\d+)\.block_list\.(\d+)\.conv2\.conv1\.(.+)$"), r"blocks.\1.\2.conv_dw.\3"),
    (re.compile(r"^block_list\.(\d+)\.block_list\.(\d+)\.conv2\.bn1\.(.+)$"), r"blocks.\1.\2.bn2.\3"),
    (re.compile(r"^block_list\.(\d+)\.block_list\.(\d+)\.conv3\.conv1\.(.+)$"), r"blocks.\1.\2.conv_pwl.\3"),
    (re.compile(r"^block_list\.(\d+)\.block_list\.(\d+)\.conv3\.bn1\.(.+)$"), r"blocks.\1.\2.bn3.\3"),
    # classifier head: Sequential(Linear, Swish, Dropout, Linear)
    (re.compile(r"^fc_linear\.0\.(.+)$"), r"head_fc.\1"),
    (re.compile(r"^fc_linear\.3\.(.+)$"), r"classifier.\1"),
]


def convert_reference_state_dict(state: MutableMapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename the reference implementation's keys (``Cnn3DNet``) to ours; others pass."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        for pattern, repl in _REF_PATTERNS:
            new, n = pattern.subn(repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


# ---- applying a state dict -----------------------------------------------------

_HEAD_KEYS = ("classifier.weight", "classifier.bias")


def _first_conv(model: nn.Module) -> Optional[Tuple[str, nn.Conv3d]]:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv3d)), None)


def adapt_input_channels(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Make the checkpoint's first conv take the model's input channels, in place.

    timm's ``adapt_input_conv`` (sum the RGB filters for one channel; repeat and rescale
    them for more) works on 2D weights; a (O, I, kt, k, k) weight is viewed as
    (O, I, kt * k, k) for it, which leaves the channel axis alone.
    """
    from timm.models import adapt_input_conv

    first = _first_conv(model)
    if first is None or f"{first[0]}.weight" not in state:
        return
    key, module = f"{first[0]}.weight", first[1]
    weight = state[key]
    if weight.dim() != 5 or weight.shape[1] == module.in_channels or weight.shape[0] != module.out_channels:
        return
    o, i, kt, kh, kw = weight.shape
    as_2d = weight.reshape(o, i, kt * kh, kw)
    try:
        try:
            adapted = adapt_input_conv(module.in_channels, as_2d, base_chans=i)
        except TypeError:  # timm before base_chans (<= 1.0.25) adapts from 3 channels only
            if i != 3:
                raise NotImplementedError("this timm adapts 3-channel weights only; upgrade timm") from None
            adapted = adapt_input_conv(module.in_channels, as_2d)
    except (NotImplementedError, ValueError, AssertionError) as exc:
        raise WeightsError(f"{source}: cannot adapt {key} from {i} to {module.in_channels} input "
                           f"channels: {exc}") from None
    state[key] = adapted.reshape(o, module.in_channels, kt, kh, kw).to(weight.dtype)


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> Dict[str, Any]:
    """Load ``state`` into ``model``. The first conv is adapted to the model's input
    channels; a classifier of another size is re-initialised with a warning, and one the
    model does not have (``num_classes=0``) is dropped; any other missing, unexpected or
    mis-shaped key is a WeightsError listing them."""
    state = dict(state)
    adapt_input_channels(model, state, source)
    own = model.state_dict()
    head = set(_HEAD_KEYS)
    dropped_head = [k for k in state if k in head and k not in own]
    for k in dropped_head:
        del state[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and state[k].shape != own[k].shape]
    head_mismatch = [m for m in mismatched if m[0] in head]
    body_mismatch = [m for m in mismatched if m[0] not in head]
    missing_body = [k for k in missing if k not in head]
    if body_mismatch or unexpected or missing_body:
        parts = []
        if body_mismatch:
            parts.append("shape mismatches: " + ", ".join(
                f"{k} {s} in the weights vs {o} in the model" for k, s, o in body_mismatch[:8])
                + (f" (+{len(body_mismatch) - 8} more)" if len(body_mismatch) > 8 else ""))
        if missing_body:
            parts.append(f"missing keys: {missing_body[:8]}" + (f" (+{len(missing_body) - 8} more)"
                                                              if len(missing_body) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {unexpected[:8]}" + (f" (+{len(unexpected) - 8} more)"
                                                                if len(unexpected) > 8 else ""))
        raise WeightsError(f"{source}: the weights do not fit this architecture "
                           f"({getattr(getattr(model, 'spec', None), 'name', None) or type(model).__name__}); "
                           + "; ".join(parts))
    filtered = {k: v for k, v in state.items() if k not in {m[0] for m in head_mismatch}}
    model.load_state_dict(filtered, strict=False)
    reinit = bool(head_mismatch) or any(k in head for k in missing)
    if reinit:
        got = head_mismatch[0][1][0] if head_mismatch else "no"
        warnings.warn(f"{source}: the checkpoint's classifier has {got} classes, the model "
                      f"{getattr(model, 'num_classes', '?')}; the classifier was re-initialised "
                      "(fine-tune it before use)", stacklevel=3)
    return {"source": source, "head_reinitialised": reinit, "loaded_keys": len(filtered)}


def load_weights(model: nn.Module, source: str | os.PathLike, revision: Optional[str] = None,
                 cache_dir: Optional[str | os.PathLike] = None) -> Dict[str, Any]:
    """Fill ``model`` from a save-pretrained folder, a weights file or an ``hf-hub:`` id."""
    _, weights, where = _resolve(source, revision, cache_dir)
    state = read_state_dict(weights)
    report = apply_state_dict(model, state, where)
    report["weights"] = str(weights)
    return report


# ---- building models ---------------------------------------------------------------

def from_pretrained(source: str | os.PathLike, *, revision: Optional[str] = None,
                    num_classes: Optional[int] = None, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """An E3D model from a save-pretrained folder or Hub repo (with its weights).

    Built the way ``timm.create_model("local-dir:FOLDER" / "hf-hub:ORG/NAME")`` builds
    it (the registered constructor, the config's ``model_args``), after this module
    checked the config; keyword arguments override ``model_args`` (e.g. ``in_chans``,
    ``features_only``).
    """
    import timm

    config = load_config(source, revision)
    pc = dict(config["pretrained_cfg"])
    text = os.fspath(source)
    if isinstance(source, Path) or os.path.exists(text):
        path = Path(source)
        pc.update(file=str(path), source="local-dir" if path.is_dir() else None)
    else:
        repo_id, rev = parse_hub_id(text)
        rev = revision or rev
        pc.update(hf_hub_id=repo_id + (f"@{rev}" if rev else ""), source="hf-hub")
    args = {**config["model_args"], **kwargs}
    if num_classes is not None:
        args["num_classes"] = num_classes
    return timm.create_model(config["architecture"], pretrained=pretrained, pretrained_cfg=pc,
                             spec=config["spec"], video_cfg=config["video_cfg"], **args)


def load_pretrained_weights(model: nn.Module, pretrained_cfg: Optional[Mapping[str, Any]],
                            cache_dir: Optional[str | os.PathLike] = None) -> Dict[str, Any]:
    """Weights for ``pretrained=True`` (the zoo constructors' hook), from the source the
    ``pretrained_cfg`` names, in timm's order: a ``source`` of 'hf-hub' / 'local-dir'
    (timm's prefixed model names), else ``state_dict``, ``file``, ``hf_hub_id``."""
    cfg = dict(pretrained_cfg or {})
    name = cfg.get("architecture") or getattr(getattr(model, "spec", None), "name", None) or "model"
    source = cfg.get("source")
    if source == "local-dir" or (source != "hf-hub" and cfg.get("state_dict") is None and cfg.get("file")):
        local = cfg.get("file")
        if not local or not os.path.exists(local):
            raise WeightsError(f"{name}: pretrained_cfg['file'] = {local!r} does not exist. {_HOW_TO_GET}")
        return load_weights(model, local)
    if source != "hf-hub" and cfg.get("state_dict") is not None:
        where = f"{name}: pretrained_cfg['state_dict']"
        check_finite(cfg["state_dict"], where)
        report = apply_state_dict(model, convert_reference_state_dict(dict(cfg["state_dict"])), where)
        return report
    repo = cfg.get("hf_hub_id")
    if not repo:
        if cfg.get("url"):
            raise WeightsError(f"{name}: weights by URL ({cfg['url']}) are not fetched by e3d-zoo; "
                               "download the file and pass pretrained_cfg_overlay=dict(file=PATH)")
        raise WeightsError(f"{name}: no pretrained weights are published for this model yet (its "
                           "pretrained_cfg names no hf_hub_id, file or state_dict). Pass "
                           "pretrained_cfg_overlay=dict(hf_hub_id='ORG/NAME') or dict(file=PATH) "
                           f"for weights you have. {_HOW_TO_GET}")
    if cfg.get("hf_hub_filename"):
        raise WeightsError(f"{name}: pretrained_cfg['hf_hub_filename'] = {cfg['hf_hub_filename']!r}: "
                           f"e3d-zoo repos hold {WEIGHTS_NAME}; leave it unset")
    repo_id, rev = parse_hub_id(repo)
    try:
        return load_weights(model, f"hf-hub:{repo_id}", revision=cfg.get("hf_hub_revision") or rev,
                            cache_dir=cache_dir)
    except HubError as exc:
        raise HubError(f"{name}: no pretrained weights could be had (tried Hugging Face Hub repo "
                       f"{repo_id!r}): {exc}") from None


# ---- pushing -------------------------------------------------------------------------

def _network_errors() -> Tuple[type, ...]:
    """Connection failures of the HTTP client huggingface_hub uses: requests' are OSErrors,
    httpx's (huggingface_hub >= 1.0) are not."""
    import importlib

    errors: List[type] = [OSError]
    for module in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, revision: Optional[str] = None,
                commit_message: Optional[str] = None, private: Optional[bool] = None,
                token: Optional[str] = None, create_pr: bool = False,
                endpoint: Optional[str] = None) -> Dict[str, Any]:
    """Upload a save-pretrained folder: create the repo (if needed), the branch
    ``revision`` (if given and new), then one commit with the folder's files."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}; "
                           "push a save-pretrained folder (e3d-train's OUTPUT/model)")
    load_config(folder)  # refuse to publish something that will not load
    if not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(f"{folder}: no {WEIGHTS_NAME}; push a folder written by save_pretrained")
    repo_id, rev_in_id = parse_hub_id(repo_id)
    revision = revision or rev_in_id
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=commit_message or f"Upload {folder.name} with e3d-zoo",
                                 create_pr=create_pr, repo_type="model",
                                 allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME])
    except hf_errors.HfHubHTTPError as exc:
        raise HubError(f"push to {repo_id!r} at {api.endpoint} failed: {exc}") from None
    except _network_errors() as exc:
        raise HubError(f"push to {repo_id!r}: cannot reach {api.endpoint}: {exc}") from None
    except ValueError as exc:  # e.g. no token where one is required
        raise HubError(f"push to {repo_id!r}: {exc}") from None
    return {"repo_id": repo_id, "repo_url": str(url), "revision": revision or "main",
            "commit": info.oid, "commit_url": info.commit_url, "pr_url": info.pr_url}
