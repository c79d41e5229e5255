"""Raw Cityscapes trees: synthetic round trip and a hand-made tree with known metres."""
import json

import cv2
import numpy as np
import pytest

from mtan_ros.data import CITYSCAPES_19, CITYSCAPES_7, SyntheticDataset, open_dataset, write_raw_tree
from mtan_ros.data.camera import CityscapesCamera
from mtan_ros.depth_encoding import METRIC

SIZE = (32, 64)


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory):
    return write_raw_tree(tmp_path_factory.mktemp("raw"), 3, 2, size=SIZE, seed=4)


def test_layout_and_file_types(raw_tree):
    sky_seen = False
    for i in range(3):
        frame = f"synthtown_000000_00000{i}"
        city = {k: raw_tree / k / "train" / "synthtown" for k in ("leftImg8bit", "gtFine", "disparity", "camera")}
        image = cv2.imread(str(city["leftImg8bit"] / f"{frame}_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(city["gtFine"] / f"{frame}_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
        disparity = cv2.imread(str(city["disparity"] / f"{frame}_disparity.png"), cv2.IMREAD_UNCHANGED)
        camera = json.loads((city["camera"] / f"{frame}_camera.json").read_text())
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        assert labels.shape == SIZE and labels.dtype == np.uint8 and set(np.unique(labels)) <= set(range(34))
        assert 7 in labels  # road labelId
        assert disparity.shape == SIZE and disparity.dtype == np.uint16
        assert (disparity[labels == 23] == 0).all() and (disparity[labels == 7] > 1).all()
        sky_seen |= bool((labels == 23).any())
        assert camera["image_size"] == {"width": SIZE[1], "height": SIZE[0]}
        assert camera["extrinsic"]["baseline"] == pytest.approx(0.209313)
        assert camera["intrinsic"]["fx"] == pytest.approx(2262.52 * SIZE[1] / 2048)
    assert sky_seen


@pytest.mark.parametrize("num_classes", [7, 19])
def test_read_back_equals_the_scenes_within_quantisation(raw_tree, num_classes):
    ds = open_dataset(raw_tree, "train", num_classes=num_classes, size=SIZE)
    assert ds.depth_encoding == METRIC and len(ds) == 3
    assert ds.classes == (CITYSCAPES_7 if num_classes == 7 else CITYSCAPES_19)
    ref = SyntheticDataset(3, "train", size=SIZE, num_classes=num_classes, seed=4)
    for i in range(3):
        item, expected = ds[i], ref[i]
        np.testing.assert_allclose(item["image"].numpy(), expected["image"].numpy(), atol=1e-6)
        np.testing.assert_array_equal(item["semantic"].numpy(), expected["semantic"].numpy())
        got, true = item["depth"][0].numpy(), expected["depth"][0].numpy()
        cam = ds.camera(i)
        valid = true > 0
        assert np.array_equal(got > 0, valid)
        # half a quantisation step of disparity (1/512 px) in metres, plus float rounding
        bound = true[valid] ** 2 / (cam.baseline * cam.fx) / 512 * 1.001 + 1e-5 * true[valid]
        assert np.all(np.abs(got[valid] - true[valid]) <= bound)
    assert ds.sample_name(2) == "synthtown_000000_000002"
    assert open_dataset(raw_tree, "val").sample_name(0) == "synthville_000000_000000"


def test_resizing_never_mixes_invalid_depth(tmp_path):
    root = write_raw_tree(tmp_path / "big", 1, 0, size=(64, 128), seed=9)
    full = open_dataset(root, "train", size=(64, 128))[0]["depth"][0].numpy()
    for mode in ("masked_mean", "nearest"):
        ds = open_dataset(root, "train", size=(32, 64), depth_resize=mode)
        small = ds[0]["depth"][0].numpy()
        blocks = full.reshape(32, 2, 64, 2).transpose(0, 2, 1, 3).reshape(32, 64, 4)
        any_valid = (blocks > 0).any(-1)
        if mode == "masked_mean":
            assert np.array_equal(small > 0, any_valid)
        else:
            assert np.all(any_valid[small > 0])
        lo = np.where(blocks > 0, blocks, np.inf).min(-1)
        hi = np.where(blocks > 0, blocks, 0).max(-1)
        ok = small > 0
        assert np.all(small[ok] >= lo[ok] * (1 - 1e-5)) and np.all(small[ok] <= hi[ok] * (1 + 1e-5))
    assert ds.camera(0).size == (32, 64)


def _write_frame(root, split, city, frame, disparity, label_ids, camera_dict):
    h, w = disparity.shape
    paths = {
        "leftImg8bit": (root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png"),
        "gtFine": (root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png"),
        "disparity": (root / "disparity" / split / city / f"{frame}_disparity.png"),
        "camera": (root / "camera" / split / city / f"{frame}_camera.json"),
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 2] = 200  # red in RGB once read (stored BGR)
    assert cv2.imwrite(str(paths["leftImg8bit"]), image)
    assert cv2.imwrite(str(paths["gtFine"]), label_ids.astype(np.uint8))
    assert cv2.imwrite(str(paths["disparity"]), disparity.astype(np.uint16))
    paths["camera"].write_text(json.dumps(camera_dict))
    return paths


def test_hand_made_tree_gives_hand_computed_metres_and_labels(tmp_path):
    # A 2x4 frame whose camera json describes this very image size.
    disparity = np.array([[0, 1, 257, 513], [25601, 65535, 129, 2]], np.uint16)
    label_ids = np.array([[7, 8, 26, 23], [0, 9, 24, 33]], np.uint8)
    camera = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0, "fy": 2000.0, "u0": 2.0, "v0": 1.0},
              "image_size": {"width": 4, "height": 2}}
    _write_frame(tmp_path, "train", "handcity", "handcity_000000_000000", disparity, label_ids, camera)
    ds = open_dataset(tmp_path, "train", size=(2, 4), num_classes=19)
    item = ds[0]
    # metres = baseline * fx / ((p - 1) / 256); p = 0 or 1 -> no depth
    expected = np.array([[0, 0, 400.0, 200.0], [4.0, 0.2 * 2000 * 256 / 65534, 800.0, 0.2 * 2000 * 256]], np.float32)
    np.testing.assert_allclose(item["depth"][0].numpy(), expected, rtol=1e-6)
    # road 0, sidewalk 1, car 13, sky 10 / unlabeled and parking void, person 11, bicycle 18
    np.testing.assert_array_equal(item["semantic"].numpy(), [[0, 1, 13, 10], [-1, -1, 11, 18]])
    cats = open_dataset(tmp_path, "train", size=(2, 4), num_classes=7)[0]["semantic"].numpy()
    # flat, flat, vehicle, sky / void, parking is still flat, human, vehicle
    np.testing.assert_array_equal(cats, [[0, 0, 6, 4], [-1, 0, 5, 6]])
    np.testing.assert_allclose(item["image"][:, 0, 0].numpy(), [200 / 255, 0, 0])
    assert ds.sample_name(0) == "handcity_000000_000000"
    assert ds.camera(0) == CityscapesCamera(2000.0, 2000.0, 2.0, 1.0, 0.2, width=4, height=2)


def test_real_cityscapes_json_means_2048x1024_pixels(tmp_path):
    # Real camera files have no image size: their intrinsics are for 2048x1024.
    disparity = np.zeros((1024, 2048), np.uint16)
    disparity[500, 1000] = 1 + 256 * 50  # 50 px
    disparity[10, 20] = 1 + 128  # 0.5 px
    camera = {"extrinsic": {"baseline": 0.22, "pitch": 0.04},
              "intrinsic": {"fx": 2268.0, "fy": 2260.0, "u0": 1048.0, "v0": 519.0}}
    _write_frame(tmp_path, "val", "realish", "realish_000001_000019", disparity, np.full((1024, 2048), 7), camera)
    ds = open_dataset(tmp_path, "val", size=(1024, 2048))
    depth = ds[0]["depth"][0].numpy()
    assert depth[500, 1000] == pytest.approx(0.22 * 2268.0 / 50, rel=1e-6)
    assert depth[10, 20] == pytest.approx(0.22 * 2268.0 / 0.5, rel=1e-6)
    assert (depth > 0).sum() == 2
    small = open_dataset(tmp_path, "val")  # default 128x256
    assert small.image_size == (128, 256) and small.camera(0).fx == pytest.approx(2268.0 / 8)
    d = small[0]["depth"][0].numpy()
    assert d[500 // 8, 1000 // 8] == pytest.approx(0.22 * 2268.0 / 50, rel=1e-6)  # masked mean of one valid pixel
    assert (d > 0).sum() == 2
