"""e3d-train's outputs: reproducible bytes, paths relative to the config, one run per output."""
from __future__ import annotations

import math
import stat

import pytest
import torch

from e3d_runtime.errors import OutputInUseError, WeightsError
from e3d_zoo.train import TrainConfig, load_checkpoint, save_checkpoint, train
from testkit import current_umask, sha256_of, start_holder


@pytest.fixture
def tiny_cfg(tiny_arch_file, tmp_path):
    return TrainConfig(model=str(tiny_arch_file), frames=4, size=32, train_clips=16, val_clips=8,
                       batch_size=8, epochs=1, output=str(tmp_path / "run"), plot=False)


def test_identical_runs_write_identical_weights_with_usual_permissions(tiny_cfg, tmp_path):
    outs = []
    for name in ("a", "b"):
        cfg = tiny_cfg.updated({"output": str(tmp_path / name)}, "test")
        train(cfg, progress=False)
        outs.append(tmp_path / name)
    assert sha256_of(outs[0] / "model" / "model.safetensors") == sha256_of(outs[1] / "model" / "model.safetensors")
    mask = current_umask()
    for rel in ("model/model.safetensors", "model/config.json", "last.pt", "summary.json", "log.csv"):
        assert stat.S_IMODE((outs[0] / rel).stat().st_mode) == 0o666 & ~mask, rel


def test_relative_paths_in_a_config_file_resolve_against_it(tmp_path, tiny_arch_file, monkeypatch):
    conf_dir = tmp_path / "project" / "configs"
    (conf_dir / "archs").mkdir(parents=True)
    (conf_dir / "archs" / "net.json").write_text(tiny_arch_file.read_text())
    (conf_dir / "c.toml").write_text(
        '[model]\nmodel = "archs/net.json"\ninit = "hf-hub:org/name"\n'
        '[data]\ndata = "folder"\ndata_root = "../videos"\nlabel_map = "labels.json"\n'
        '[train]\noutput = "runs/x"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = TrainConfig.load(conf_dir / "c.toml", {"train_list": "lists/train.csv"})
    assert cfg.model == str(conf_dir / "archs" / "net.json")
    assert cfg.data_root == str(tmp_path / "project" / "videos")
    assert cfg.label_map == str(conf_dir / "labels.json")
    assert cfg.init == "hf-hub:org/name"       # a Hub id, not a path
    assert cfg.output == "runs/x"              # outputs: relative to where it runs
    assert cfg.train_list == "lists/train.csv"  # the command line: relative to the shell
    registered = tmp_path / "r.toml"
    registered.write_text('model = "e3d_s"\n')
    assert TrainConfig.load(registered).model == "e3d_s"  # a name, no such file beside it


def test_a_second_run_on_the_same_output_is_refused_with_the_first_ones_pid(tiny_cfg):
    holder = start_holder("lock", tiny_cfg.output)  # returns once it holds the lock
    try:
        with pytest.raises(OutputInUseError, match=f"in use by pid {holder.pid}"):
            train(tiny_cfg, progress=False)
    finally:
        holder.communicate("\n", timeout=60)
    train(tiny_cfg, progress=False)  # free again


def test_leftovers_of_a_killed_save_are_removed_and_nan_checkpoints_refused(tiny_cfg):
    from pathlib import Path

    out = Path(tiny_cfg.output)
    train(tiny_cfg, progress=False)
    stale = out / ".last.tmp.k1ll3d00.pt"  # what a SIGKILL inside torch.save leaves
    stale.write_bytes(b"half a checkpoint")
    state = load_checkpoint(out / "last.pt")
    state["model"] = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    save_checkpoint(out / "last.pt", state)
    with pytest.raises(WeightsError, match="last.pt: non-finite weights"):
        train(tiny_cfg.updated({"epochs": 2}, "test"), resume=True, progress=False)
    assert not stale.exists()
