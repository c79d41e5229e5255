"""Reader for the preprocessed Cityscapes release of the MTAN author (also on Kaggle).

Layout: `<root>/<split>/image/<i>.npy` (H x W x 3 float RGB in [0, 1]),
`<root>/<split>/label/<i>.npy` (H x W, -1 = void; some copies have `label_7`,
`label_19` or `label_2` folders instead or as well) and
`<root>/<split>/depth/<i>.npy` (H x W x 1 inverse depth, 0 = invalid), at
128x256 or 256x512. Files pair by name and are read in numeric order
(0, 1, 2, ..., 10).

The number of classes comes from the label folder name (label_7, label_19) or,
for a plain `label` folder, from the label range (max < 7 means 7 classes);
`num_classes` forces it. The depth unit of the release is undocumented; it is
read as inverse depth with the scale of `CITYSCAPES_INVERSE` (metres = scale /
value, see mtan_ros.depth_encoding); `depth_scale` overrides the scale.

Each file is checked when it is read; problems raise DataError naming the file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mtan_ros.common.entry import first_line
from mtan_ros.depth_encoding import CITYSCAPES_INVERSE, DepthEncoding
from mtan_ros.data.base import StreetDataset, check_size
from mtan_ros.data.classes import class_set
from mtan_ros.data.errors import DataError
from mtan_ros.data.resize import resize_depth, resize_image, resize_labels

LABEL_DIRS = {7: "label_7", 19: "label_19", 2: "label_2"}
_DETECT_SAMPLES = 16
_MOST_CLASSES = 19  # a plain label/ folder is detected as 7 or 19 classes: ids above 18 belong to neither
_RANGE_TOLERANCE = 1e-3


def _sort_key(name: str):
    stem = name[:-4]
    return (0, int(stem), "") if re.fullmatch(r"\d+", stem) else (1, 0, stem)


def list_npy(folder: Path) -> list[str]:
    """`*.npy` names in a folder, numeric stems in numeric order, then the others by name."""
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".npy")]
    except FileNotFoundError:
        raise DataError(folder, "folder not found", "a folder of <i>.npy files") from None
    except OSError as exc:
        raise DataError(folder, f"cannot list folder ({exc.strerror})", "a readable folder") from None
    return sorted(names, key=_sort_key)


def load_npy(path: Path, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(path, f"{what} file not found", f"one {what} file per image") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"cannot read {what} .npy ({first_line(exc)})", "a numpy .npy array file") from None
    if not isinstance(array, np.ndarray):
        raise DataError(path, f"{what} file does not hold a single array", "a numpy .npy array file")
    return array


def _finite_float32(path, array: np.ndarray, what: str, float_expected: str, finite_expected: str) -> np.ndarray:
    """A floating-point array as float32 without NaN or infinity; DataError naming `what` otherwise."""
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(path, f"{what} dtype is {array.dtype}", float_expected)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(path, f"{what} has {int((~np.isfinite(array)).sum())} NaN or infinite values",
                        finite_expected)
    return array


def check_image(path, image: np.ndarray) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> float32; DataError otherwise."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(path, f"image has shape {image.shape}", "H x W x 3 (RGB, channels last)")
    image = _finite_float32(path, image, "image", "floating point RGB in [0, 1]", "finite RGB in [0, 1]")
    low, high = float(image.min()), float(image.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        hint = " (looks like 0..255: divide by 255)" if high > 1.5 else ""
        raise DataError(path, f"image values range from {low:g} to {high:g}{hint}", "RGB in [0, 1]")
    return np.clip(image, 0.0, 1.0)


def _single_channel(path, array: np.ndarray, what: str, shape: tuple[int, int], layout: str) -> np.ndarray:
    """H x W (a trailing channel of 1 dropped) of the image's size, or a DataError naming `what`."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(path, f"{what} has shape {array.shape}", layout)
    if array.shape != shape:
        raise DataError(path, f"{what} is {array.shape[0]}x{array.shape[1]} but its image is {shape[0]}x{shape[1]}",
                        f"{what} and image of the same size")
    return array


