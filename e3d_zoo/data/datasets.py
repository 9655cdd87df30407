"""Video datasets for training: folder-per-class, Kinetics-style CSV, Something-Something JSON.

Every dataset here is a list of ``(video path, label index)`` plus the shared video
code: :mod:`e3d_zoo.video.decode` (PyAV), :mod:`e3d_zoo.video.sampling` (which frames)
and :mod:`e3d_zoo.video.transforms` (training augmentation: random short-side scale,
random crop, optional horizontal flip; evaluation: resize + centre / multi crops).

Unreadable videos are skipped, counted and reported, never fatal: with ``probe=True``
(default) each file is opened once up front and the bad ones are left out
(:attr:`VideoClipDataset.skipped`); a file that fails later, mid-training, is dropped
from its batch by :func:`collate_skip_none` and counted in ``runtime_failures``.

List formats:

* CSV (Kinetics style): ``path,label`` rows, an optional header, ``label`` a class
  name or an integer index; relative paths are relative to ``root`` (default: the
  list file's folder).
* Something-Something v2 JSON: ``[{"id": "74225", "template": "Pushing [something]
  from left to right", ...}, ...]`` with videos at ``root/<id>.webm``; the class is the
  template without brackets, indexed by ``label_map`` (the official
  ``something-something-v2-labels.json``) when given.
"""
from __future__ import annotations

import csv
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..atomic import read_json_limited, read_text_limited
from ..errors import DataError, VideoError

MAX_LIST_BYTES = 512 << 20  # SSv2's train list is ~30 MB
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")
Entry = Tuple[Path, int]


# ---- building entry lists -----------------------------------------------------------

def _videos_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def scan_folder(root: str | os.PathLike, classes: Optional[Sequence[str]] = None) -> Tuple[List[Entry], List[str]]:
    """``root/<class>/<video>`` -> entries and the sorted class names (or ``classes``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected one sub-folder of videos per class)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<video>.mp4)")
    names = list(classes) if classes is not None else found
    index = {c: i for i, c in enumerate(names)}
    unknown = [c for c in found if c not in index]
    if unknown:
        raise DataError(f"{root}: class folder(s) {unknown[:5]} are not among the training "
                        f"classes {names[:10]}{' ...' if len(names) > 10 else ''}")
    entries = [(p, index[c]) for c in found for p in _videos_in(root / c)]
    if not entries:
        raise DataError(f"{root}: the class folders hold no videos ({', '.join(VIDEO_SUFFIXES)})")
    return entries, names


def read_csv_list(path: str | os.PathLike, root: Optional[str | os.PathLike] = None,
                  classes: Optional[Sequence[str]] = None) -> Tuple[List[Entry], List[str]]:
    """A ``path,label`` list file -> entries and class names."""
    path = Path(path)
    base = Path(root) if root else path.parent
    text = read_text_limited(path, MAX_LIST_BYTES, what="list file", error=DataError)
    rows = list(csv.reader(text.splitlines()))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
        first_line = 2
    else:
        first_line = 1
    raw: List[Tuple[Path, str, int]] = []
    for n, row in enumerate(rows, start=first_line):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{n}: expected 'path,label', found {','.join(row)!r}")
        p = Path(row[0].strip())
        raw.append((p if p.is_absolute() else base / p, row[1].strip(), n))
    if not raw:
        raise DataError(f"{path}: no 'path,label' rows")
    all_int = all(lab.lstrip("-").isdigit() for _, lab, _ in raw)
    if all_int and classes is None:
        top = max(int(lab) for _, lab, _ in raw)
        names = [str(i) for i in range(top + 1)]
    else:
        names = list(classes) if classes is not None else sorted({lab for _, lab, _ in raw})
    index = {c: i for i, c in enumerate(names)}
    entries: List[Entry] = []
    for p, lab, n in raw:
        if all_int and lab not in index:
            i = int(lab)
            if not 0 <= i < len(names):
                raise DataError(f"{path}:{n}: label {i} out of range (0..{len(names) - 1})")
            entries.append((p, i))
        elif lab in index:
            entries.append((p, index[lab]))
        else:
            raise DataError(f"{path}:{n}: label {lab!r} is not a known class "
                            f"({names[:10]}{' ...' if len(names) > 10 else ''})")
    return entries, names


def read_ssv2_list(path: str | os.PathLike, root: str | os.PathLike,
                   label_map: Optional[str | os.PathLike] = None,
                   classes: Optional[Sequence[str]] = None, suffix: str = ".webm") -> Tuple[List[Entry], List[str]]:
    """A Something-Something v2 JSON list -> entries and class names."""
    path = Path(path)
    items = read_json_limited(path, MAX_LIST_BYTES, what="list file", error=DataError)
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of {{'id', 'template'}} objects")
    if label_map:
        mapping = read_json_limited(label_map, MAX_LIST_BYTES, what="label map", error=DataError)
        if not isinstance(mapping, dict):
            raise DataError(f"{label_map}: expected a JSON object {{class name: index}}")
        try:
            names = [n for n, _ in sorted(mapping.items(), key=lambda kv: int(kv[1]))]
        except (TypeError, ValueError):
            raise DataError(f"{label_map}: expected integer indices {{class name: index}}") from None
    elif classes is not None:
        names = list(classes)
    else:
        names = sorted({_ssv2_class(it, path, i) for i, it in enumerate(items)})
    index = {c: i for i, c in enumerate(names)}
    entries: List[Entry] = []
    for i, it in enumerate(items):
        name = _ssv2_class(it, path, i)
        if name not in index:
            raise DataError(f"{path}: item {i} (id {it.get('id')!r}): class {name!r} is not in the "
                            "label map")
        entries.append((Path(root) / f"{it['id']}{suffix}", index[name]))
    return entries, names


def _ssv2_class(item: Any, path: Path, i: int) -> str:
    if not isinstance(item, dict) or "id" not in item or not ("template" in item or "label" in item):
        raise DataError(f"{path}: item {i}: expected an object with 'id' and 'template'")
    return str(item.get("template") or item["label"]).replace("[", "").replace("]", "")


def split_entries(entries: Sequence[Entry], val_fraction: float, seed: int = 0) -> Tuple[List[Entry], List[Entry]]:
    """A deterministic train/val split by a hash of each path (stable as files are added)."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction: expected a number in (0, 1), found {val_fraction!r}")
    train, val = [], []
    for p, lab in entries:
        h = int.from_bytes(hashlib.sha256(f"{seed}/{p.name}".encode()).digest()[:8], "little")
        (val if (h / 2 ** 64) < val_fraction else train).append((p, lab))
    if not train or not val:
        raise DataError(f"cannot split {len(entries)} videos into train/val with val_fraction="
                        f"{val_fraction}; add videos or provide train/ and val/ folders")
    return train, val


