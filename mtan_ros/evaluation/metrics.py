"""Evaluation metrics with the reference implementation's definitions.

Semantic segmentation
    One confusion matrix is accumulated over every pixel of the whole split
    (rows = ground truth, columns = prediction); ground-truth labels outside
    ``[0, C)`` (``-1`` = void, ``255``) are left out. From it:

    * IoU of class c = TP / (TP + FP + FN) = diag / (row sum + column sum - diag);
    * mIoU = mean IoU over the classes that occur in the ground truth or in the
      predictions of the split. A class absent from both has IoU 0 / 0; the
      reference (``ConfMatrix.get_metrics`` in lorenmt/mtan ``im2im_pred/utils.py``)
      would then return NaN for the whole mIoU, here such a class is left out
      of the mean (NaN in ``iou_per_class``). Whenever the reference's value is a
      number the two agree;
    * pixel accuracy = trace / sum (correct pixels over labelled pixels).

    This is the whole-split definition that the reference code uses today. The
    paper's table was computed the earlier way, which ``PerImageSegmentation``
    reproduces: per image, IoU of each class present in that image's ground truth
    or prediction (over labelled pixels), their mean, then the mean over images;
    pixel accuracy likewise per image, then averaged. The two definitions give
    different numbers on the same predictions (the reference authors report the
    whole-split mIoU reading several points higher on Cityscapes), so compare
    numbers of the same definition only.

Depth
    Valid pixels are those whose ground truth is non-zero (and finite);
    absolute error = sum |p - g| / N_valid, relative error = sum(|p - g| / g) / N_valid,
    both in the units the depth is stored in. ``DepthErrors`` sums over the whole
    split, so its numbers are pixel-weighted over all valid pixels of the split;
    the reference instead averages the per-batch values over batches, which
    equals the whole-split value when every batch holds the same number of
    valid pixels and otherwise differs slightly (and depends on the batch size).
    The whole-split form is what makes a multi-process evaluation give exactly
    the single-process numbers.

All accumulators keep plain tensors (``.mat``, ``.sums``) so that they can be
merged (``merge``) or summed across processes (``all_reduce``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "PerImageSegmentation", "DepthErrors", "depth_errors", "normal_errors", "as_tensor"]


def as_tensor(value: Any) -> torch.Tensor:
    """A torch tensor view of a tensor or a numpy array (no copy where possible)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value)


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes when torch.distributed is running; otherwise unchanged."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class ConfusionMatrix:
    """Whole-split confusion matrix for semantic segmentation (see the module docstring).

    ``mat[t, p]`` counts pixels with ground truth ``t`` predicted as ``p``.
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.mat = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred_labels: Any, target: Any) -> None:
        """Add one batch: integer label maps of the same shape (any shape, tensors or numpy).

        Targets outside ``[0, C)`` are ignored; a prediction outside ``[0, C)`` on a
        labelled pixel is an error (it cannot be counted as any class).
        """
        pred = as_tensor(pred_labels)
        tgt = as_tensor(target)
        if pred.shape != tgt.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(tgt.shape)}")
        if pred.is_floating_point() or tgt.is_floating_point():
            raise TypeError("ConfusionMatrix.update takes integer label maps; use logits.argmax(1) for predictions")
        n = self.num_classes
        pred = pred.to(self.mat.device, torch.int64).reshape(-1)
        tgt = tgt.to(self.mat.device, torch.int64).reshape(-1)
        keep = (tgt >= 0) & (tgt < n)
        tgt = tgt[keep]
        pred = pred[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"predicted labels must lie in [0, {n}); got values from "
                             f"{int(pred.min())} to {int(pred.max())}")
        self.mat += torch.bincount(tgt * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix of the same size (e.g. from another shard) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over all processes of a torch.distributed job (no-op otherwise)."""
        _all_reduce_sum(self.mat)
        return self

    @property
    def total(self) -> int:
        """Number of labelled pixels counted so far."""
        return int(self.mat.sum())

    def iou_per_class(self) -> torch.Tensor:
        """IoU of each class (float64, CPU); NaN for a class absent from both prediction and target."""
        h = self.mat.double().cpu()
        tp = torch.diag(h)
        union = h.sum(0) + h.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def miou(self) -> float:
        """Mean IoU over classes present in prediction or target; NaN when nothing was counted."""
        iou = self.iou_per_class()
        present = ~torch.isnan(iou)
        if not bool(present.any()):
            return math.nan
        return float(iou[present].mean())

    def pixel_accuracy(self) -> float:
        """Correct labelled pixels / labelled pixels; NaN when nothing was counted."""
        total = self.mat.sum()
        if int(total) == 0:
            return math.nan
        return float(torch.diag(self.mat).sum().double() / total.double())