def check_labels(path, labels: np.ndarray, num_classes: int, shape: tuple[int, int]) -> np.ndarray:
    """H x W (or H x W x 1) class ids, -1 or 255 void -> int64 with -1 void; DataError otherwise."""
    labels = _single_channel(path, labels, "label", shape, f"H x W class ids ({shape[0]} x {shape[1]})")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataError(path, f"label dtype is {labels.dtype}", "integer or float class ids")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all():
            raise DataError(path, "label has NaN or infinite values", "class ids, -1 = void")
        if not np.array_equal(labels, np.round(labels)):
            raise DataError(path, "label has non-integer values", "whole-number class ids, -1 = void")
    ids = labels.astype(np.int64)
    void = (ids == -1) | (ids == 255)
    bad = ~void & ((ids < 0) | (ids >= num_classes))
    if bad.any():
        raise DataError(path, f"label values {_listed(ids[bad])} are outside the {num_classes} classes",
                        f"ids 0..{num_classes - 1}, -1 or 255 for void (pass num_classes if it was detected "
                        "wrongly)")
    ids[void] = -1
    return ids


def _listed(values: np.ndarray, most: int = 5) -> str:
    """The distinct values, smallest first, at most `most` of them, as "[-3, 200]" (float labels too)."""
    return "[" + ", ".join(f"{v:g}" for v in np.unique(values)[:most].tolist()) + "]"


