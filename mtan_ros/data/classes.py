"""Cityscapes class tables: 19 train ids, the 7 categories, and id lookup tables.

Everything is derived from the official label table in `cityscapesscripts`
(`cityscapesscripts.helpers.labels`) so that ids, names and colours cannot drift
from the benchmark's definitions. That package is imported only when a table is
first used (tables are cached), never when this module is imported.

Module attributes CITYSCAPES_19, CITYSCAPES_7, LABEL_ID_TO_TRAIN_ID,
LABEL_ID_TO_CATEGORY_7, TRAIN_ID_TO_CATEGORY_7 and TRAIN_ID_TO_LABEL_ID are built
on first access.

The 7-class setting (MTAN paper, Cityscapes) uses the Cityscapes categories
except `void`: flat, construction, object, nature, sky, human, vehicle; the
category id is `categoryId - 1`. Every label of those categories maps to its
category, including labels that the 19-class setting ignores (parking, rail
track, guard rail, bridge, tunnel, polegroup, caravan, trailer): they are still
unambiguously flat/construction/object/vehicle. `license plate` (id -1) and the
void category are void (255 in the tables, -1 in dataset items).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

VOID = 255  # void entry of the uint8 lookup tables; datasets turn it into -1
IGNORE_INDEX = -1  # void in dataset items and losses

CATEGORY_7_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
# A representative label whose colour stands for each category (the first train id of it).
_CATEGORY_7_COLOR_FROM = ("road", "building", "pole", "vegetation", "sky", "person", "car")


@dataclass(frozen=True, eq=True)
class ClassSet:
    """Names and RGB colours of a label set; class i has names[i] and colors[i].

    Tables returned by this module are shared: treat `names` and `colors` as read-only.
    """

    name: str
    names: list[str]
    colors: list[tuple[int, int, int]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", [str(n) for n in self.names])
        object.__setattr__(self, "colors", [tuple(int(c) for c in col) for col in self.colors])
        if len(self.names) != len(self.colors):
            raise ValueError(f"class set {self.name!r}: {len(self.names)} names but {len(self.colors)} colours")
        for col in self.colors:
            if len(col) != 3 or not all(0 <= c <= 255 for c in col):
                raise ValueError(f"class set {self.name!r}: colour {col} is not an RGB triple in 0..255")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """num_classes x 3 uint8 RGB colours (index with a label map to colourise it)."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    def colorize(self, labels: Any, void_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
        """H x W labels (-1 or 255 or out of range = void) -> H x W x 3 uint8 RGB."""
        labels = np.asarray(labels).astype(np.int64)
        table = np.concatenate([self.palette(), np.asarray([void_color], dtype=np.uint8)])
        index = np.where((labels >= 0) & (labels < self.num_classes), labels, self.num_classes)
        return table[index]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "names": list(self.names), "colors": [list(c) for c in self.colors]}


def generic_class_set(num_classes: int) -> ClassSet:
    """Names class_0..class_{n-1} with distinct colours, for label sets without a known table."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    rng = np.random.default_rng(num_classes)
    colors = [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in range(num_classes)]
    return ClassSet(f"generic_{num_classes}", [f"class_{i}" for i in range(num_classes)], colors)


def _labels() -> list:
    try:
        from cityscapesscripts.helpers import labels as cs_labels  # optional: pip install .[train]
    except ImportError as exc:
        raise ImportError(
            "the Cityscapes label table needs the 'cityscapesscripts' package "
            f"({exc}); install it with `pip install cityscapesscripts` or `pip install -e .[train]`"
        ) from None
    return list(cs_labels.labels)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=None)
def cityscapes_19() -> ClassSet:
    """The 19 evaluated Cityscapes classes, indexed by train id 0..18."""
    by_train = {lab.trainId: lab for lab in _labels() if 0 <= lab.trainId < 255}
    ids = sorted(by_train)
    if ids != list(range(19)):
        raise RuntimeError(f"unexpected Cityscapes train ids {ids}; expected 0..18")
    return ClassSet("cityscapes_19", [by_train[i].name for i in ids], [by_train[i].color for i in ids])


@functools.lru_cache(maxsize=None)
def cityscapes_7() -> ClassSet:
    """The 7 Cityscapes categories used by MTAN's 7-class setting."""
    labels = {lab.name: lab for lab in _labels()}
    colors = [labels[name].color for name in _CATEGORY_7_COLOR_FROM]
    categories = tuple(labels[name].category for name in _CATEGORY_7_COLOR_FROM)
    if categories != CATEGORY_7_NAMES:
        raise RuntimeError(f"unexpected Cityscapes categories {categories}; expected {CATEGORY_7_NAMES}")
    return ClassSet("cityscapes_7", list(CATEGORY_7_NAMES), colors)


def class_set(num_classes: int) -> ClassSet:
    """CITYSCAPES_7 for 7, CITYSCAPES_19 for 19, generic names otherwise."""
    if num_classes == 7:
        return cityscapes_7()
    if num_classes == 19:
        return cityscapes_19()
    return generic_class_set(num_classes)


def _category_7(label) -> int:
    if label.category == "void" or label.id < 0:
        return VOID
    return int(label.categoryId) - 1


@functools.lru_cache(maxsize=None)
def label_id_to_train_id() -> np.ndarray:
    """uint8 LUT of length 256: Cityscapes labelId -> train id 0..18, 255 = void/unknown."""
    lut = np.full(256, VOID, dtype=np.uint8)
    for lab in _labels():
        if 0 <= lab.id < 256:
            lut[lab.id] = lab.trainId if 0 <= lab.trainId < 255 else VOID
    return _readonly(lut)


@functools.lru_cache(maxsize=None)
def label_id_to_category_7() -> np.ndarray:
    """uint8 LUT of length 256: Cityscapes labelId -> category 0..6 (see module doc), 255 = void."""
    lut = np.full(256, VOID, dtype=np.uint8)
    for lab in _labels():
        if 0 <= lab.id < 256:
            lut[lab.id] = _category_7(lab)
    return _readonly(lut)


@functools.lru_cache(maxsize=None)
def train_id_to_category_7() -> np.ndarray:
    """uint8 LUT of length 256: train id 0..18 -> category 0..6, 255 -> 255."""
    lut = np.full(256, VOID, dtype=np.uint8)
    for lab in _labels():
        if 0 <= lab.trainId < 255:
            lut[lab.trainId] = _category_7(lab)
    return _readonly(lut)


@functools.lru_cache(maxsize=None)
def train_id_to_label_id() -> np.ndarray:
    """uint8 LUT of length 256: train id 0..18 -> its labelId, 255 (void) -> 0 ('unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    for lab in _labels():
        if 0 <= lab.trainId < 255 and 0 <= lab.id < 256:
            lut[lab.trainId] = lab.id
    return _readonly(lut)


def train_id(name: str) -> int:
    """Train id (0..18) of a Cityscapes class name, e.g. train_id('car') == 13."""
    names = cityscapes_19().names
    if name not in names:
        raise KeyError(f"{name!r} is not one of the 19 Cityscapes classes {names}")
    return names.index(name)


_LAZY = {
    "CITYSCAPES_19": cityscapes_19,
    "CITYSCAPES_7": cityscapes_7,
    "LABEL_ID_TO_TRAIN_ID": label_id_to_train_id,
    "LABEL_ID_TO_CATEGORY_7": label_id_to_category_7,
    "TRAIN_ID_TO_CATEGORY_7": train_id_to_category_7,
    "TRAIN_ID_TO_LABEL_ID": train_id_to_label_id,
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
