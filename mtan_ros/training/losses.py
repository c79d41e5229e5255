"""Per-task training losses, as the MTAN paper and its reference code define them.

* semantic: cross-entropy of the raw logits (= NLL of their log-softmax, which the
  reference applies inside its model) with ignore index ``-1``; any target outside
  ``[0, C)`` is treated as void too, matching the metrics;
* depth: L1 over pixels whose ground truth is non-zero (0 marks "no depth");
* normal: 1 - mean cosine between predicted and true unit normals over pixels
  whose true normal is not all zero.

Losses are computed in float32 even when the model ran under autocast, and a
batch without a single valid pixel contributes a zero loss (still connected to
the graph) instead of NaN, so one empty crop cannot poison the weights.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "semantic_loss", "depth_loss", "normal_loss", "task_losses", "LOSSES"]

IGNORE_INDEX = -1


def semantic_loss(logits: torch.Tensor, target: torch.Tensor,
                  class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of N×C×H×W logits against N×H×W class ids (void = -1).

    With ``class_weights`` (C values) it is the weighted mean: each pixel's loss
    times its class's weight, over the sum of those weights.
    """
    logits = logits.float()
    num_classes = logits.shape[1]
    target = target.long()
    void = (target < 0) | (target >= num_classes)
    target = torch.where(void, torch.full_like(target, IGNORE_INDEX), target)
    # Sum / count instead of reduction="mean": identical when pixels are labelled,
    # 0 instead of NaN when none is, and no device sync to find out which.
    if class_weights is None:
        total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
        return total / (~void).sum().clamp(min=1)
    weight = class_weights.to(device=logits.device, dtype=torch.float32)
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    norm = torch.where(void, torch.zeros((), device=weight.device), weight[target.clamp(min=0)]).sum()
    return total / norm.clamp(min=1e-12)


def _as_n1hw(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(1)
    if target.shape != pred.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match prediction {tuple(pred.shape)}")
    return target


def depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over pixels whose target is non-zero (N×1×H×W or N×H×W targets)."""
    pred = pred.float()
    target = _as_n1hw(pred, target.float())
    valid = (target != 0) & torch.isfinite(target)
    count = valid.sum()
    safe = torch.where(valid, target, torch.zeros_like(target))
    diff = torch.where(valid, (pred - safe).abs(), torch.zeros_like(pred))
    return diff.sum() / count.clamp(min=1)


def normal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity over pixels whose true normal (N×3×H×W) is not all zero."""
    pred = pred.float()
    target = target.float()
    if target.shape != pred.shape:
        raise ValueError(f"normal target shape {tuple(target.shape)} does not match prediction {tuple(pred.shape)}")
    valid = (target.abs().sum(1, keepdim=True) != 0).float()
    count = valid.sum()
    return 1.0 - (pred * target * valid).sum() / count.clamp(min=1)


LOSSES = {"semantic": semantic_loss, "depth": depth_loss, "normal": normal_loss}


def task_losses(outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
                class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One loss per task in ``outputs`` (not weighted across tasks); the ground truth is ``batch[task]``.

    ``class_weights`` weight the semantic loss's classes (see `class_balance`).

    The task name decides the loss (``semantic``, ``depth``, ``normal``), as it
    decides the model head.
    """
    losses = {}
    for task, pred in outputs.items():
        if task not in LOSSES:
            raise KeyError(f"no loss for task {task!r}; known tasks: {sorted(LOSSES)}")
        if task not in batch:
            raise KeyError(f"the batch has no ground truth for task {task!r} (keys: {sorted(batch)})")
        if task == "semantic":
            losses[task] = semantic_loss(pred, batch[task], class_weights)
        else:
            losses[task] = LOSSES[task](pred, batch[task])
    return losses
