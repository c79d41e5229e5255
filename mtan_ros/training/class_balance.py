"""Class weights for the semantic loss, counted on the training labels.

With plain cross-entropy a short run learns the classes that cover most pixels
and can leave thin or rare ones (poles, people) at zero IoU. Median frequency
balancing (Eigen & Fergus, ICCV 2015; the weighting SegNet trains with) scales
each class's loss by median(class frequency) / its frequency, so every class
counts about as much as the median one.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CLASS_WEIGHTS", "class_frequencies", "median_frequency_weights", "describe_weights"]

CLASS_WEIGHTS = ("none", "median_frequency")


def class_frequencies(dataset: Any, num_classes: int, max_images: int = 200) -> np.ndarray:
    """Share of labelled pixels per class, over up to ``max_images`` images spread evenly over ``dataset``.

    Void pixels (ids outside ``[0, num_classes)``) are not counted.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1; got {max_images}")
    total = len(dataset)
    if total == 0:
        raise ValueError("cannot count class frequencies of an empty dataset")
    indices = np.unique(np.linspace(0, total - 1, num=min(total, max_images)).round().astype(int))
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for index in indices:
        labels = torch.as_tensor(dataset[int(index)]["semantic"]).reshape(-1).long()
        labels = labels[(labels >= 0) & (labels < num_classes)]
        counts += torch.bincount(labels, minlength=num_classes).double()
    labelled = counts.sum()
    if labelled == 0:
        raise ValueError(f"the {len(indices)} images counted have no labelled pixel")
    return (counts / labelled).numpy()


def median_frequency_weights(frequencies: Sequence[float]) -> np.ndarray:
    """median(f) / f_c for every class present; 1.0 for classes without a pixel (they add no loss anyway)."""
    freq = np.asarray(frequencies, dtype=np.float64)
    present = freq > 0
    if not present.any():
        raise ValueError("no class has any pixel")
    weights = np.ones_like(freq)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


def describe_weights(names: Sequence[str], weights: Sequence[float]) -> str:
    return ", ".join(f"{name} {float(w):.2f}" for name, w in zip(names, weights))
