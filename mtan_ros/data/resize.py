"""Resizing images, label maps and depth maps to a training resolution.

Each kind of map needs its own rule: colours are averaged, labels must stay
valid class ids (nearest neighbour), and depth must never blend invalid (0 or
NaN) pixels into valid ones, or the network learns from depths that no
surface has.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

DEPTH_RESIZE_MODES = ("masked_mean", "nearest")


def _target(size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    return height, width


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """H x W x C image -> size: area averaging when shrinking, bilinear when enlarging."""
    height, width = _target(size)
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    mode = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=mode)
    return out.reshape(height, width, *image.shape[2:])


def resize_labels(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """H x W label map -> size by nearest neighbour (ids are never mixed)."""
    height, width = _target(size)
    if labels.shape[:2] == (height, width):
        return labels
    # Index arithmetic instead of cv2 so any integer dtype (int64, -1 void) works unchanged;
    # sample at the centre of each target pixel, as cv2.INTER_NEAREST_EXACT does.
    rows = np.minimum(((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.int64), labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]


def resize_depth(depth: np.ndarray, size: Sequence[int], mode: str = "masked_mean") -> np.ndarray:
    """H x W depth (0 or non-finite = invalid) -> size, invalid pixels never mixed into valid ones.

    masked_mean: each output pixel is the mean of the valid input pixels it covers
    (area weights), 0 where it covers none; this keeps the sparse Cityscapes
    disparity maps dense where they have data (used when shrinking in both directions;
    otherwise nearest). nearest: one input pixel per output pixel, the same pixel
    `resize_labels` picks, so depth and labels stay aligned.
    """
    if mode not in DEPTH_RESIZE_MODES:
        raise ValueError(f"depth resize mode must be one of {DEPTH_RESIZE_MODES}, got {mode!r}")
    height, width = _target(size)
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    clean = np.where(valid, depth, np.float32(0.0))
    if depth.shape[:2] == (height, width):
        return clean
    if mode == "nearest" or height > depth.shape[0] or width > depth.shape[1]:
        # Enlarging: an output pixel covers less than one input pixel, nothing to average.
        return resize_labels(clean, size)
    total = cv2.resize(clean.astype(np.float64), (width, height), interpolation=cv2.INTER_AREA)
    count = cv2.resize(valid.astype(np.float64), (width, height), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width), dtype=np.float32)
    has = count > 1e-6
    out[has] = (total[has] / count[has]).astype(np.float32)
    return out