# ---- the dataset ---------------------------------------------------------------------

class VideoClipDataset(torch.utils.data.Dataset):
    """Clips ``(C, T, H, W)`` from a list of videos, with the shared sampling and transforms."""

    def __init__(self, entries: Sequence[Entry], classes: Sequence[str], *, frames: int, size: int,
                 frame_stride: int = 2, train: bool = False, hflip: bool = False,
                 short_side_range: Optional[Tuple[int, int]] = None,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 seed: int = 0, probe: bool = True, name: str = "dataset"):
        from ..video.sampling import SamplingConfig
        from ..video.transforms import EvalTransform, TrainTransform

        self.classes = list(classes)
        self.sampling = SamplingConfig(num_frames=frames, frame_stride=frame_stride)
        self.frame_stride = frame_stride
        self.size, self.train, self.seed, self.name = size, train, seed, name
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = (TrainTransform((size, size), mean=self.mean, std=self.std,
                                         short_side_range=short_side_range, flip=hflip)
                          if train else EvalTransform((size, size), mean=self.mean, std=self.std))
        self.skipped: List[Tuple[str, str]] = []
        self.runtime_failures = 0
        self._epoch = 0
        entries = list(entries)
        if probe:
            entries = self._probe(entries)
        if not entries:
            raise DataError(f"{name}: no readable videos (skipped {len(self.skipped)}: "
                            f"{self.skipped[:3]})")
        self.entries = entries

    def _probe(self, entries: List[Entry]) -> List[Entry]:
        from ..video.decode import VideoReader

        good = []
        for p, lab in entries:
            try:
                with VideoReader(p):
                    pass
            except VideoError as exc:
                self.skipped.append((str(p), str(exc)))
                continue
            good.append((p, lab))
        if self.skipped:
            warnings.warn(f"{self.name}: skipped {len(self.skipped)} unreadable video(s) of "
                          f"{len(entries)}, e.g. {self.skipped[0][1]}", stacklevel=3)
        return good

    def __len__(self) -> int:
        return len(self.entries)

    def label(self, index: int) -> int:
        return self.entries[index][1]

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def report(self) -> Dict[str, Any]:
        return {"videos": len(self.entries), "skipped_at_probe": len(self.skipped),
                "skipped": self.skipped[:20], "failed_while_loading": self.runtime_failures}

    def _frames(self, path: Path, indices_fn) -> Any:
        """Decode only the frames ``indices_fn(num_frames)`` asks for (one pass)."""
        from ..video.decode import VideoReader

        reader = VideoReader(path)
        try:
            n = reader.info.num_frames
            if not n:  # no frame count in the header: count by decoding, then reopen
                n = len(reader.scan())
                reader.close()
                reader = VideoReader(path)
            idx = indices_fn(n)
            wanted = sorted(set(int(i) for i in idx.reshape(-1)))
            frames, _ = reader.read(wanted)
        finally:
            reader.close()
        return frames, idx, {v: k for k, v in enumerate(wanted)}

    def __getitem__(self, index: int):
        from ..video.sampling import center_clip_indices, random_clip_indices

        path, label = self.entries[index]
        if self.train:
            g = (self.seed * 1_000_003 + self._epoch) * 10_000_019 + index
            pick = lambda n: random_clip_indices(n, self.sampling, g)  # noqa: E731
        else:
            g = None
            pick = lambda n: center_clip_indices(n, self.sampling)  # noqa: E731
        try:
            frames, idx, pos = self._frames(path, pick)
        except VideoError as exc:
            self.runtime_failures += 1
            warnings.warn(f"{self.name}: skipping unreadable video: {exc}")
            return None
        clip = frames[[pos[int(i)] for i in idx]]
        x = self.transform(clip, g + 1) if self.train else self.transform(clip)
        return torch.from_numpy(x), label

    def views(self, index: int, temporal: int = 1, spatial: int = 1) -> Optional[torch.Tensor]:
        """``temporal x spatial`` views of one video, shaped (V, C, T, H, W) (None if unreadable)."""
        from ..video.sampling import multi_view_indices
        from ..video.transforms import MultiCropTransform

        path, _ = self.entries[index]
        try:
            frames, idx, pos = self._frames(path, lambda n: multi_view_indices(n, self.sampling, temporal))
        except VideoError as exc:
            self.runtime_failures += 1
            warnings.warn(f"{self.name}: skipping unreadable video: {exc}")
            return None
        crops = MultiCropTransform((self.size, self.size), mean=self.mean, std=self.std, num_crops=spatial)
        out = [crops(frames[[pos[int(i)] for i in row]]) for row in idx]
        return torch.from_numpy(np.concatenate(out))

    @staticmethod
    def collate(batch):
        return collate_skip_none(batch)


