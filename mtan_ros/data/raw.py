"""Reader for raw Cityscapes: PNG images, labelIds, disparity maps and camera files.

Layout (as downloaded from cityscapes-dataset.com):
  leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png        RGB image
  gtFine/<split>/<city>/<frame>_gtFine_labelIds.png         Cityscapes labelIds (uint8)
  disparity/<split>/<city>/<frame>_disparity.png            uint16: p > 0 -> (p - 1) / 256 px; 0 = none
  camera/<split>/<city>/<frame>_camera.json                 extrinsic.baseline, intrinsic.fx/fy/u0/v0
Depth in metres = baseline * fx / disparity, with each frame's own camera file
(the rig differs slightly between cities); disparity <= 0 is invalid. Items are
resized to the training resolution (default 128x256): images by area
averaging, labels by nearest neighbour, depth by averaging only valid pixels
(or nearest), so invalid pixels never leak into valid depth. Labels become the
19 train ids or the 7 categories through the official label table.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from mtan_ros.depth_encoding import METRIC
from mtan_ros.data.base import StreetDataset, check_size
from mtan_ros.data.camera import CityscapesCamera
from mtan_ros.data.classes import class_set, label_id_to_category_7, label_id_to_train_id
from mtan_ros.data.errors import DataError
from mtan_ros.data.resize import DEPTH_RESIZE_MODES, resize_depth, resize_image, resize_labels

IMAGE_SUFFIX = "_leftImg8bit.png"
KINDS = {
    # kind: (top folder, file suffix, what it is)
    "label": ("gtFine", "_gtFine_labelIds.png", "gtFine labelIds PNG"),
    "disparity": ("disparity", "_disparity.png", "16-bit disparity PNG"),
    "camera": ("camera", "_camera.json", "camera json"),
}


def read_png(path: Path, what: str, flags: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, f"{what} not found", f"a {what} for every image")
    array = cv2.imread(str(path), flags)
    if array is None:
        raise DataError(path, f"cannot decode {what} (corrupt, truncated or not a PNG)", "a readable PNG file")
    return array


def disparity_to_metres(png: np.ndarray, camera: CityscapesCamera) -> np.ndarray:
    """Cityscapes disparity PNG values -> metres (float32), 0 where there is no disparity.

    `camera` must describe the image the disparity map belongs to (same width and height).
    """
    disparity = (png.astype(np.float64) - 1.0) / 256.0
    disparity[png == 0] = 0.0
    return camera.depth_from_disparity(disparity)


class RawCityscapes(StreetDataset):
    """Raw Cityscapes split as a dataset; depth in metres (METRIC encoding, 0 = invalid).

    num_classes: 7 (categories, the MTAN setting) or 19 (train ids). size: (H, W) of the
    items, None for the stored size. depth_resize: "masked_mean" or "nearest".
    """

    def __init__(self, root, split: str = "train", num_classes: int = 7, size: Optional[Sequence[int]] = (128, 256),
                 depth_resize: str = "masked_mean", augment: bool = False, augment_seed: Optional[int] = None,
                 **augment_kw):
        super().__init__(augment=augment, augment_seed=augment_seed, **augment_kw)
        if num_classes not in (7, 19):
            raise ValueError(f"raw Cityscapes gives 7 categories or 19 train ids, not {num_classes} classes")
        if depth_resize not in DEPTH_RESIZE_MODES:
            raise ValueError(f"depth_resize must be one of {DEPTH_RESIZE_MODES}, got {depth_resize!r}")
        self.root, self.split = Path(root), split
        self.depth_resize = depth_resize
        self.classes = class_set(num_classes)
        self.lut = label_id_to_category_7() if num_classes == 7 else label_id_to_train_id()
        self.depth_encoding = METRIC
        self.frames: list[tuple[str, str]] = []  # (city, frame prefix)
        self._discover()
        size = check_size(size)
        if size is None:
            first = read_png(self._path("image", 0), "image PNG", cv2.IMREAD_UNCHANGED)
            size = (int(first.shape[0]), int(first.shape[1]))
        self.image_size = size

    # discovery -------------------------------------------------------------------------------
    def _folder(self, top: str, city: Optional[str] = None) -> Path:
        folder = self.root / top / self.split
        return folder if city is None else folder / city

    def _discover(self) -> None:
        image_root = self._folder("leftImg8bit")
        expected = "leftImg8bit/, gtFine/, disparity/ and camera/ folders with <split>/<city>/ inside"
        if not image_root.is_dir():
            raise DataError(image_root, "folder not found", expected)
        for top, _, what in KINDS.values():
            if not self._folder(top).is_dir():
                raise DataError(self._folder(top), "folder not found", f"{what}s under {top}/{self.split}/<city>/")
        cities = sorted(p.name for p in image_root.iterdir() if p.is_dir())
        for city in cities:
            names = sorted(n for n in os.listdir(image_root / city) if n.endswith(IMAGE_SUFFIX))
            if not names:
                continue
            prefixes = [n[: -len(IMAGE_SUFFIX)] for n in names]
            for top, suffix, what in KINDS.values():
                folder = self._folder(top, city)
                present = set(os.listdir(folder)) if folder.is_dir() else set()
                missing = [p for p in prefixes if p + suffix not in present]
                if missing:
                    raise DataError(folder / (missing[0] + suffix),
                                    f"missing ({len(missing)} of {len(prefixes)} images in {city} have no {what})",
                                    f"one {what} per *{IMAGE_SUFFIX}")
            self.frames.extend((city, p) for p in prefixes)
        if not self.frames:
            raise DataError(image_root, "no *_leftImg8bit.png images", f"<city>/<frame>{IMAGE_SUFFIX} files")

    def _path(self, kind: str, index: int) -> Path:
        city, prefix = self.frames[index]
        if kind == "image":
            return self._folder("leftImg8bit", city) / (prefix + IMAGE_SUFFIX)
        top, suffix, _ = KINDS[kind]
        return self._folder(top, city) / (prefix + suffix)

    # items -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frames)

    def sample_name(self, index: int) -> str:
        return self.frames[self._check_index(index)][1]

    def sample_paths(self, index: int) -> dict[str, Path]:
        index = self._check_index(index)
        return {kind: self._path(kind, index) for kind in ("image", *KINDS)}

    def stored_camera(self, index: int) -> CityscapesCamera:
        """The frame's camera json as stored (intrinsics for its own image size)."""
        return CityscapesCamera.from_json(self._path("camera", self._check_index(index)))

    def camera(self, index: int) -> CityscapesCamera:
        """The frame's camera scaled to the item size."""
        return self.stored_camera(index).scaled(*self.image_size)

    def _load(self, index: int):
        paths = self.sample_paths(index)
        bgr = read_png(paths["image"], "image PNG", cv2.IMREAD_COLOR)
        labels = read_png(paths["label"], "gtFine labelIds PNG", cv2.IMREAD_UNCHANGED)
        disparity = read_png(paths["disparity"], "disparity PNG", cv2.IMREAD_UNCHANGED)
        shape = bgr.shape[:2]
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise DataError(paths["label"], f"labelIds PNG is {labels.dtype} with shape {labels.shape}",
                            "a single-channel 8-bit *_gtFine_labelIds.png (not the _color or _instanceIds file)")
        if disparity.ndim != 2 or disparity.dtype != np.uint16:
            raise DataError(paths["disparity"], f"disparity PNG is {disparity.dtype} with shape {disparity.shape}",
                            "a single-channel 16-bit *_disparity.png")
        for kind, array in (("label", labels), ("disparity", disparity)):
            if array.shape != shape:
                raise DataError(paths[kind], f"{kind} is {array.shape[0]}x{array.shape[1]} but the image is "
                                             f"{shape[0]}x{shape[1]}", "label, disparity and image of the same size")
        camera = CityscapesCamera.from_json(paths["camera"])
        if camera.size != shape:  # the json describes 2048x1024 (or its own image_size): match this image
            camera = camera.scaled(*shape)
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255.0)
        depth = disparity_to_metres(disparity, camera)
        ids = self.lut[labels]
        if shape != self.image_size:
            image = np.clip(resize_image(image, self.image_size), 0.0, 1.0)
            ids = resize_labels(ids, self.image_size)
            depth = resize_depth(depth, self.image_size, self.depth_resize)
        semantic = ids.astype(np.int64)
        semantic[ids == 255] = -1
        return image, semantic, depth
