"""The synthetic-benchmark result: a small E3D reaches >= 95% top-1, the same net at T=1 cannot.

    python -m e3d_eval.train_synthetic                 # both runs, resumable
    python -m e3d_eval.train_synthetic --frames 8      # only the T=8 run

Trains ``configs/synthetic_motion.toml`` twice, at its clip length (T=8) and at T=1
(the clip's middle frame only, which by construction carries no label information),
then writes ``results.json`` and per-class accuracy under ``--out``, and the learning
curves (PNG + CSV) under ``--docs``. Each run checkpoints every epoch; running the
command again resumes where it stopped and skips finished runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from e3d_zoo.atomic import atomic_path, atomic_write_text
from e3d_zoo.cli._common import add_json_flag, print_json, run_cli

TARGET_TOP1 = 95.0


def per_class_top1(model_folder: Path, dataset) -> Dict[str, float]:
    from e3d_zoo.hub import from_pretrained

    model = from_pretrained(model_folder).eval()
    hits = torch.zeros(len(dataset.classes))
    counts = torch.zeros(len(dataset.classes))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64)
    with torch.no_grad():
        for x, y in loader:
            pred = model(x).argmax(1)
            counts += torch.bincount(y, minlength=len(counts)).float()
            hits += torch.bincount(y[pred == y], minlength=len(counts)).float()
    return {c: round(100 * float(h / max(n, 1)), 1) for c, h, n in zip(dataset.classes, hits, counts)}


def plot_both(runs: Dict[int, List[Dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for frames, history in sorted(runs.items(), reverse=True):
        epochs = [r["epoch"] for r in history]
        line, = ax.plot(epochs, [r["val_top1"] for r in history], marker="o", ms=3,
                        label=f"T={frames} held-out top-1")
        ax.plot(epochs, [r["train_top1"] for r in history], ls="--", color=line.get_color(),
                alpha=0.6, label=f"T={frames} train top-1")
    ax.axhline(TARGET_TOP1, color="gray", lw=0.8, ls=":", label="95% target")
    ax.axhline(100 / 8, color="gray", lw=0.8, ls="-.", label="chance (8 classes)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    ax.set_title("E3D (e3d_motion) on the synthetic motion benchmark")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def run(config: str, out: Path, docs: Optional[Path], frames_list: Sequence[int], fresh: bool,
        progress: bool) -> Dict[str, Any]:
    from e3d_zoo.data.synthetic import SyntheticMotion
    from e3d_zoo.train import TrainConfig, train

    results: Dict[str, Any] = {"config": config, "runs": {}}
    histories: Dict[int, List[Dict[str, Any]]] = {}
    for frames in frames_list:
        run_dir = out / f"t{frames}"
        if fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        cfg = TrainConfig.load(config, {"frames": frames, "output": str(run_dir)})
        load_before, t0 = _load(), time.time()
        summary = train(cfg, resume=True, progress=progress)
        history = json.loads(json.dumps(torch.load(run_dir / "last.pt", weights_only=True)["history"]))
        histories[frames] = history
        val = SyntheticMotion("val", cfg.val_clips, seed=cfg.data_seed, frames=frames, size=cfg.size)
        results["runs"][f"T={frames}"] = {
            "frames": frames, "size": cfg.size, "epochs": cfg.epochs,
            "train_clips": cfg.train_clips, "val_clips": cfg.val_clips,
            "final_val_top1": round(history[-1]["val_top1"], 2),
            "final_val_top5": round(history[-1]["val_top5"], 2),
            "best_val_top1": round(max(r["val_top1"] for r in history), 2),
            "train_seconds": round(sum(r["epoch_seconds"] for r in history), 1),
            "params": summary["params"],
            "per_class_val_top1": per_class_top1(run_dir / "model", val),
            "load_average_at_start": load_before, "load_average_at_end": _load(),
            "this_invocation_seconds": round(time.time() - t0, 1),
            "torch_threads": torch.get_num_threads(),
        }
    t8 = results["runs"].get("T=8")
    t1 = results["runs"].get("T=1")
    if t8:
        results["t8_reaches_target"] = t8["final_val_top1"] >= TARGET_TOP1
    if t1:
        results["t1_near_chance"] = t1["final_val_top1"] < 2 * 100 / 8
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        for frames in histories:
            shutil.copyfile(out / f"t{frames}" / "log.csv", docs / f"synthetic_t{frames}_log.csv")
        plot_both(histories, docs / "synthetic_curves.png")
        atomic_write_text(docs / "synthetic_results.json", json.dumps(results, indent=2) + "\n")
    return results


def markdown_table(results: Dict[str, Any]) -> str:
    rows = ["| run | clip | epochs | params | held-out top-1 | top-5 | train time (s) |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        rows.append(f"| {name} | {r['frames']}x{r['size']}x{r['size']} | {r['epochs']} | {r['params']:,} | "
                    f"{r['final_val_top1']:.2f}% | {r['final_val_top5']:.2f}% | {r['train_seconds']:.0f} |")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.train_synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/synthetic_motion.toml")
    p.add_argument("--out", default="runs/synthetic")
    p.add_argument("--docs", default="docs/training", help="where the curve PNG/CSV go ('' to skip)")
    p.add_argument("--frames", type=int, action="append", help="clip lengths to train (default: 8 and 1)")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs instead of resuming them")
    p.add_argument("--no-progress", action="store_true")
    add_json_flag(p)
    args = p.parse_args(argv)
    results = run(args.config, Path(args.out), Path(args.docs) if args.docs else None,
                  args.frames or [8, 1], args.fresh, progress=not args.no_progress)
    if args.json:
        print_json(results)
    else:
        print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="e3d_eval.train_synthetic"))
