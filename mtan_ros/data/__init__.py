"""Datasets for MTAN: preprocessed and raw Cityscapes readers, synthetic street scenes.

`open_dataset` is the entry point for training and evaluation; every dataset
yields dicts {"image": 3xHxW float32 in [0, 1], "semantic": HxW int64 (-1 void),
"depth": 1xHxW float32 in `.depth_encoding`, 0 invalid}.

Names are imported on first use, so `import mtan_ros.data` stays cheap and the
synthetic generator, camera and class tables work without loading torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional, Sequence

from mtan_ros.data.errors import DataError

_EXPORTS = {
    "DataError": "errors",
    "CityscapesCamera": "camera",
    "DEFAULT_CAMERA": "camera",
    "ClassSet": "classes",
    "CITYSCAPES_19": "classes",
    "CITYSCAPES_7": "classes",
    "LABEL_ID_TO_TRAIN_ID": "classes",
    "LABEL_ID_TO_CATEGORY_7": "classes",
    "TRAIN_ID_TO_CATEGORY_7": "classes",
    "TRAIN_ID_TO_LABEL_ID": "classes",
    "class_set": "classes",
    "SyntheticScene": "synthetic",
    "generate_scene": "synthetic",
    "scene_rng": "synthetic",
    "write_preprocessed_tree": "writers",
    "write_raw_tree": "writers",
    "StreetDataset": "base",
    "PreprocessedCityscapes": "preprocessed",
    "RawCityscapes": "raw",
    "SyntheticDataset": "synthetic_dataset",
    "augment_sample": "augment",
    "random_scale_crop": "augment",
    "random_flip": "augment",
}

FORMATS = ("auto", "npy", "raw", "synthetic")

__all__ = sorted([*_EXPORTS, "open_dataset", "detect_format", "FORMATS"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def detect_format(root, split: str = "train") -> str:
    """'raw' for a Cityscapes tree (leftImg8bit/), 'npy' for the preprocessed release (<split>/image/)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found", "a Cityscapes tree (leftImg8bit/, gtFine/, disparity/, "
                                                          "camera/) or a preprocessed tree (train/, val/)")
    if (root / "leftImg8bit").is_dir():
        return "raw"
    if (root / split / "image").is_dir() or (root / "train" / "image").is_dir() or (root / "val" / "image").is_dir():
        return "npy"
    found = sorted(p.name for p in root.iterdir())[:8]
    raise DataError(root, f"not a known dataset layout (found {found or 'nothing'})",
                    "leftImg8bit/ gtFine/ disparity/ camera/ (raw Cityscapes) or "
                    f"{split}/image, {split}/label, {split}/depth with .npy files (preprocessed)")


def open_dataset(root, split: str = "train", format: str = "auto", augment: bool = False,
                 num_classes: Optional[int] = None, size: Optional[Sequence[int]] = None,
                 depth_scale: Optional[float] = None, **kw: Any):
    """Open a dataset split as a torch Dataset (see the module doc for the item format).

    format: "auto" (detect from the folder), "npy" (preprocessed release, inverse
    depth), "raw" (Cityscapes PNGs + camera json, metric depth) or "synthetic"
    (generated on the fly; `root` is ignored, pass `length=` and optionally `seed=`).
    num_classes: 7 or 19 (npy: detected when None; raw and synthetic: 7 when None,
    the MTAN paper's setting). size: (H, W) of the items (npy: stored size when None;
    raw and synthetic: 128x256 when None). depth_scale: npy only, metres = scale / value.
    Other keywords go to the reader (e.g. augment_seed, depth_resize, depth_encoding).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "auto":
        format = detect_format(root, split)
    if format != "npy" and depth_scale is not None:
        raise ValueError(f"depth_scale applies to the preprocessed (npy) format's inverse depth; the {format} "
                         "format is in metres already")
    if format == "npy":
        # The readers load torch (mtan_ros.data.base): +2.1 s measured with -X importtime, which
        # `import mtan_ros.data` must not cost (see the module doc).
        from mtan_ros.data.preprocessed import PreprocessedCityscapes

        return PreprocessedCityscapes(root, split=split, num_classes=num_classes, depth_scale=depth_scale,
                                      size=size, augment=augment, **kw)
    if format == "raw":
        from mtan_ros.data.raw import RawCityscapes  # torch: lazy, as above

        return RawCityscapes(root, split=split, num_classes=7 if num_classes is None else num_classes,
                             size=(128, 256) if size is None else size, augment=augment, **kw)
    from mtan_ros.data.synthetic_dataset import SyntheticDataset  # torch: lazy, as above

    if "length" not in kw:
        raise ValueError("format='synthetic' needs length=<number of scenes>")
    return SyntheticDataset(split=split, num_classes=7 if num_classes is None else num_classes,
                            size=(128, 256) if size is None else size, augment=augment, **kw)
