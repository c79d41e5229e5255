"""Bad data gives one-line DataErrors that name the file and say what is expected."""
import json
import shutil

import cv2
import numpy as np
import pytest

from mtan_ros.data import DataError, open_dataset, write_preprocessed_tree, write_raw_tree
from mtan_ros.data.camera import CityscapesCamera

SIZE = (16, 32)


@pytest.fixture(scope="module")
def npy_source(tmp_path_factory):
    return write_preprocessed_tree(tmp_path_factory.mktemp("npysrc"), 3, 1, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def raw_source(tmp_path_factory):
    return write_raw_tree(tmp_path_factory.mktemp("rawsrc"), 2, 0, size=SIZE, seed=0)


@pytest.fixture
def npy_tree(npy_source, tmp_path):
    return shutil.copytree(npy_source, tmp_path / "npy")


@pytest.fixture
def raw_tree(raw_source, tmp_path):
    return shutil.copytree(raw_source, tmp_path / "raw")


def _raises(call, path, *words):
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


# --- preprocessed -------------------------------------------------------------------------------

def test_missing_root_split_and_folders(npy_tree, tmp_path):
    _raises(lambda: open_dataset(tmp_path / "nowhere"), tmp_path / "nowhere", "not found")
    _raises(lambda: open_dataset(npy_tree, "test", format="npy"), npy_tree / "test", "no 'test' folder", "expected")
    shutil.rmtree(npy_tree / "train" / "depth")
    _raises(lambda: open_dataset(npy_tree, "train"), npy_tree / "train" / "depth", "folder not found")


def test_unknown_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    _raises(lambda: open_dataset(tmp_path), tmp_path, "not a known dataset layout", "leftImg8bit")


def test_count_mismatch_names_the_missing_file(npy_tree):
    (npy_tree / "train" / "depth" / "1.npy").unlink()
    _raises(lambda: open_dataset(npy_tree), npy_tree / "train" / "depth" / "1.npy", "missing", "3 images but 2")
    (npy_tree / "train" / "label_7" / "7.npy").write_bytes((npy_tree / "train" / "label_7" / "0.npy").read_bytes())
    np.save(npy_tree / "train" / "depth" / "1.npy", np.zeros((*SIZE, 1), np.float32))
    _raises(lambda: open_dataset(npy_tree), npy_tree / "train" / "label_7" / "7.npy", "has no image")


@pytest.mark.parametrize("kind, array, words", [
    ("depth", np.full((*SIZE, 1), np.nan, np.float32), ("NaN",)),
    ("depth", np.zeros((8, 8, 1), np.float32), ("depth is 8x8", "same size")),
    ("depth", np.full((*SIZE, 1), -1.0, np.float32), ("negative",)),
    ("depth", np.zeros((*SIZE, 1), np.int32), ("dtype is int32",)),
    ("image", np.full((*SIZE, 3), np.nan, np.float32), ("NaN",)),
    ("image", np.zeros((*SIZE, 3), np.uint8), ("dtype is uint8", "[0, 1]")),
    ("image", np.full((*SIZE, 3), 200.0, np.float32), ("divide by 255",)),
    ("image", np.zeros((3, *SIZE), np.float32), ("shape", "channels last")),
    ("label_7", np.zeros((8, 8), np.float32), ("label is 8x8",)),
    ("label_7", np.full(SIZE, 0.5, np.float32), ("non-integer",)),
    ("label_7", np.full(SIZE, 9.0, np.float32), ("outside the 7 classes",)),
    ("label_7", np.zeros(SIZE, np.complex64), ("dtype",)),
])
def test_bad_arrays_name_the_file(npy_tree, kind, array, words):
    ds = open_dataset(npy_tree, "train")
    path = npy_tree / "train" / kind / "2.npy"
    np.save(path, array)
    ds[1]  # other samples are fine
    _raises(lambda: ds[2], path, "expected", *words)


def test_unreadable_npy_names_the_file(npy_tree):
    ds = open_dataset(npy_tree, "train")
    path = npy_tree / "train" / "depth" / "0.npy"
    path.write_bytes(b"not a numpy file")
    _raises(lambda: ds[0], path, "cannot read depth .npy")


def test_images_of_different_sizes(npy_tree):
    np.save(npy_tree / "train" / "image" / "2.npy", np.zeros((8, 16, 3), np.float32))
    np.save(npy_tree / "train" / "label_7" / "2.npy", np.zeros((8, 16), np.float32))
    np.save(npy_tree / "train" / "depth" / "2.npy", np.zeros((8, 16, 1), np.float32))
    _raises(lambda: open_dataset(npy_tree)[2], npy_tree / "train" / "image" / "2.npy", "first image is 16x32")
    assert open_dataset(npy_tree, size=SIZE)[2]["image"].shape == (3, *SIZE)


def test_stray_label_values_are_named_before_the_class_set_is_guessed(npy_tree, capsys):
    """Found as: a train label with 200 and -3 made mtan-train say "the train split has classes ['road', ...]
    but the val split has ['flat', ...]" (200 made the plain label folder look like the 19-class set)."""
    from mtan_ros.training import train_cli

    for split in ("train", "val"):
        shutil.rmtree(npy_tree / split / "label_7")  # only the plain label/ folder: classes come from the values
    path = npy_tree / "train" / "label" / "1.npy"
    labels = np.load(path)
    labels[0, :3] = 200
    labels[1, :2] = -3
    np.save(path, labels)
    message = _raises(lambda: open_dataset(npy_tree, "train"), path, "label values [-3, 200]", "0..18",
                      "-1 or 255 for void")
    assert train_cli.main(["--data", str(npy_tree), "--out", str(npy_tree.parent / "run"), "--workers", "0",
                           "--no-progress", "--no-tensorboard", "--no-plots"]) == 2
    assert capsys.readouterr().err == f"mtan-train: error: {message}\n"
    # With the class count given, the same file is refused against that set's range.
    _raises(lambda: open_dataset(npy_tree, "train", num_classes=19)[1], path, "label values [-3, 200]",
            "outside the 19 classes", "0..18")


# --- raw ----------------------------------------------------------------------------------------

FRAME = "synthtown_000000_000001"


def _raw(root, top, suffix):
    return root / top / "train" / "synthtown" / f"{FRAME}{suffix}"


@pytest.mark.parametrize("top, suffix, what", [
    ("gtFine", "_gtFine_labelIds.png", "gtFine labelIds PNG"),
    ("disparity", "_disparity.png", "16-bit disparity PNG"),
    ("camera", "_camera.json", "camera json"),
])
def test_raw_missing_files(raw_tree, top, suffix, what):
    path = _raw(raw_tree, top, suffix)
    path.unlink()
    _raises(lambda: open_dataset(raw_tree), path, "missing", "1 of 2 images", what)


def test_raw_missing_folders(raw_tree):
    shutil.rmtree(raw_tree / "disparity")
    _raises(lambda: open_dataset(raw_tree), raw_tree / "disparity" / "train", "folder not found")
    _raises(lambda: open_dataset(raw_tree, "test", format="raw"), raw_tree / "leftImg8bit" / "test", "folder not found")


@pytest.mark.parametrize("top, suffix, write, words", [
    ("leftImg8bit", "_leftImg8bit.png", lambda p: p.write_bytes(b"\x89PNG garbage"), ("cannot decode",)),
    ("disparity", "_disparity.png", lambda p: p.write_bytes(b""), ("cannot decode",)),
    ("gtFine", "_gtFine_labelIds.png", lambda p: cv2.imwrite(str(p), np.zeros((*SIZE, 3), np.uint8)),
     ("single-channel", "_color")),
    ("disparity", "_disparity.png", lambda p: cv2.imwrite(str(p), np.zeros(SIZE, np.uint8)),
     ("uint8", "16-bit")),
    ("disparity", "_disparity.png", lambda p: cv2.imwrite(str(p), np.zeros((8, 8), np.uint16)),
     ("disparity is 8x8",)),
    ("camera", "_camera.json", lambda p: p.write_text("{not json"), ("cannot read camera json",)),
    ("camera", "_camera.json", lambda p: p.write_text(json.dumps({"intrinsic": {"fx": 1}})),
     ("baseline",)),
])
def test_raw_bad_files_name_the_file(raw_tree, top, suffix, write, words):
    ds = open_dataset(raw_tree, size=SIZE)
    path = _raw(raw_tree, top, suffix)
    write(path)
    ds[0]
    _raises(lambda: ds[1], path, "expected", *words)


def test_camera_json_errors(tmp_path):
    path = tmp_path / "c_camera.json"
    _raises(lambda: CityscapesCamera.from_json(path), path, "not found")
    path.write_text(json.dumps({"extrinsic": {"baseline": -1}, "intrinsic": {"fx": 1, "fy": 1, "u0": 0, "v0": 0}}))
    _raises(lambda: CityscapesCamera.from_json(path), path, "positive")
