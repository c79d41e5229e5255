"""Synthetic street scenes served directly as a dataset (no files).

The scenes are the ones `write_preprocessed_tree` / `write_raw_tree` write for the
same seed, split and index, in metres. For tests, demos and benchmarks only:
not a substitute for Cityscapes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mtan_ros.depth_encoding import METRIC
from mtan_ros.data.base import DEFAULT_SIZE, StreetDataset, check_size
from mtan_ros.data.camera import CityscapesCamera
from mtan_ros.data.classes import class_set, train_id_to_category_7
from mtan_ros.data.synthetic import SyntheticScene, generate_scene, scene_rng


def scene_labels(scene: SyntheticScene, num_classes: int) -> np.ndarray:
    """Scene train ids as int64 class ids of a 7- or 19-class set, -1 = void."""
    labels = scene.labels
    if num_classes == 7:
        labels = train_id_to_category_7()[labels]
    elif num_classes != 19:
        raise ValueError(f"synthetic scenes have 7 or 19 classes, not {num_classes}")
    out = labels.astype(np.int64)
    out[labels == 255] = -1
    return out


class SyntheticDataset(StreetDataset):
    """`length` generated scenes of `split` under `seed`; depth in metres (METRIC), 0 invalid."""

    def __init__(self, length: int, split: str = "train", size: Sequence[int] = DEFAULT_SIZE,
                 num_classes: int = 7, seed: int = 0, augment: bool = False,
                 augment_seed: Optional[int] = None, **augment_kw):
        super().__init__(augment=augment, augment_seed=augment_seed, **augment_kw)
        if int(length) < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if num_classes not in (7, 19):
            raise ValueError(f"synthetic scenes have 7 or 19 classes, not {num_classes}")
        scene_rng(seed, split, 0)  # validates split
        self.length, self.split, self.seed = int(length), split, int(seed)
        self.image_size = check_size(size)
        self.classes = class_set(num_classes)
        self.depth_encoding = METRIC
        self.root = None

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> SyntheticScene:
        index = self._check_index(index)
        return generate_scene(scene_rng(self.seed, self.split, index), self.image_size)

    def sample_name(self, index: int) -> str:
        return f"synthetic_{self.split}_{self._check_index(index):06d}"

    def camera(self, index: int) -> CityscapesCamera:
        """Scenes are rendered with the Cityscapes camera scaled to the item size."""
        return super().camera(index)

    def _load(self, index: int):
        scene = self.scene(index)
        image = scene.image.astype(np.float32) / np.float32(255.0)
        depth = np.where(np.isfinite(scene.depth), scene.depth, np.float32(0.0)).astype(np.float32)
        return image, scene_labels(scene, self.classes.num_classes), depth
