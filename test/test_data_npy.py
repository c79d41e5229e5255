"""Preprocessed (npy) trees: written from synthetic scenes and read back."""
import shutil

import numpy as np
import pytest
import torch

from mtan_ros.data import (CITYSCAPES_19, CITYSCAPES_7, DataError, SyntheticDataset, open_dataset,
                           write_preprocessed_tree)
from mtan_ros.depth_encoding import CITYSCAPES_INVERSE

SIZE = (32, 64)


@pytest.fixture(scope="module")
def tree7(tmp_path_factory):
    return write_preprocessed_tree(tmp_path_factory.mktemp("npy7"), 4, 2, size=SIZE, num_classes=7, seed=5)


def test_release_file_format(tree7):
    image = np.load(tree7 / "train" / "image" / "0.npy")
    label = np.load(tree7 / "train" / "label" / "0.npy")
    depth = np.load(tree7 / "train" / "depth" / "0.npy")
    assert image.shape == (*SIZE, 3) and image.dtype.kind == "f" and 0 <= image.min() and image.max() <= 1
    assert label.shape == SIZE and label.dtype.kind == "f"
    assert set(np.unique(label)) <= set(range(-1, 7))
    np.testing.assert_array_equal(label, np.load(tree7 / "train" / "label_7" / "0.npy"))
    assert depth.shape == (*SIZE, 1) and depth.min() >= 0 and np.isfinite(depth).all()
    assert (depth == 0).any() and (depth > 0).any()  # sky is invalid
    assert sorted(p.name for p in (tree7 / "val" / "image").iterdir()) == ["0.npy", "1.npy"]


def test_read_back_equals_the_synthetic_scenes(tree7):
    ds = open_dataset(tree7, "train")
    assert len(ds) == 4 and ds.image_size == SIZE
    assert ds.classes == CITYSCAPES_7 and ds.classes.num_classes == 7
    assert ds.depth_encoding == CITYSCAPES_INVERSE
    ref = SyntheticDataset(4, split="train", size=SIZE, num_classes=7, seed=5)
    for i in range(4):
        item, expected = ds[i], ref[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, *SIZE)
        assert item["semantic"].dtype == torch.int64 and item["semantic"].shape == SIZE
        assert item["depth"].dtype == torch.float32 and item["depth"].shape == (1, *SIZE)
        torch.testing.assert_close(item["image"], expected["image"])
        assert torch.equal(item["semantic"], expected["semantic"])
        metres = ds.depth_encoding.to_metres(item["depth"])
        valid = expected["depth"] > 0
        assert torch.equal(item["depth"] > 0, valid)
        torch.testing.assert_close(metres[valid], expected["depth"][valid], rtol=1e-5, atol=0)
    assert ds.sample_name(3) == "train/3"
    assert open_dataset(tree7, "val").sample_name(1) == "val/1"


def test_19_classes_from_folder_name_and_forced_7(tmp_path):
    root = write_preprocessed_tree(tmp_path / "t", 2, 1, size=SIZE, num_classes=19, seed=0)
    assert (root / "train" / "label_19").is_dir()
    ds = open_dataset(root, "train")
    assert ds.classes == CITYSCAPES_19 and ds.label_dir == "label_19"
    assert int(max(ds[i]["semantic"].max() for i in range(2))) >= 7
    # forcing 7 classes on 19-class labels names the offending file
    shutil.rmtree(root / "train" / "label_19")
    with pytest.raises(DataError, match=r"label[/\\]0\.npy: label values .* outside the 7 classes"):
        open_dataset(root, "train", num_classes=7)[0]


def test_7_vs_19_detected_from_label_range(tmp_path):
    for classes in (7, 19):
        root = write_preprocessed_tree(tmp_path / str(classes), 3, 1, size=SIZE, num_classes=classes, seed=1)
        shutil.rmtree(root / "train" / f"label_{classes}")  # only the plain label/ folder is left
        ds = open_dataset(root, "train")
        assert ds.label_dir == "label" and ds.classes.num_classes == classes
        assert open_dataset(root, "train", num_classes=19).classes.num_classes == 19


def test_numeric_file_order(tmp_path):
    root = tmp_path / "n"
    for sub in ("image", "label", "depth"):
        (root / "train" / sub).mkdir(parents=True)
    for i in range(12):
        np.save(root / "train" / "image" / f"{i}.npy", np.full((*SIZE, 3), i / 20, np.float32))
        np.save(root / "train" / "label" / f"{i}.npy", np.zeros(SIZE, np.float32))
        np.save(root / "train" / "depth" / f"{i}.npy", np.full((*SIZE, 1), 0.1, np.float32))
    ds = open_dataset(root, "train", format="npy")
    assert [ds.sample_name(i) for i in range(12)] == [f"train/{i}" for i in range(12)]
    assert [round(float(ds[i]["image"][0, 0, 0]) * 20) for i in range(12)] == list(range(12))


def test_depth_scale_override_and_resizing(tree7):
    ds = open_dataset(tree7, "train", depth_scale=2.5)
    assert ds.depth_encoding.kind == "inverse" and ds.depth_encoding.scale == 2.5
    big = open_dataset(tree7, "train", size=(64, 128))
    item = big[0]
    assert big.image_size == (64, 128) and item["image"].shape == (3, 64, 128)
    assert item["semantic"].shape == (64, 128) and item["depth"].shape == (1, 64, 128)
    stored = np.load(tree7 / "train" / "depth" / "0.npy")[..., 0]
    assert set(np.unique(item["depth"].numpy())) <= set(np.unique(stored))  # nothing blended


def test_writer_reuses_a_finished_tree_and_refuses_to_mix(tmp_path):
    root = write_preprocessed_tree(tmp_path / "r", 2, 1, size=SIZE, seed=0)
    stamp = (root / "train" / "image" / "0.npy").stat().st_mtime_ns
    write_preprocessed_tree(root, 2, 1, size=SIZE, seed=0)
    assert (root / "train" / "image" / "0.npy").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_preprocessed_tree(root, 3, 1, size=SIZE, seed=0)
    write_preprocessed_tree(root, 1, 1, size=SIZE, seed=0, overwrite=True)
    assert len(open_dataset(root, "train")) == 1


def test_synthetic_dataset_items():
    ds = open_dataset(None, "val", format="synthetic", length=3, size=SIZE, seed=2)
    assert len(ds) == 3 and ds.depth_encoding.kind == "metric" and ds.sample_name(2) == "synthetic_val_000002"
    item = ds[0]
    assert item["semantic"].min() >= -1 and item["semantic"].max() < 7
    assert (item["depth"] >= 0).all() and (item["depth"] > 0).any()
    assert ds.camera(0).size == SIZE


def test_empty_split_is_not_written(tmp_path):
    root = write_preprocessed_tree(tmp_path / "e", 1, 0, size=SIZE)
    assert not (root / "val").exists()
    with pytest.raises(DataError, match="no 'val' folder"):
        open_dataset(root, "val")
