"""Accuracy metrics for clip-level validation and the multi-view test."""
from typing import Dict, Sequence

import numpy as np
import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """Number of samples whose label is among the top-k scores, for each k (k capped at #classes)."""
    out = {}
    for k in ks:
        k_eff = min(k, scores.shape[1])
        top = scores.topk(k_eff, dim=1).indices
        out[k] = int((top == labels[:, None]).any(dim=1).sum())
    return out


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean over classes that have test videos of (correct / videos of that class)."""
    per_class = cm.sum(axis=1)
    present = per_class > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / per_class[present]).mean())
