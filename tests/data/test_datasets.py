"""Video datasets: folder / CSV / SSv2 lists, augmentation switches, unreadable videos."""
from __future__ import annotations

import json

import pytest
import torch

from e3d_zoo.data.datasets import (VideoClipDataset, build_video_datasets, collate_skip_none, read_csv_list,
                                   read_ssv2_list, scan_folder, split_entries)
from e3d_zoo.data.synthetic import CLASSES, MotionConfig, write_videos
from e3d_zoo.errors import DataError
from e3d_zoo.train import TrainConfig


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_videos(root / "train", clips_per_class=1, seed=0, split="train", config=MotionConfig(frames=8, size=32))
    write_videos(root / "val", clips_per_class=1, seed=0, split="val", config=MotionConfig(frames=8, size=32))
    return root


def test_folder_dataset_yields_normalised_clips_with_labels(video_root):
    entries, classes = scan_folder(video_root / "train")
    assert classes == sorted(CLASSES) and len(entries) == len(CLASSES)
    ds = VideoClipDataset(entries, classes, frames=4, size=32, frame_stride=2, train=False)
    x, y = ds[0]
    assert x.shape == (3, 4, 32, 32) and x.dtype == torch.float32
    assert classes[y] == entries[0][0].parent.name
    assert -3 < float(x.mean()) < 3  # normalised, not 0..255


def test_training_augmentation_is_seeded_and_flip_can_be_switched_off(video_root):
    entries, classes = scan_folder(video_root / "train")
    kw = dict(frames=4, size=24, frame_stride=1, train=True, short_side_range=(24, 32))
    ds = VideoClipDataset(entries, classes, hflip=False, **kw)
    a1, _ = ds[1]
    a2, _ = ds[1]
    assert torch.equal(a1, a2)  # same epoch and index: same crop
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a1)  # a new epoch draws a new crop
    assert ds.transform.flip is False
    flipping = VideoClipDataset(entries, classes, hflip=True, **kw)
    assert flipping.transform.flip is True


def test_multi_view_testing_gives_temporal_times_spatial_views(video_root):
    entries, classes = scan_folder(video_root / "val")
    ds = VideoClipDataset(entries, classes, frames=4, size=32, frame_stride=1)
    v = ds.views(0, temporal=2, spatial=3)
    assert v.shape == (6, 3, 4, 32, 32)


def test_unreadable_videos_are_skipped_counted_and_reported(video_root, tmp_path):
    entries, classes = scan_folder(video_root / "train")
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00\x01 not a video" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        ds = VideoClipDataset(entries + [(garbage, 0), (empty, 1)], classes, frames=4, size=32)
    assert len(ds) == len(entries)
    report = ds.report()
    assert report["skipped_at_probe"] == 2 and {p for p, _ in report["skipped"]} == {str(garbage), str(empty)}
    # a file that breaks after the probe is dropped from its batch and counted
    late = VideoClipDataset(entries[:2], classes, frames=4, size=32)
    late.entries.append((garbage, 0))
    with pytest.warns(UserWarning, match="skipping unreadable video"):
        batch = collate_skip_none([late[0], late[2], late[1]])
    assert batch[0].shape[0] == 2 and late.report()["failed_while_loading"] == 1


def test_csv_lists_take_class_names_or_indices_and_name_the_bad_line(tmp_path, video_root):
    lst = tmp_path / "train.csv"
    lst.write_text("path,label\n" + "\n".join(
        f"{video_root}/train/{c}/train_{i:05d}.mp4,{c}" for i, c in enumerate(CLASSES)) + "\n")
    entries, classes = read_csv_list(lst)
    assert classes == sorted(CLASSES) and len(entries) == 8
    assert classes[entries[0][1]] == CLASSES[0]
    ints = tmp_path / "ints.csv"
    ints.write_text("a.mp4,0\nb.mp4,2\n")
    entries, classes = read_csv_list(ints, root=tmp_path)
    assert classes == ["0", "1", "2"] and entries[1] == (tmp_path / "b.mp4", 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nok.mp4,x\nmissing_label.mp4\n")
    with pytest.raises(DataError, match=r"bad.csv:3: expected 'path,label'"):
        read_csv_list(bad)
    with pytest.raises(DataError, match=r"ints.csv:2: label 'y' is not a known class"):
        ints.write_text("a.mp4,x\nb.mp4,y\n")
        read_csv_list(ints, classes=["x"])


def test_ssv2_json_lists_use_the_label_map(tmp_path):
    items = [{"id": "1", "template": "Pushing [something] from left to right", "placeholders": ["cup"]},
             {"id": "2", "template": "Pushing [something] from right to left", "placeholders": ["pen"]}]
    (tmp_path / "train.json").write_text(json.dumps(items))
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something from right to left": "0",
                                                      "Pushing something from left to right": "1"}))
    entries, classes = read_ssv2_list(tmp_path / "train.json", tmp_path / "videos", tmp_path / "labels.json")
    assert classes == ["Pushing something from right to left", "Pushing something from left to right"]
    assert entries == [(tmp_path / "videos" / "1.webm", 1), (tmp_path / "videos" / "2.webm", 0)]
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "3", "template": "Spinning [something]"}]))
    with pytest.raises(DataError, match="not in the label map"):
        read_ssv2_list(tmp_path / "bad.json", tmp_path, tmp_path / "labels.json")


def test_split_is_deterministic_and_build_from_config(video_root, tmp_path):
    entries, _ = scan_folder(video_root / "train")
    a = split_entries(entries * 4, 0.25, seed=1)
    assert a == split_entries(entries * 4, 0.25, seed=1)
    cfg = TrainConfig(data="folder", data_root=str(video_root), hflip=False, frame_stride=1)
    train, val = build_video_datasets(cfg, frames=4, size=32)
    assert train.classes == val.classes == sorted(CLASSES)
    assert train.train and not val.train and train.transform.flip is False
    with pytest.raises(DataError, match="data_root"):
        build_video_datasets(TrainConfig(data="folder"), 4, 32)