def check_depth(path, depth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """H x W x 1 (or H x W) non-negative float, 0 = invalid -> H x W float32; DataError otherwise."""
    depth = _single_channel(path, depth, "depth", shape, f"H x W x 1 ({shape[0]} x {shape[1]} x 1)")
    depth = _finite_float32(path, depth, "depth", "floating point depth, 0 = invalid",
                            "finite values with 0 marking invalid pixels")
    if (depth < 0).any():
        raise DataError(path, f"depth has negative values (min {float(depth.min()):g})",
                        "non-negative values, 0 = invalid")
    return depth


class PreprocessedCityscapes(StreetDataset):
    """The `{split}/{image,label,depth}/{i}.npy` release.

    num_classes: None to detect (see module doc) or 7/19/2 to force; a `label_<n>`
    folder is used when it exists, else `label`. depth_scale: metres = scale / value
    (default CITYSCAPES_INVERSE's scale); or pass a whole `depth_encoding`.
    size: (H, W) to resize items to, default the stored size.
    """

    def __init__(self, root, split: str = "train", num_classes: Optional[int] = None,
                 depth_scale: Optional[float] = None, depth_encoding: Optional[DepthEncoding] = None,
                 size: Optional[Sequence[int]] = None, label_dir: Optional[str] = None,
                 depth_resize: str = "nearest", augment: bool = False, augment_seed: Optional[int] = None,
                 **augment_kw):
        super().__init__(augment=augment, augment_seed=augment_seed, **augment_kw)
        self.root, self.split = Path(root), split
        self.dir = self.root / split
        if not self.dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else None
            where = "root folder not found" if found is None else f"no '{split}' folder (found {found or 'nothing'})"
            raise DataError(self.dir if found is not None else self.root, where,
                            f"{self.root}/{split}/image, label (or label_7/label_19), depth with <i>.npy files")
        for sub in ("image", "depth"):
            if not (self.dir / sub).is_dir():
                raise DataError(self.dir / sub, "folder not found", f"{sub}/<i>.npy files beside image/ and label/")
        self.label_dir = self._choose_label_dir(label_dir, num_classes)
        self.names = list_npy(self.dir / "image")
        if not self.names:
            raise DataError(self.dir / "image", "no .npy files", "image/<i>.npy files (0.npy, 1.npy, ...)")
        for sub in (self.label_dir, "depth"):
            self._check_pairing(sub)

        with_shape = load_npy(self.dir / "image" / self.names[0], "image")
        check_image(self.dir / "image" / self.names[0], with_shape)
        self.stored_size = (int(with_shape.shape[0]), int(with_shape.shape[1]))
        self.image_size = check_size(size) or self.stored_size
        self.resizing = size is not None
        if num_classes is None:
            num_classes = self._detect_num_classes()
        self.classes = class_set(int(num_classes))
        if depth_encoding is not None and depth_scale is not None:
            raise ValueError("pass either depth_encoding or depth_scale, not both")
        if depth_encoding is None:
            scale = CITYSCAPES_INVERSE.scale if depth_scale is None else float(depth_scale)
            depth_encoding = DepthEncoding("inverse", scale)
        self.depth_encoding = depth_encoding
        self.depth_resize = depth_resize

    # discovery -------------------------------------------------------------------------------
    def _choose_label_dir(self, label_dir: Optional[str], num_classes: Optional[int]) -> str:
        if label_dir is not None:
            if not (self.dir / label_dir).is_dir():
                raise DataError(self.dir / label_dir, "label folder not found", "an existing label folder")
            return label_dir
        if num_classes is not None:
            named = LABEL_DIRS.get(int(num_classes))
            if named and (self.dir / named).is_dir():
                return named
        else:
            for n in (7, 19):  # the MTAN paper's setting first
                if (self.dir / LABEL_DIRS[n]).is_dir():
                    return LABEL_DIRS[n]
        if (self.dir / "label").is_dir():
            return "label"
        present = sorted(p.name for p in self.dir.iterdir() if p.is_dir())
        raise DataError(self.dir / "label", f"no label folder (found {present})",
                        "label/, label_7/ or label_19/ with <i>.npy files")

    def _check_pairing(self, sub: str) -> None:
        names = list_npy(self.dir / sub)
        if names == self.names:
            return
        have, want = set(names), set(self.names)
        missing, extra = sorted(want - have, key=_sort_key), sorted(have - want, key=_sort_key)
        if missing:
            raise DataError(self.dir / sub / missing[0],
                            f"missing ({len(self.names)} images but {len(names)} {sub} files; "
                            f"{len(missing)} missing)", f"one {sub} file per image/<i>.npy")
        raise DataError(self.dir / sub / extra[0],
                        f"has no image ({len(self.names)} images but {len(names)} {sub} files)",
                        f"one {sub} file per image/<i>.npy")

    def _detect_num_classes(self) -> int:
        match = re.fullmatch(r"label_(\d+)", self.label_dir)
        if match:
            return int(match.group(1))
        picks = np.unique(np.linspace(0, len(self.names) - 1, min(_DETECT_SAMPLES, len(self.names))).astype(int))
        top = -1
        for i in picks:
            path = self.dir / self.label_dir / self.names[i]
            labels = load_npy(path, "label")
            if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
                raise DataError(path, f"label dtype is {labels.dtype}", "integer or float class ids")
            values = labels[np.isfinite(labels)] if np.issubdtype(labels.dtype, np.floating) else labels
            # Checked before the values choose the class set: one stray 200 would make a 7-class folder
            # look like the 19-class set, and the error would blame the other split's classes.
            stray = values[~((values == -1) | (values == 255) | ((values >= 0) & (values < _MOST_CLASSES)))]
            if stray.size:
                raise DataError(path, f"label values {_listed(stray)} are outside every label set",
                                f"ids 0..6 (7 classes) or 0..{_MOST_CLASSES - 1} (19 classes), -1 or 255 for "
                                "void; fix or remove this file")
            values = values[(values != 255) & (values >= 0)]
            if values.size:
                top = max(top, int(values.max()))
        return 7 if top < 7 else 19

    # items -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def sample_name(self, index: int) -> str:
        return f"{self.split}/{self.names[self._check_index(index)][:-4]}"

    def sample_paths(self, index: int) -> dict[str, Path]:
        name = self.names[self._check_index(index)]
        return {"image": self.dir / "image" / name, "label": self.dir / self.label_dir / name,
                "depth": self.dir / "depth" / name}

    def _load(self, index: int):
        paths = self.sample_paths(index)
        image = check_image(paths["image"], load_npy(paths["image"], "image"))
        shape = image.shape[:2]
        labels = check_labels(paths["label"], load_npy(paths["label"], "label"), self.classes.num_classes, shape)
        depth = check_depth(paths["depth"], load_npy(paths["depth"], "depth"), shape)
        if shape != self.stored_size and not self.resizing:
            raise DataError(paths["image"], f"image is {shape[0]}x{shape[1]} but the first image is "
                                            f"{self.stored_size[0]}x{self.stored_size[1]}",
                            "one size for the whole split (or pass size= to resize every sample)")
        if shape != self.image_size:
            image = np.clip(resize_image(image, self.image_size), 0.0, 1.0)
            labels = resize_labels(labels, self.image_size)
            depth = resize_depth(depth, self.image_size, self.depth_resize)
        return image, labels, depth
