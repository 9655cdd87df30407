"""e3d-export's output folder: killed runs, interrupted swaps, two exports, folder sources."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from e3d_export.cli import main
from e3d_export.manifest import check_manifest
from e3d_zoo.hub import save_pretrained

from testkit import wait_for_file
from tiny_arch import tiny_model

_CLI = "import sys; from e3d_export.cli import main; sys.exit(main(sys.argv[1:]))"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if any(f".{k}." in p.name for k in ("staging", "ready", "old")))


def test_kill_9_at_random_points_never_leaves_a_partial_export(tmp_path, tiny_arch_file):
    out = tmp_path / "out"
    args = [str(tiny_arch_file), "--out", str(out), "--clips", "2", "--threads", "1", "--json"]
    assert main(args) == 0
    first = check_manifest(out)["files"]
    rng = random.Random(14)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _CLI, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        wait_for_file(tmp_path / ".out.lock.owner", proc, "the export's lock")
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in staging, verifying or swapping
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        # whatever the moment: `out` is a whole export (or, mid two-rename swap, restorable)
        assert main(["--check", str(out), "--json"]) == 0
        assert check_manifest(out)["files"].keys() == first.keys()
        assert _leftovers(tmp_path) == []  # --check deleted the killed run's staging


def test_check_finishes_a_swap_killed_between_its_two_renames(tmp_path, tiny_arch_file, capsys):
    out = tmp_path / "out"
    assert main([str(tiny_arch_file), "--out", str(out), "--no-verify", "--json"]) == 0
    capsys.readouterr()
    # The state a SIGKILL between rename(out, old) and rename(ready, out) leaves behind:
    shutil.copytree(out, tmp_path / ".out.ready.bbbbbbbb")
    os.replace(out, tmp_path / ".out.old.aaaaaaaa")
    assert main(["--check", str(out)]) == 0
    said = capsys.readouterr().out
    assert "folder swap was finished" in said and "files match manifest.json" in said
    assert _leftovers(tmp_path) == []
    check_manifest(out)


def test_a_second_export_to_one_out_is_refused_with_the_first_ones_pid(tmp_path, tiny_arch_file,
                                                                        capsys):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-c", _CLI, str(tiny_arch_file), "--out", str(out),
                              "--clips", "1", "--benchmark", "100000", "--threads", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(tmp_path / ".out.lock.owner", first, "the first export's lock")
        rc = main([str(tiny_arch_file), "--out", str(out), "--no-verify"])
        err = capsys.readouterr().err
        assert rc == 2 and f"in use by pid {first.pid}" in err and "Traceback" not in err
    finally:
        first.kill()
        first.wait(timeout=60)
    assert main([str(tiny_arch_file), "--out", str(out), "--no-verify"]) == 0  # free again
    assert _leftovers(tmp_path) == []


def test_a_save_pretrained_folder_exports_with_a_real_video_clip(tmp_path):
    av = pytest.importorskip("av")  # noqa: F841
    from e3d_runtime.video.writers import encode_video

    save_pretrained(tiny_model(num_classes=3), tmp_path / "model", label_names=["a", "b", "c"])
    rng = np.random.default_rng(0)
    encode_video(tmp_path / "clip.mp4", (rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                                         for _ in range(12)), fps=12)
    rc = main([str(tmp_path / "model"), "--video", str(tmp_path / "clip.mp4"), "--out",
               str(tmp_path / "exp"), "--clips", "1", "--json"])
    assert rc == 0
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["input"]["verification_clips"] == 2  # the random clip + the decoded one
    assert manifest["source"]["kind"] == "pretrained folder"
