"""e3d-train: configs, a short real run, resume, checkpoints, the CLI, DDP with 2 processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e3d_zoo.errors import ConfigError, WeightsError
from e3d_zoo.train import TrainConfig, load_checkpoint, train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_cfg(tiny_arch_file, tmp_path):
    """A run of seconds: the conftest tiny net on 4 x 32 x 32 synthetic clips."""
    return TrainConfig(model=str(tiny_arch_file), frames=4, size=32, train_clips=32, val_clips=16,
                       batch_size=8, epochs=2, lr=3e-3, warmup_epochs=0.5, output=str(tmp_path / "run"),
                       plot=False)


def test_config_file_sections_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nmodel = "e3d_s"\n[optim]\nlr = 0.01\noptimizer = "sgd"\n[train]\nepochs = 3\n')
    cfg = TrainConfig.load(path, {"epochs": "5", "hflip": "false", "clip_grad": "none"})
    assert (cfg.model, cfg.lr, cfg.optimizer, cfg.epochs, cfg.hflip, cfg.clip_grad) == \
        ("e3d_s", 0.01, "sgd", 5, False, None)
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        TrainConfig.load(path, {"learning_rate": 1})
    with pytest.raises(ConfigError, match="epochs: expected a value of type int, found 'many'"):
        TrainConfig.load(path, {"epochs": "many"})
    with pytest.raises(ConfigError, match="optimizer: expected 'adamw' or 'sgd'"):
        TrainConfig.load(path, {"optimizer": "lion"})
    path.write_text("[optim]\nlr = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        TrainConfig.load(path)


def test_a_short_run_learns_and_writes_checkpoint_log_and_hub_folder(tiny_cfg):
    from e3d_zoo.hub import from_pretrained

    cfg = tiny_cfg.updated({"epochs": 12, "train_clips": 16, "val_clips": 8, "batch_size": 16, "lr": 0.01,
                            "weight_decay": 0.0, "label_smoothing": 0.0, "warmup_epochs": 0}, "test")
    summary = train(cfg, progress=False)
    out = Path(cfg.output)
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 1 + 12
    history = load_checkpoint(out / "last.pt")["history"]
    # memorising 16 clips: the loss must fall well below chance (ln 8 = 2.08)
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"]
    model = from_pretrained(out / "model").eval()
    assert model.pretrained_cfg["label_names"][0] == "move_left"
    assert model.pretrained_cfg["frame_stride"] == 1  # the synthetic clips are consecutive frames
    assert "val_top1" in (out / "model" / "README.md").read_text()
    assert summary["final"]["epoch"] == 12 and summary["replicas_in_sync"]


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    import e3d_zoo.train as engine

    straight = tiny_cfg.updated({"output": str(tmp_path / "straight"), "save_pretrained": False}, "test")
    train(straight, progress=False)
    cut = straight.updated({"output": str(tmp_path / "cut")}, "test")
    real_save = engine.save_checkpoint

    def save_then_interrupt(path, state):  # Ctrl-C right after epoch 1's checkpoint
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cut, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 0
    resumed = train(cut, resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert b["epoch"] == 1 and [r["epoch"] for r in b["history"]] == [1, 2]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert resumed["final"]["val_top1"] == a["history"][-1]["val_top1"]


def test_resume_refuses_a_checkpoint_trained_differently(tiny_cfg):
    train(tiny_cfg.updated({"epochs": 1, "save_pretrained": False}, "test"), progress=False)
    with pytest.raises(ConfigError, match="cannot resume.*batch_size: 8 -> 4"):
        train(tiny_cfg.updated({"batch_size": 4}, "test"), resume=True, progress=False)


def test_sgd_ema_bf16_multiview_and_steps_cap(tiny_cfg):
    cfg = tiny_cfg.updated({"optimizer": "sgd", "ema_decay": 0.9, "epochs": 1, "max_steps_per_epoch": 2,
                            "eval_temporal_views": 2, "eval_spatial_views": 1, "log": "csv",
                            "amp": "bf16"}, "test")  # bf16 autocast: the CPU's mixed precision
    summary = train(cfg, progress=False)
    state = load_checkpoint(Path(cfg.output) / "last.pt")
    assert state["ema"] and set(state["ema"]) == set(state["model"])
    assert not torch.equal(state["ema"]["classifier.weight"], state["model"]["classifier.weight"])
    assert 0 <= summary["final"]["val_top1"] <= 100


def test_trains_on_a_folder_of_real_videos_and_reports_unreadable_ones(tiny_cfg, tmp_path):
    from e3d_zoo.data.synthetic import MotionConfig, write_videos

    root = tmp_path / "videos"
    write_videos(root / "train", clips_per_class=1, split="train", config=MotionConfig(frames=8, size=32))
    write_videos(root / "val", clips_per_class=1, split="val", config=MotionConfig(frames=8, size=32))
    (root / "train" / "move_left" / "broken.mp4").write_bytes(b"not a video" * 50)
    cfg = tiny_cfg.updated({"data": "folder", "data_root": str(root), "frame_stride": 1, "epochs": 1,
                            "batch_size": 4, "scale_min": 32, "scale_max": 40,
                            "eval_spatial_views": 3}, "test")
    with pytest.warns(UserWarning, match="skipped 1 unreadable video"):
        summary = train(cfg, progress=False)
    assert summary["data"]["train"]["skipped_at_probe"] == 1
    assert summary["data"]["train"]["skipped"][0][0].endswith("broken.mp4")
    assert summary["data"]["train"]["videos"] == 8 and summary["final"]["val_samples"] == 8
    assert summary["classes"] == sorted(summary["classes"]) and len(summary["classes"]) == 8


def test_checkpoints_are_read_with_weights_only(tmp_path):
    class Payload:  # any class: unpickling it would run code
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": Payload()}, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_cli_trains_with_overrides_and_fails_cleanly(tiny_arch_file, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "e3d_zoo.cli.train", "--model", str(tiny_arch_file), "--frames", "4",
           "--size", "32", "--epochs", "1", "--output", str(out), "--set", "train_clips=16",
           "--set", "val_clips=8", "--batch-size", "8", "--set", "plot=false", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["epochs"] == 1 and (out / "model" / "model.safetensors").is_file()
    bad = subprocess.run(cmd[:3] + ["--set", "optimizer=lion"], capture_output=True, text=True,
                         env=_env(), cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "optimizer: expected 'adamw' or 'sgd'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_ddp_with_two_gloo_processes(tiny_arch_file, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "e3d_zoo.cli.train", "--model", str(tiny_arch_file), "--frames", "4",
           "--size", "32", "--epochs", "1", "--output", str(out), "--set", "train_clips=32",
           "--set", "val_clips=10", "--batch-size", "4", "--set", "plot=false", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["world_size"] == 2
    assert summary["replicas_in_sync"] is True
    # every rank took its own 16-clip shard in 16 / 4 = 4 steps
    state = load_checkpoint(out / "last.pt")
    assert state["history"][0]["epoch"] == 1
    assert state["history"][0]["val_samples"] == 10  # the sharded evaluation saw every clip once
    assert state["optimizer"]["state"][0]["step"].item() == 4
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
