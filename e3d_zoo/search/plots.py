"""PNG plots of a search: best score vs candidates, final population's score vs cost."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..atomic import atomic_path
from ..errors import require


def _pyplot():
    matplotlib = require("matplotlib", "plot", "the search plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_progress(result, path: Path) -> Path:
    """Best score vs candidates: the whole climb, and a zoom on the last score unit."""
    plt = _pyplot()
    xs = [n for n, _ in result.history]
    ys = [s for _, s in result.history]
    label = f"best {result.spec.provenance.get('score_name', 'score')}"
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(10, 4.0), dpi=100)
    ax.step(xs, ys, where="post", color="tab:blue")
    ax.set_xscale("symlog", linthresh=100)  # the climb is early; the tail is long
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel(label)
    ax.set_title("whole search")
    # The early climb spans tens of units; the last improvements are fractions of one.
    final = ys[-1]
    first = next(i for i, y in enumerate(ys) if y >= final - 1.0)
    zx, zy = xs[first:], ys[first:]
    zoom.step(zx, zy, where="post", color="tab:blue")
    zoom.set_xlim(zx[0], max(xs[-1], zx[0] + 1))
    zoom.set_ylim(final - 1.0, final + 0.1)
    from matplotlib.ticker import EngFormatter, MaxNLocator

    zoom.xaxis.set_major_formatter(EngFormatter())
    zoom.xaxis.set_major_locator(MaxNLocator(6))
    zoom.set_xlabel("candidates evaluated")
    zoom.set_title("last score unit")
    for a in (ax, zoom):
        a.grid(alpha=0.3)
    fig.suptitle(f"e3d-search: best score {result.best_score:.4f} after "
                 f"{result.candidates:,} candidates")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def plot_population(result, path: Path, cost: str = "tinynas_flops",
                    budget: Optional[float] = None) -> Path:
    plt = _pyplot()
    xs = [getattr(m, cost) for m in result.population]
    ys = [m.score for m in result.population]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.scatter(xs, ys, s=10, alpha=0.6, label="final population")
    best = result.population[0]
    ax.scatter([getattr(best, cost)], [best.score], s=60, marker="*", color="tab:red", label="best")
    if budget is not None:
        ax.axvline(budget, color="gray", linestyle="--", label=f"budget {budget:.4g}")
    ax.set_xlabel(cost)
    ax.set_ylabel(result.spec.provenance.get("score_name", "score"))
    ax.set_title("final population: score vs cost")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
