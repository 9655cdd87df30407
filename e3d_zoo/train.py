"""Training and fine-tuning: one config in, checkpoints, a log and a Hub folder out.

    from e3d_zoo.train import TrainConfig, train
    summary = train(TrainConfig.load("configs/synthetic_motion.toml", {"epochs": 2}))

What it does, and where each piece comes from (timm has most of it):

* optimizer: ``timm.optim.create_optimizer_v2`` (AdamW or SGD, no weight decay on
  norms and biases); schedule: ``timm.scheduler.CosineLRScheduler`` stepped per
  update, with linear warm-up; loss: cross entropy with label smoothing;
  EMA: ``timm.utils.ModelEmaV3``; top-k: ``timm.utils.accuracy``.
* mixed precision: fp16 autocast + GradScaler on CUDA (``amp="auto"``), bf16 autocast
  on CPU only when asked (``amp="bf16"``).
* distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) it runs DDP, gloo on CPU and
  NCCL on GPU; every rank trains on its shard, rank 0 writes.
* an atomic ``last.pt`` after every epoch (weights_only-loadable) and ``resume=True``
  to continue from it; ``log.csv`` rewritten atomically each epoch; a tqdm bar; at the
  end a save-pretrained folder (``model/``) and ``curve.png``.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import time
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .atomic import (atomic_path, atomic_write_text, output_lock, read_text_limited,
                     remove_stale_temps)
from .errors import ConfigError, OutputError

CHECKPOINT_FORMAT = 1
# Keys that change what is trained; resuming with a different value is refused.
_RESUME_FIXED = ("model", "frames", "size", "num_classes", "head_hidden", "data", "data_root",
                 "train_list", "val_list", "train_clips", "val_clips", "data_seed",
                 "optimizer", "batch_size")
# Settings a config file names as inputs: relative values resolve against the file's
# folder, so a config runs the same from any working directory. ``model`` and ``init``
# also take registered names and hf-hub: ids, so they resolve only when the file exists.
# ``output`` stays relative to the working directory: one config, many places to run it.
_INPUT_PATHS = ("data_root", "train_list", "val_list", "label_map")
_INPUT_MAYBE_PATHS = ("model", "init")
MAX_CONFIG_BYTES = 1 << 20


@dataclass
class TrainConfig:
    """Every setting of a run. A config file may group keys in sections
    (``[model]``, ``[data]``, ``[optim]``, ``[train]``); the sections are for people,
    the keys are unique."""

    # model
    model: str = "e3d_s"                 # registered name, arch file, or hf-hub:ORG/NAME
    frames: Optional[int] = None         # clip length T (default: the architecture's)
    size: Optional[int] = None           # crop side R (default: the architecture's)
    num_classes: Optional[int] = None    # default: the dataset's class count
    head_hidden: Optional[int] = None
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    init: Optional[str] = None           # weights to fine-tune from: folder, file or hf-hub:id
    # data
    data: str = "synthetic"              # synthetic | folder | csv | ssv2
    data_root: Optional[str] = None
    train_list: Optional[str] = None
    val_list: Optional[str] = None
    label_map: Optional[str] = None
    train_clips: int = 4000              # synthetic only
    val_clips: int = 800
    val_fraction: float = 0.1            # folder without train/ and val/: held-out share
    data_seed: int = 0
    frame_stride: int = 2
    scale_min: Optional[int] = None      # random short-side scale range (default: size..1.25*size)
    scale_max: Optional[int] = None
    hflip: bool = False                  # off by default: flips change direction labels
    num_workers: int = 0
    # optimisation
    optimizer: str = "adamw"             # adamw | sgd
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    momentum: float = 0.9
    epochs: int = 10
    warmup_epochs: float = 1.0
    batch_size: int = 32
    label_smoothing: float = 0.1
    clip_grad: Optional[float] = None
    amp: str = "auto"                    # auto | off | fp16 | bf16
    # channels-last 3D weights and inputs: oneDNN's fast depthwise 3D conv path on CPU
    # (E3D-S at 13x112, 2 threads: about half the time per training step)
    channels_last: bool = False
    ema_decay: float = 0.0               # 0: no EMA
    seed: int = 0
    max_steps_per_epoch: Optional[int] = None
    # evaluation and output
    eval_temporal_views: int = 1
    eval_spatial_views: int = 1
    output: str = "runs/train"
    log: str = "csv"                     # csv | tensorboard | both
    save_pretrained: bool = True
    plot: bool = True

    # ---- construction -----------------------------------------------------
    @classmethod
    def fields(cls) -> Dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "<config>") -> "TrainConfig":
        flat: Dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):  # a section
                for k, v in value.items():
                    if k in flat:
                        raise ConfigError(f"{where}: key {k!r} is set twice ([{key}] and another)")
                    flat[k] = v
            else:
                if key in flat:
                    raise ConfigError(f"{where}: key {key!r} is set twice")
                flat[key] = value
        cfg = cls()
        return cfg.updated(flat, where)

    @classmethod
    def load(cls, path: Optional[str | os.PathLike] = None,
             overrides: Optional[Mapping[str, Any]] = None) -> "TrainConfig":
        """A config file (TOML or JSON) with ``overrides`` applied on top."""
        cfg = cls()
        if path is not None:
            path = Path(path)
            text = read_text_limited(path, MAX_CONFIG_BYTES, what="config file", error=ConfigError)
            kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
            try:
                data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
            except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
                raise ConfigError(f"{path}: not valid {kind}: {exc or 'nested too deeply'}") from None
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: expected a table of settings, found {type(data).__name__}")
            cfg = cls.from_mapping(data, str(path)).resolved_against(path.parent)
        return cfg.updated(overrides or {}, "command line")

    def resolved_against(self, folder: Path) -> "TrainConfig":
        """Relative input paths of a config file, made relative to its ``folder``."""
        if folder == Path("."):
            return self
        changes: Dict[str, Any] = {}
        for key in _INPUT_PATHS + _INPUT_MAYBE_PATHS:
            value = getattr(self, key)
            if not value or value.startswith("hf-hub:") or os.path.isabs(value):
                continue
            candidate = os.path.normpath(folder / value)
            if key in _INPUT_PATHS or os.path.exists(candidate):
                changes[key] = candidate
        return dataclasses.replace(self, **changes)

    def updated(self, changes: Mapping[str, Any], where: str) -> "TrainConfig":
        fields = self.fields()
        values = dataclasses.asdict(self)
        for key, raw in changes.items():
            if key not in fields:
                raise ConfigError(f"{where}: unknown setting {key!r}; known settings: "
                                  f"{', '.join(sorted(fields))}")
            values[key] = _coerce(key, raw, fields[key], where)
        cfg = TrainConfig(**values)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "<config>") -> None:
        from .spec import MAX_FRAMES, MAX_HEAD_HIDDEN, MAX_SIZE

        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"{where}: {key}: expected {expected}, found {getattr(self, key)!r}")

        for key, f in self.fields().items():  # inf/nan would train to NaN and still "finish"
            v = getattr(self, key)
            if "float" in str(f.type) and v is not None and not math.isfinite(v):
                raise bad(key, "a finite number")

        if self.optimizer.lower() not in ("adamw", "sgd"):
            raise bad("optimizer", "'adamw' or 'sgd'")
        if self.amp not in ("auto", "off", "fp16", "bf16"):
            raise bad("amp", "one of 'auto', 'off', 'fp16', 'bf16'")
        if self.log not in ("csv", "tensorboard", "both"):
            raise bad("log", "one of 'csv', 'tensorboard', 'both'")
        if self.data not in ("synthetic", "folder", "csv", "ssv2"):
            raise bad("data", "one of 'synthetic', 'folder', 'csv', 'ssv2'")
        for key in ("epochs", "batch_size", "train_clips", "val_clips", "eval_temporal_views",
                    "eval_spatial_views", "frame_stride"):
            if getattr(self, key) < 1:
                raise bad(key, "an integer >= 1")
        for key in ("num_classes", "max_steps_per_epoch", "scale_min", "scale_max"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise bad(key, "an integer >= 1 (or unset)")
        for key, top in (("frames", MAX_FRAMES), ("size", MAX_SIZE)):
            if getattr(self, key) is not None and not 1 <= getattr(self, key) <= top:
                raise bad(key, f"an integer in [1, {top}] (or unset)")
        if self.scale_min and self.scale_max and self.scale_min > self.scale_max:
            raise bad("scale_min", f"at most scale_max ({self.scale_max})")
        if self.head_hidden is not None and not 0 <= self.head_hidden <= MAX_HEAD_HIDDEN:
            raise bad("head_hidden", f"an integer in [0, {MAX_HEAD_HIDDEN}] (or unset)")
        if self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ConfigError(f"{where}: lr must be > 0, min_lr and weight_decay >= 0; found "
                              f"{self.lr}, {self.min_lr}, {self.weight_decay}")
        for key in ("drop_rate", "drop_path_rate"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, "a number in [0, 1)")
        if not 0 <= self.momentum <= 1:
            raise bad("momentum", "a number in [0, 1]")
        if not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "a number in (0, 1)")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise bad("clip_grad", "a number > 0 (or unset)")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "a number in [0, 1) (0 turns EMA off)")
        if self.warmup_epochs < 0:
            raise bad("warmup_epochs", "a number >= 0")
        if self.num_workers < 0:
            raise bad("num_workers", "an integer >= 0")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, raw: Any, f: dataclasses.Field, where: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = kind.startswith("Optional[")
    base = kind[len("Optional["):-1] if optional else kind
    if isinstance(raw, str) and optional and raw.lower() in ("none", "null", ""):
        return None
    if raw is None:
        if optional:
            return None
        raise ConfigError(f"{where}: {key}: expected a value of type {base}, found null")
    try:
        if base == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return raw.lower() in ("1", "true", "yes", "on")
            raise ValueError
        if base == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if base == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if base == "str":
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError
            return str(raw)
    except (TypeError, ValueError):
        pass
    else:
        return raw
    raise ConfigError(f"{where}: {key}: expected a value of type {base}, found {raw!r}")


# ---- distributed -----------------------------------------------------------

@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if cuda else "gloo"
            if cuda:
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, device)


def _all_reduce_sum(values: List[float], dist_info: DistInfo) -> List[float]:
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


# ---- data ------------------------------------------------------------------

def build_datasets(cfg: TrainConfig, frames: int, size: int):
    """(train, val) datasets for ``cfg``; each has ``classes`` and ``views(i, t, s)``."""
    if cfg.data == "synthetic":
        from .data.synthetic import SyntheticMotion

        train = SyntheticMotion("train", cfg.train_clips, seed=cfg.data_seed, frames=frames, size=size)
        val = SyntheticMotion("val", cfg.val_clips, seed=cfg.data_seed, frames=frames, size=size)
        return train, val
    from .data import datasets

    return datasets.build_video_datasets(cfg, frames, size)


class _MultiView(torch.utils.data.Dataset):
    def __init__(self, base, temporal: int, spatial: int):
        self.base, self.temporal, self.spatial = base, temporal, spatial

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        views = self.base.views(i, self.temporal, self.spatial)
        return None if views is None else (views, self.base.label(i))


def _loader(ds, batch_size: int, shuffle: bool, seed: int, epoch: int, dist_info: DistInfo,
            num_workers: int, drop_last: bool) -> torch.utils.data.DataLoader:
    indices = list(range(len(ds)))
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        indices = torch.randperm(len(ds), generator=g).tolist()
    if dist_info.enabled:
        if shuffle:  # equal shard sizes so every rank takes the same number of steps
            per = len(indices) // dist_info.world_size
            indices = indices[:per * dist_info.world_size]
        indices = indices[dist_info.rank::dist_info.world_size]
    collate = getattr(ds, "collate", None) or getattr(getattr(ds, "base", None), "collate", None)
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, indices), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, drop_last=drop_last and len(indices) >= batch_size,
        collate_fn=collate, persistent_workers=False)


# ---- model -----------------------------------------------------------------

def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    from .zoo import create_model, spec_for

    kwargs: Dict[str, Any] = {"num_classes": num_classes, "drop_rate": cfg.drop_rate,
                              "drop_path_rate": cfg.drop_path_rate}
    if cfg.head_hidden is not None:
        kwargs["head_hidden"] = cfg.head_hidden
    if cfg.model.startswith("hf-hub:"):
        model = create_model(cfg.model, pretrained=False, **kwargs)
        model.spec = model.spec.with_clip(cfg.frames, cfg.size)
    else:
        model = create_model(spec_for(cfg.model, frames=cfg.frames, size=cfg.size), **kwargs)
    if cfg.init:
        from .hub import load_weights

        load_weights(model, cfg.init)
    return model


def _amp_setup(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None, None
    if cfg.amp == "bf16":
        return torch.bfloat16, None
    if device.type != "cuda":
        raise ConfigError(f"amp: fp16 mixed precision needs a CUDA device; this run is on "
                          f"{device.type} (use amp='bf16' or 'off')")
    return torch.float16, torch.amp.GradScaler("cuda")


# ---- checkpoints -------------------------------------------------------------

def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Atomic: an interrupted save leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> Dict[str, Any]:
    """A training checkpoint, loaded with ``weights_only=True`` (no code runs)."""
    from .errors import WeightsError

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (zip), EOFError ...
        raise WeightsError(f"{path}: not a loadable checkpoint (read with weights_only=True): "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: not an e3d-train checkpoint (expected a dict with "
                           f"format={CHECKPOINT_FORMAT})")
    return state


# ---- evaluation --------------------------------------------------------------

@torch.no_grad()
def evaluate(model: nn.Module, dataset, *, batch_size: int = 32, temporal_views: int = 1,
             spatial_views: int = 1, dist_info: Optional[DistInfo] = None, num_workers: int = 0,
             autocast_dtype: Optional[torch.dtype] = None, progress: bool = False,
             channels_last: bool = False) -> Dict[str, float]:
    """Top-1/top-5 and loss; with several views the softmax of the views is averaged."""
    from timm.utils import accuracy
    from tqdm.auto import tqdm

    dist_info = dist_info or DistInfo()
    device = dist_info.device
    was_training = model.training
    model.eval()
    multi = temporal_views * spatial_views > 1
    ds = _MultiView(dataset, temporal_views, spatial_views) if multi else dataset
    loader = _loader(ds, batch_size, False, 0, 0, dist_info, num_workers, drop_last=False)
    n = correct1 = correct5 = loss_sum = 0.0
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
        x, y = x.to(device), torch.as_tensor(y).to(device)
        if channels_last and not multi:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if multi:
                b, v = x.shape[:2]
                logits = model(x.flatten(0, 1)).float().view(b, v, -1)
                probs = logits.softmax(-1).mean(1)
                out = probs.clamp_min(1e-12).log()
            else:
                out = model(x).float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        k = min(5, out.shape[1])
        top1, top5 = accuracy(out, y, topk=(1, k))
        n += len(y)
        correct1 += top1.item() * len(y) / 100
        correct5 += top5.item() * len(y) / 100
    n, correct1, correct5, loss_sum = _all_reduce_sum([n, correct1, correct5, loss_sum], dist_info)
    model.train(was_training)
    n = max(n, 1)
    return {"top1": 100 * correct1 / n, "top5": 100 * correct5 / n, "loss": loss_sum / n,
            "samples": int(round(n))}


# ---- the loop ----------------------------------------------------------------

class _Logger:
    def __init__(self, out: Path, kind: str, enabled: bool):
        self.out, self.kind, self.enabled = out, kind, enabled
        self.tb = None
        if enabled and kind in ("tensorboard", "both"):
            from .errors import require

            tensorboard = require("torch.utils.tensorboard", "train", "TensorBoard logging")
            self.tb = tensorboard.SummaryWriter(str(out / "tensorboard"))

    def write(self, history: List[Dict[str, Any]]) -> None:
        if not self.enabled:
            return
        if self.kind in ("csv", "both"):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
            atomic_write_text(self.out / "log.csv", buf.getvalue())
        if self.tb is not None:
            row = history[-1]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()


def plot_curve(history: List[Dict[str, Any]], path: Path, title: str = "") -> Optional[Path]:
    """Train/val top-1 per epoch as a PNG (matplotlib, Agg); None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["train_top1"] for r in history], label="train top-1")
    ax.plot(epochs, [r["val_top1"] for r in history], label="val top-1", marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Run (or resume) a training job; returns a summary dict (also ``summary.json``).

    The writing rank holds ``output``'s lock for the whole run, so a second job on the
    same output fails at once (naming the first one's pid) instead of both overwriting
    ``last.pt``; temporary files a killed run left in ``output`` are deleted first.
    """
    dist_info = init_distributed()
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file; the training output must be a folder "
                          "(--output)")
    with contextlib.ExitStack() as held:
        if dist_info.is_main:
            held.enter_context(output_lock(out, what="training output"))
            remove_stale_temps(out)
        return _Run(cfg, dist_info, resume, progress).run()


class _Run:
    """One training job: setup, the epoch loop, the outputs. Each step is a method."""

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo, resume: bool, progress: bool):
        self.cfg, self.dist, self.progress = cfg, dist_info, progress
        self.out = Path(cfg.output)
        self.ckpt_path = self.out / "last.pt"
        torch.manual_seed(cfg.seed)
        self.state = self._resume_state() if resume else None

    def _resume_state(self) -> Optional[Dict[str, Any]]:
        if not self.ckpt_path.is_file():
            if self.dist.is_main:
                warnings.warn(f"{self.ckpt_path}: no checkpoint to resume from; starting from scratch")
            return None
        state = load_checkpoint(self.ckpt_path)
        _check_resumable(state["config"], self.cfg, self.ckpt_path)
        from .hub import check_finite

        check_finite(state["model"], str(self.ckpt_path))
        return state

    def clip_shape(self) -> tuple[int, int]:
        """(frames, size): the config's, else the architecture's (datasets render clips of it)."""
        from .zoo import spec_for

        cfg = self.cfg
        if not cfg.model.startswith("hf-hub:"):
            spec = spec_for(cfg.model, frames=cfg.frames, size=cfg.size)
            return spec.frames, spec.size
        from .hub import load_config

        spec = load_config(cfg.model)["spec"].with_clip(cfg.frames, cfg.size)
        return spec.frames, spec.size

    def build(self) -> None:
        cfg, dist_info = self.cfg, self.dist
        self.frames, self.size = self.clip_shape()
        self.train_ds, self.val_ds = build_datasets(cfg, self.frames, self.size)
        self.classes = list(self.train_ds.classes)
        self.num_classes = cfg.num_classes or len(self.classes)
        if self.num_classes < len(self.classes):
            raise ConfigError(f"num_classes={self.num_classes} but the dataset has "
                              f"{len(self.classes)} classes")
        model = build_model(cfg, self.num_classes).to(dist_info.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        # the saved config must describe the preprocessing the weights were trained with
        norm = {k: tuple(getattr(self.train_ds, k)) for k in ("mean", "std") if hasattr(self.train_ds, k)}
        model.pretrained_cfg.update(norm, frame_stride=getattr(self.train_ds, "frame_stride",
                                                               cfg.frame_stride))
        if self.state is not None:
            model.load_state_dict(self.state["model"])
        self.model = model
        self.ddp_model = model
        if dist_info.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[dist_info.local_rank] if dist_info.device.type == "cuda" else None)

    def build_optimization(self) -> None:
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler
        from timm.utils import ModelEmaV3

        cfg = self.cfg
        self.optimizer = create_optimizer_v2(self.model, opt=cfg.optimizer.lower(), lr=cfg.lr,
                                             weight_decay=cfg.weight_decay, momentum=cfg.momentum)
        self.steps_per_epoch = _steps_per_epoch(len(self.train_ds), cfg, self.dist)
        total_steps = self.steps_per_epoch * cfg.epochs
        warmup_steps = min(int(round(cfg.warmup_epochs * self.steps_per_epoch)), max(total_steps - 1, 0))
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=max(total_steps, 1),
                                           lr_min=cfg.min_lr, warmup_t=warmup_steps,
                                           warmup_lr_init=cfg.lr * 0.01, warmup_prefix=True,
                                           t_in_epochs=False)
        self.autocast_dtype, self.scaler = _amp_setup(cfg, self.dist.device)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.start_epoch, self.history = 0, []
        self.best: Dict[str, Any] = {"val_top1": -1.0, "epoch": -1}
        state = self.state
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and state.get("ema"):
                self.ema.module.load_state_dict(state["ema"])
            self.start_epoch = int(state["epoch"]) + 1
            self.history = list(state["history"])
            self.best = dict(state["best"])
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])
        self.scheduler.step_update(self.start_epoch * self.steps_per_epoch)

    def run(self) -> Dict[str, Any]:
        cfg, dist_info = self.cfg, self.dist
        self.build()
        self.build_optimization()
        logger = _Logger(self.out, cfg.log, dist_info.is_main)
        if dist_info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        eval_model = self.ema.module if self.ema is not None else self.model
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.time()
            seen, correct, loss_sum = self.train_epoch(epoch)
            metrics = evaluate(eval_model, self.val_ds, batch_size=cfg.batch_size,
                               temporal_views=cfg.eval_temporal_views,
                               spatial_views=cfg.eval_spatial_views, dist_info=dist_info,
                               num_workers=cfg.num_workers, autocast_dtype=self.autocast_dtype,
                               channels_last=cfg.channels_last)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
                   "val_loss": metrics["loss"], "val_top1": metrics["top1"], "val_top5": metrics["top5"],
                   "val_samples": metrics["samples"], "epoch_seconds": time.time() - t0}
            self.history.append(row)
            if metrics["top1"] > self.best["val_top1"]:
                self.best = {"val_top1": metrics["top1"], "val_top5": metrics["top5"], "epoch": epoch + 1}
            if dist_info.is_main:
                self.save(epoch)
                logger.write(self.history)
                if self.progress:
                    print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.3f} "
                          f"top-1 {row['train_top1']:.1f} | val top-1 {row['val_top1']:.1f} "
                          f"top-5 {row['val_top5']:.1f} | {row['epoch_seconds']:.0f}s", flush=True)
        return self.finish(eval_model)

    def train_epoch(self, epoch: int) -> List[float]:
        """One pass over the training shard; (clips seen, correct, summed loss) over all ranks."""
        from timm.utils import accuracy
        from tqdm.auto import tqdm

        cfg, dist_info = self.cfg, self.dist
        self.ddp_model.train()
        if hasattr(self.train_ds, "set_epoch"):
            self.train_ds.set_epoch(epoch)
        loader = _loader(self.train_ds, cfg.batch_size, True, cfg.seed, epoch, dist_info,
                         cfg.num_workers, drop_last=True)
        bar = tqdm(loader, total=min(len(loader), cfg.max_steps_per_epoch or len(loader)),
                   desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (self.progress and dist_info.is_main), leave=False)
        seen = correct = loss_sum = 0.0
        for step, (x, y) in enumerate(bar):
            if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
                break
            x, y = x.to(dist_info.device, non_blocking=True), torch.as_tensor(y).to(dist_info.device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            logits, loss = self.step(x, y, epoch, step)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += accuracy(logits.detach().float(), y, topk=(1,))[0].item() * len(y) / 100
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", top1=f"{100 * correct / seen:.1f}")
        bar.close()
        return _all_reduce_sum([seen, correct, loss_sum], dist_info)

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int):
        cfg, model, scaler = self.cfg, self.model, self.scaler
        with torch.autocast(self.dist.device.type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            logits = self.ddp_model(x)
            loss = self.criterion(logits.float(), y)
        if not torch.isfinite(loss):
            raise ConfigError(f"epoch {epoch + 1} step {step}: the loss is {loss.item()}; "
                              f"lower lr (now {cfg.lr}) or turn amp off")
        self.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            self.optimizer.step()
        num_updates = epoch * self.steps_per_epoch + step + 1
        self.scheduler.step_update(num_updates)
        if self.ema is not None:
            self.ema.update(model, step=num_updates)
        return logits, loss

    def save(self, epoch: int) -> None:
        save_checkpoint(self.ckpt_path, {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "config": self.cfg.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else {},
            "history": self.history, "best": self.best, "classes": self.classes,
            "torch_rng": torch.get_rng_state()})

    def finish(self, eval_model: nn.Module) -> Dict[str, Any]:
        cfg, out, history = self.cfg, self.out, self.history
        frames, size = self.frames, self.size
        summary = {"output": str(out), "epochs": cfg.epochs, "world_size": self.dist.world_size,
                   "classes": self.classes, "num_classes": self.num_classes, "frames": frames,
                   "size": size, "final": history[-1] if history else None, "best": self.best,
                   "params": sum(p.numel() for p in self.model.parameters()),
                   "replicas_in_sync": _replicas_in_sync(self.model, self.dist),
                   "data": {name: ds.report() for name, ds in (("train", self.train_ds),
                                                               ("val", self.val_ds))
                            if hasattr(ds, "report")}}
        if not self.dist.is_main:
            return summary
        if cfg.save_pretrained and history:
            from .hub import save_pretrained

            # safetensors stores contiguous tensors only
            eval_model = eval_model.to(memory_format=torch.contiguous_format)
            final = history[-1]
            save_pretrained(eval_model, out / "model", label_names=self.classes,
                            metrics={"dataset": cfg.data, "val_top1": round(final["val_top1"], 2),
                                     "val_top5": round(final["val_top5"], 2),
                                     "epochs": cfg.epochs, "frames": frames, "size": size})
            summary["pretrained_folder"] = str(out / "model")
        if cfg.plot and history:
            png = plot_curve(history, out / "curve.png", title=f"{Path(cfg.model).stem} T={frames}")
            summary["curve"] = str(png) if png else None
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        return summary


def _steps_per_epoch(n: int, cfg: TrainConfig, dist_info: DistInfo) -> int:
    per_rank = n // dist_info.world_size
    steps = per_rank // cfg.batch_size if per_rank >= cfg.batch_size else 1
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    return max(steps, 1)


def _replicas_in_sync(model: nn.Module, dist_info: DistInfo) -> bool:
    """True when every rank holds the same weights (always true without DDP)."""
    if not dist_info.enabled:
        return True
    import torch.distributed as dist

    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()]).to(dist_info.device)
    gathered = [torch.empty_like(flat) for _ in range(dist_info.world_size)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _check_resumable(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in _RESUME_FIXED if saved.get(k) != now[k]]
    if changed:
        raise ConfigError(f"{path}: cannot resume: the checkpoint was trained with different "
                          f"settings ({'; '.join(changed)}); use another --output or drop --resume")


def cleanup_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