def collate_skip_none(batch):
    """Default collation without the samples a dataset could not read (None)."""
    kept = [b for b in batch if b is not None]
    if not kept:
        raise DataError(f"a whole batch of {len(batch)} videos was unreadable; check the dataset "
                        "(see the warnings above)")
    return torch.utils.data.default_collate(kept)


# ---- from a TrainConfig ----------------------------------------------------------------

def build_video_datasets(cfg, frames: int, size: int):
    """(train, val) VideoClipDatasets for ``cfg.data`` in folder / csv / ssv2."""
    root = Path(cfg.data_root) if cfg.data_root else None
    if cfg.data == "folder":
        if root is None:
            raise DataError("data='folder' needs data_root (ROOT/<class>/<video>, or ROOT/train "
                            "and ROOT/val with class folders inside)")
        if (root / "train").is_dir() and (root / "val").is_dir():
            train_entries, classes = scan_folder(root / "train")
            val_entries, _ = scan_folder(root / "val", classes)
        else:
            entries, classes = scan_folder(root)
            train_entries, val_entries = split_entries(entries, cfg.val_fraction, cfg.data_seed)
    elif cfg.data == "csv":
        if not cfg.train_list or not cfg.val_list:
            raise DataError("data='csv' needs train_list and val_list ('path,label' files)")
        train_entries, classes = read_csv_list(cfg.train_list, root)
        val_entries, _ = read_csv_list(cfg.val_list, root, classes)
    elif cfg.data == "ssv2":
        if not cfg.train_list or not cfg.val_list or root is None:
            raise DataError("data='ssv2' needs train_list, val_list (the JSON lists) and data_root "
                            "(the folder of <id>.webm videos)")
        train_entries, classes = read_ssv2_list(cfg.train_list, root, cfg.label_map)
        val_entries, _ = read_ssv2_list(cfg.val_list, root, cfg.label_map, classes)
    else:
        raise DataError(f"data: unknown dataset kind {cfg.data!r}")
    scale = None
    if cfg.scale_min or cfg.scale_max:
        scale = (cfg.scale_min or size, cfg.scale_max or max(cfg.scale_min or size, size))
    common = dict(frames=frames, size=size, frame_stride=cfg.frame_stride, seed=cfg.data_seed)
    train = VideoClipDataset(train_entries, classes, train=True, hflip=cfg.hflip,
                             short_side_range=scale, name="train", **common)
    val = VideoClipDataset(val_entries, classes, train=False, name="val", **common)
    return train, val
