"""Class tables and lookup tables derived from the official Cityscapes label table."""
import subprocess
import sys

import numpy as np
import pytest

from mtan_ros.data import classes


def test_19_train_ids_names_and_colours():
    cs = classes.CITYSCAPES_19
    assert cs.num_classes == 19 and cs.names[0] == "road" and cs.names[13] == "car" and cs.names[18] == "bicycle"
    assert cs.colors[0] == (128, 64, 128) and cs.colors[10] == (70, 130, 180)
    assert cs.palette().shape == (19, 3) and cs.palette().dtype == np.uint8


def test_7_categories():
    cs = classes.CITYSCAPES_7
    assert cs.names == ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]
    assert cs.colors[0] == classes.CITYSCAPES_19.colors[0]  # flat drawn in road's colour
    assert cs.palette().shape == (7, 3)
    assert classes.class_set(7) is cs and classes.class_set(19) is classes.CITYSCAPES_19
    assert classes.class_set(2).num_classes == 2


def test_lookup_tables():
    to_train, to_cat = classes.LABEL_ID_TO_TRAIN_ID, classes.LABEL_ID_TO_CATEGORY_7
    train_to_cat, train_to_label = classes.TRAIN_ID_TO_CATEGORY_7, classes.TRAIN_ID_TO_LABEL_ID
    for lut in (to_train, to_cat, train_to_cat, train_to_label):
        assert lut.shape == (256,) and lut.dtype == np.uint8 and not lut.flags.writeable
    # road: labelId 7 -> train id 0 -> category flat (0)
    assert to_train[7] == 0 and train_to_cat[0] == 0 and to_cat[7] == 0
    assert to_train[26] == 13 and to_cat[26] == 6 and train_to_cat[13] == 6  # car, vehicle
    assert to_train[24] == 11 and to_cat[24] == 5  # person, human
    assert to_train[23] == 10 and to_cat[23] == 4  # sky
    assert to_train[0] == 255 and to_cat[0] == 255 and to_cat[5] == 255  # void labels
    assert to_train[9] == 255 and to_cat[9] == 0  # parking: ignored in 19 classes, flat in 7
    assert to_train[200] == 255  # unknown ids are void
    assert set(to_train[to_train != 255]) == set(range(19))
    assert set(to_cat[to_cat != 255]) == set(range(7))
    # train id -> labelId -> train id is the identity
    np.testing.assert_array_equal(to_train[train_to_label[np.arange(19)]], np.arange(19))
    assert train_to_label[255] == 0
    # the two routes to a category agree
    ids = np.array([i for i in range(34) if to_train[i] != 255])
    np.testing.assert_array_equal(train_to_cat[to_train[ids]], to_cat[ids])


def test_colorize():
    rgb = classes.CITYSCAPES_7.colorize(np.array([[0, -1], [6, 255]]))
    assert rgb.shape == (2, 2, 3) and tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)


def test_imports_are_lazy():
    code = ("import sys, mtan_ros.data, mtan_ros.data.classes, mtan_ros.data.synthetic, mtan_ros.data.camera;"
            "print('cityscapesscripts' in sys.modules, 'torch' in sys.modules, 'cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_missing_label_package_gives_a_clear_error(monkeypatch):
    for fn in (classes.cityscapes_19, classes.label_id_to_train_id):
        fn.cache_clear()
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers", None)
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    try:
        with pytest.raises(ImportError, match="pip install cityscapesscripts"):
            classes.cityscapes_19()
    finally:
        monkeypatch.undo()
        classes.cityscapes_19.cache_clear()
        classes.label_id_to_train_id.cache_clear()
