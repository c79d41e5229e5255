"""What every dataset in mtan_ros.data looks like to training, evaluation and the bag writer.

Items are dicts of tensors with fixed keys, types and units, so the consumers
never need to know which on-disk format a sample came from:
  "image":    float32 3 x H x W, RGB in [0, 1]
  "semantic": int64 H x W class ids, -1 = void (ignored by losses and metrics)
  "depth":    float32 1 x H x W in `dataset.depth_encoding`, 0 = invalid
Datasets also say what their classes are (`.classes`), how their depth values
map to metres (`.depth_encoding`), their item size (`.image_size`), a stable
name per sample (`.sample_name(i)`, for messages and bag frame ids) and the
camera that saw it at the item size (`.camera(i)`, for camera_info).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.data.augment import augment_sample
from mtan_ros.data.camera import DEFAULT as DEFAULT_CAMERA
from mtan_ros.data.camera import CityscapesCamera
from mtan_ros.data.classes import ClassSet

DEFAULT_SIZE = (128, 256)  # the MTAN paper's Cityscapes resolution (H, W)


def check_size(size: Optional[Sequence[int]]) -> Optional[tuple[int, int]]:
    if size is None:
        return None
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {height}x{width}")
    return height, width


class StreetDataset(Dataset):
    """Base class: subclasses implement `_load(i)` returning numpy arrays at `image_size`.

    `_load` returns (image H x W x 3 float32 in [0, 1], semantic H x W int64 with -1 void,
    depth H x W float32 in the dataset encoding, 0 invalid). The base class turns
    them into tensors and applies augmentation when enabled.

    Augmentation randomness: with `augment_seed` set, sample i of epoch e (see
    `set_epoch`) always gets the same crop and flip, whatever the worker layout;
    without it, each item draws a seed from torch's global generator, which
    DataLoader seeds per worker from `torch.manual_seed`.
    """

    classes: ClassSet
    depth_encoding: DepthEncoding
    image_size: tuple[int, int]
    split: str

    def __init__(self, augment: bool = False, augment_seed: Optional[int] = None,
                 augment_scales: Sequence[float] = (1.0, 1.2, 1.5), flip_probability: float = 0.5):
        self.augment = bool(augment)
        self.augment_seed = augment_seed
        self.augment_scales = tuple(float(s) for s in augment_scales)
        self.flip_probability = float(flip_probability)
        self.epoch = 0

    # to implement ----------------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def sample_name(self, index: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # shared ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def camera(self, index: int) -> CityscapesCamera:
        """Intrinsics at the item size (the Cityscapes default unless the format stores its own)."""
        self._check_index(index)
        return DEFAULT_CAMERA.scaled(*self.image_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of an epoch (only matters with `augment_seed`)."""
        self.epoch = int(epoch)

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        return index % n

    def augmentation_rng(self, index: int) -> np.random.Generator:
        if self.augment_seed is not None:
            return np.random.default_rng([int(self.augment_seed), self.epoch, index])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._check_index(int(index))
        image, semantic, depth = self._load(index)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)),
            "semantic": torch.from_numpy(np.ascontiguousarray(semantic, dtype=np.int64)),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)[None]),
        }
        if self.augment:
            item = augment_sample(item, self.augmentation_rng(index), self.depth_encoding,
                                  scales=self.augment_scales, flip_probability=self.flip_probability)
        return item

    def describe(self) -> str:
        """One line for logs: format, split, size, classes, depth unit."""
        enc = self.depth_encoding
        return (f"{type(self).__name__}({self.split}: {len(self)} samples, {self.image_size[0]}x{self.image_size[1]}, "
                f"{self.classes.num_classes} classes, depth {enc.kind} scale {enc.scale:.6g})")

    def __repr__(self) -> str:
        return self.describe()


def to_numpy_item(item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An item back to (H x W x 3 float32, H x W int64, H x W float32) numpy arrays."""
    return (item["image"].permute(1, 2, 0).numpy(), item["semantic"].numpy(), item["depth"][0].numpy())
