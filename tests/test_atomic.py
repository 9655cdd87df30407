"""Atomic writes: all or nothing, and the usual file modes."""
from __future__ import annotations

import os
import stat

import pytest

from e3d_zoo.atomic import atomic_dir, atomic_path, atomic_write_text


def test_atomic_write_replaces_whole_file_with_umask_mode(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_path_failure_leaves_old_content(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.bin"]


def test_atomic_dir_is_all_or_nothing(tmp_path):
    out = tmp_path / "exports"
    with atomic_dir(out) as d:
        (d / "model.onnx").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as d:
            (d / "model.onnx").write_text("v2-partial")
            raise KeyboardInterrupt
    assert (out / "model.onnx").read_text() == "v1"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["exports"]
    with atomic_dir(out) as d:
        (d / "model.xml").write_text("v3")
    assert sorted(x.name for x in out.iterdir()) == ["model.xml"]