class PerImageSegmentation:
    """The paper's (earlier) definition: mIoU and pixel accuracy per image, averaged over images.

    For each image: IoU of every class whose union (prediction or ground truth,
    counted over labelled pixels only) is non-empty, averaged over those classes;
    pixel accuracy = correct / labelled pixels. Images without labelled pixels
    are skipped. ``sums`` = [sum of per-image mIoU, sum of per-image accuracy,
    images counted], mergeable and all-reduce-able like the other accumulators.
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.sums.zero_()

    @torch.no_grad()
    def update(self, pred_labels: Any, target: Any) -> None:
        """Add a batch of N×H×W label maps (an H×W pair counts as one image)."""
        pred = as_tensor(pred_labels)
        tgt = as_tensor(target)
        if pred.shape != tgt.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(tgt.shape)}")
        if pred.dim() == 2:
            pred, tgt = pred[None], tgt[None]
        n, c = pred.shape[0], self.num_classes
        device = self.sums.device
        pred = pred.to(device, torch.int64).reshape(n, -1)
        tgt = tgt.to(device, torch.int64).reshape(n, -1)
        keep = (tgt >= 0) & (tgt < c)
        image = torch.arange(n, device=device)[:, None].expand_as(tgt)
        index = (image * c * c + tgt.clamp(0, c - 1) * c + pred.clamp(0, c - 1))[keep]
        mats = torch.bincount(index, minlength=n * c * c).reshape(n, c, c).double()
        tp = torch.diagonal(mats, dim1=1, dim2=2)
        union = mats.sum(1) + mats.sum(2) - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
        labelled = mats.sum((1, 2))
        has_pixels = labelled > 0
        miou = iou.sum(1) / present.sum(1).clamp(min=1)
        accuracy = tp.sum(1) / labelled.clamp(min=1)
        self.sums += torch.stack([miou[has_pixels].sum(), accuracy[has_pixels].sum(),
                                  has_pixels.sum().double()])

    def merge(self, other: "PerImageSegmentation") -> "PerImageSegmentation":
        self.sums += other.sums.to(self.sums.device)
        return self

    def all_reduce(self) -> "PerImageSegmentation":
        _all_reduce_sum(self.sums)
        return self

    @property
    def images(self) -> int:
        return int(self.sums[2])

    def miou(self) -> float:
        return float(self.sums[0] / self.sums[2]) if self.images else math.nan

    def pixel_accuracy(self) -> float:
        return float(self.sums[1] / self.sums[2]) if self.images else math.nan


def _depth_valid(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of pixels with ground truth, and of those that also have a finite prediction."""
    has_gt = (target != 0) & torch.isfinite(target)
    return has_gt, has_gt & torch.isfinite(pred)


def _depth_inputs(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pred = as_tensor(pred)
    target = as_tensor(target)
    if pred.shape != target.shape:
        if pred.numel() == target.numel() and pred.squeeze().shape == target.squeeze().shape:
            pred = pred.reshape(target.shape)
        else:
            raise ValueError(f"depth prediction shape {tuple(pred.shape)} differs from target shape "
                             f"{tuple(target.shape)}")
    return pred.detach().double(), target.detach().to(pred.device).double()


class DepthErrors:
    """Whole-split depth error sums: absolute and relative error over valid pixels.

    ``sums`` = [sum |p - g|, sum |p - g| / g, valid pixels used, pixels with ground
    truth but no finite prediction]. The last count is non-zero only when the
    predictions themselves can be invalid (e.g. depth converted to metres, where
    a non-positive inverse depth has no distance); such pixels are left out of
    the errors and reported as ``missing``.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.sums.zero_()

    @torch.no_grad()
    def update(self, pred: Any, target: Any) -> None:
        """Add one batch of predictions and ground truth of the same shape (0 = no ground truth)."""
        pred, target = _depth_inputs(pred, target)
        has_gt, valid = _depth_valid(pred, target)
        diff = (pred[valid] - target[valid]).abs()
        batch = torch.stack([
            diff.sum(),
            (diff / target[valid]).sum(),
            valid.sum().double(),
            (has_gt & ~valid).sum().double(),
        ])
        self.sums += batch.to(self.sums.device)

    def merge(self, other: "DepthErrors") -> "DepthErrors":
        self.sums += other.sums.to(self.sums.device)
        return self

    def all_reduce(self) -> "DepthErrors":
        _all_reduce_sum(self.sums)
        return self

    @property
    def count(self) -> int:
        return int(self.sums[2])

    @property
    def missing(self) -> int:
        return int(self.sums[3])

    def abs_err(self) -> float:
        """Mean absolute error over valid pixels (NaN when there were none)."""
        return float(self.sums[0] / self.sums[2]) if self.count else math.nan

    def rel_err(self) -> float:
        """Mean relative error |p - g| / g over valid pixels, as a fraction (NaN when none)."""
        return float(self.sums[1] / self.sums[2]) if self.count else math.nan


def depth_errors(pred: Any, target: Any) -> tuple[float, float]:
    """(absolute error, relative error) of one batch over pixels whose target is non-zero.

    Same definition as the reference's ``depth_error``; the relative error is a
    fraction (the paper prints it in percent).
    """
    acc = DepthErrors()
    acc.update(pred, target)
    return acc.abs_err(), acc.rel_err()


def normal_errors(pred: Any, target: Any) -> dict[str, float]:
    """Angular error of unit normals (N×3×H×W) over pixels whose target is not all zero.

    Mean and median angle in degrees and the fraction of pixels within 11.25,
    22.5 and 30 degrees, as the reference reports for NYUv2.
    """
    pred = as_tensor(pred).detach().double()
    target = as_tensor(target).detach().double().to(pred.device)
    valid = target.abs().sum(1) != 0
    cos = (pred * target).sum(1)[valid].clamp(-1, 1)
    if cos.numel() == 0:
        return {"mean": math.nan, "median": math.nan, "within_11.25": math.nan,
                "within_22.5": math.nan, "within_30": math.nan}
    angle = torch.rad2deg(torch.acos(cos))
    return {
        "mean": float(angle.mean()),
        "median": float(np.median(angle.cpu().numpy())),
        "within_11.25": float((angle < 11.25).double().mean()),
        "within_22.5": float((angle < 22.5).double().mean()),
        "within_30": float((angle < 30).double().mean()),
    }
