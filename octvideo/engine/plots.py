"""PNG plots of a run: loss, learning rate, accuracy curves, and the confusion matrix."""
import os
from typing import List, Optional, Sequence

import numpy as np

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from .logger import read_metrics  # noqa: E402


def plot_training_curves(output_dir: str) -> List[str]:
    """``loss.png``, ``lr.png``, ``accuracy.png`` under ``OUTPUT_DIR/plots`` from metrics.jsonl."""
    records = read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    out_dir = os.path.join(output_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    if train:
        x = [r["epoch_float"] for r in train]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, [r["loss"] for r in train], label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
        ax.set_title("Training loss")
        ax.grid(alpha=0.3)
        save(fig, "loss.png")
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, [r["lr"] for r in train])
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_title("Learning rate")
        ax.grid(alpha=0.3)
        save(fig, "lr.png")
    if train or val:
        fig, ax = plt.subplots(figsize=(6, 4))
        if train:
            ax.plot([r["epoch_float"] for r in train], [r["top1"] for r in train], label="train top-1 (batch)", alpha=0.6)
        if val:
            ax.plot([r["epoch"] for r in val], [r["top1"] for r in val], "o-", label="val top-1 (clip)")
            ax.plot([r["epoch"] for r in val], [r["top5"] for r in val], "s--", label="val top-5 (clip)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend()
        ax.grid(alpha=0.3)
        ax.set_title("Accuracy")
        save(fig, "accuracy.png")
    return written


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str, max_classes: int = 30) -> str:
    """Confusion matrix (rows: true, columns: predicted, row-normalised).

    With more than ``max_classes`` classes, show the classes involved in the most frequent
    confusions instead of an unreadable 400x400 grid.
    """
    cm = np.asarray(cm)
    idx = np.arange(len(class_names))
    title = "Confusion matrix (row-normalised)"
    if len(idx) > max_classes:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(off, axis=None)[::-1]
        chosen: List[int] = []
        for flat in order:
            i, j = np.unravel_index(flat, off.shape)
            if off[i, j] == 0:
                break
            for c in (i, j):
                if c not in chosen:
                    chosen.append(int(c))
            if len(chosen) >= max_classes:
                break
        if not chosen:  # perfect predictions: show the first classes
            chosen = list(range(max_classes))
        idx = np.array(sorted(chosen[:max_classes]))
        title = f"Top confusions ({len(idx)} of {len(class_names)} classes, row-normalised)"
    sub = cm[np.ix_(idx, idx)].astype(float)
    rows = cm[idx].sum(axis=1, keepdims=True).astype(float)
    norm = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    n = len(idx)
    size = max(4.0, 0.35 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [class_names[i] for i in idx]
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if cm[idx[i], idx[j]]:
                    ax.text(j, i, int(cm[idx[i], idx[j]]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
