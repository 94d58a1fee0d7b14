"""Training curves as PNG (headless matplotlib): per-task losses, validation metrics, task weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _grid(n: int) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat


def _mark(ax: Any, best_epoch: int | None) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)


def plot_history(history: list[dict[str, Any]], out_dir: Path, best_epoch: int | None = None) -> list[Path]:
    """Write losses.png, metrics.png and weights.png under ``out_dir`` (a dotted line marks the kept epoch)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    paths = []

    tasks = [t for t in history[0]["train_loss"] if t != "total"]
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        ax.plot(epochs, [h["train_loss"][task] for h in history], marker="o", ms=3, label="train")
        ax.plot(epochs, [h["valid_loss"][task] for h in history], marker="o", ms=3, label="validation")
        ax.set(title=f"{task} loss", xlabel="epoch")
        _mark(ax, best_epoch)
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "losses.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    metrics = list(history[0]["valid"])
    fig, axes = _grid(len(metrics))
    for ax, name in zip(axes, metrics, strict=False):
        ax.plot(epochs, [h["valid"][name] for h in history], marker="o", ms=3, color="tab:green")
        ax.set(title=f"validation {name}", xlabel="epoch")
        _mark(ax, best_epoch)
    fig.tight_layout()
    paths.append(out_dir / "metrics.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for task in history[0]["weights"]:
        ax.plot(epochs, [h["weights"][task] for h in history], marker="o", ms=3, label=task)
    ax.set(title="task weights w_t", xlabel="epoch")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "weights.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
