"""Synthetic street scenes: deterministic, exact pinhole depth, sane labels."""
import numpy as np
import pytest

from mtan_ros.data import CityscapesCamera, DEFAULT_CAMERA, generate_scene, scene_rng
from mtan_ros.data import synthetic as syn
from mtan_ros.data.classes import cityscapes_19, train_id

SIZE = (64, 128)


def _scene(seed=0, index=0, size=SIZE):
    return generate_scene(scene_rng(seed, "train", index), size)


def test_same_seed_same_arrays_and_different_seed_differs():
    a, b = _scene(3, 1), _scene(3, 1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.depth, b.depth)
    c = _scene(4, 1)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)
    # an int seed works like a fresh generator
    np.testing.assert_array_equal(generate_scene(7, SIZE).image, generate_scene(np.random.default_rng(7), SIZE).image)


def test_scene_rng_separates_splits_and_indices():
    first = scene_rng(0, "train", 0).random()
    assert first == scene_rng(0, "train", 0).random()
    assert first != scene_rng(0, "val", 0).random()
    assert first != scene_rng(0, "train", 1).random()
    with pytest.raises(ValueError, match="split"):
        scene_rng(0, "nope", 0)


def test_train_id_constants_match_the_official_table():
    for name, const in [("road", syn.ROAD), ("sidewalk", syn.SIDEWALK), ("building", syn.BUILDING),
                        ("wall", syn.WALL), ("fence", syn.FENCE), ("pole", syn.POLE),
                        ("traffic light", syn.LIGHT), ("traffic sign", syn.SIGN),
                        ("vegetation", syn.VEGETATION), ("terrain", syn.TERRAIN), ("sky", syn.SKY),
                        ("person", syn.PERSON), ("car", syn.CAR), ("truck", syn.TRUCK), ("bus", syn.BUS)]:
        assert train_id(name) == const


@pytest.mark.parametrize("index", range(6))
def test_scene_arrays_types_ranges_and_depth_validity(index):
    scene = _scene(0, index)
    h, w = SIZE
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
    assert scene.labels.shape == (h, w) and scene.labels.dtype == np.uint8
    assert scene.depth.shape == (h, w) and scene.depth.dtype == np.float32
    assert set(np.unique(scene.labels)) <= set(syn.DRAWN_TRAIN_IDS) | {syn.VOID}
    invalid = (scene.labels == syn.SKY) | (scene.labels == syn.VOID)
    assert np.all(np.isnan(scene.depth[invalid]))
    surface = scene.depth[~invalid]
    assert np.all(np.isfinite(surface)) and np.all(surface > 0.3) and np.all(surface < 300)
    assert scene.camera.size == SIZE
    assert 1.2 <= scene.camera_height <= 1.5


def test_ground_depth_is_the_pinhole_plane_depth_and_grows_towards_the_horizon():
    checked = 0
    for index in range(5):
        scene = _scene(1, index)
        cam, h, pitch = scene.camera, scene.camera_height, scene.pitch
        rows = np.arange(SIZE[0], dtype=np.float64)
        yd = (rows - cam.v0) / cam.fy
        # ray (xd, yd, 1) in the camera; ground plane h below the camera pitched down by `pitch`
        expected = h / (yd * np.cos(pitch) + np.sin(pitch))
        road = scene.labels == syn.ROAD
        r, c = np.nonzero(road)
        np.testing.assert_allclose(scene.depth[r, c], expected[r], rtol=1e-4)
        for col in range(0, SIZE[1], 8):
            rr = np.nonzero(road[:, col])[0]
            if len(rr) > 3:
                d = scene.depth[rr, col]
                assert np.all(np.diff(d) < 0), "depth must fall from the horizon towards the bottom row"
                checked += 1
    assert checked > 10


def test_scenes_contain_the_main_street_classes():
    seen = set()
    for index in range(8):
        seen |= set(np.unique(_scene(2, index).labels).tolist())
    for name in ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole"):
        assert train_id(name) in seen, name


def test_any_size_and_default_camera_scaling():
    scene = generate_scene(5, (50, 70))
    assert scene.image.shape == (50, 70, 3)
    cam = DEFAULT_CAMERA.scaled(50, 70)
    assert scene.camera == cam
    with pytest.raises(ValueError):
        generate_scene(5, (2, 70))


def test_colours_differ_between_classes():
    """A small CNN must be able to tell classes apart: mean colours differ."""
    sums, counts = np.zeros((19, 3)), np.zeros(19)
    for index in range(6):
        s = _scene(3, index, (128, 256))
        for k in (syn.ROAD, syn.VEGETATION, syn.SKY, syn.BUILDING):
            m = s.labels == k
            sums[k] += s.image[m].sum(0)
            counts[k] += m.sum()
    means = {k: sums[k] / max(counts[k], 1) for k in (syn.ROAD, syn.VEGETATION, syn.SKY, syn.BUILDING)}
    assert means[syn.VEGETATION][1] > means[syn.VEGETATION][2] + 20  # green
    assert means[syn.SKY][2] > means[syn.ROAD][2] + 40  # sky bright and blue-ish, road dark
    assert np.abs(means[syn.ROAD] - means[syn.VEGETATION]).max() > 20


def test_camera_defaults_and_scaling():
    cam = DEFAULT_CAMERA
    assert (cam.fx, cam.fy, cam.u0, cam.v0, cam.baseline) == (2262.52, 2265.30, 1096.98, 513.137, 0.209313)
    assert cam.size == (1024, 2048)
    small = cam.scaled(128, 256)
    assert small.fx == pytest.approx(2262.52 / 8) and small.fy == pytest.approx(2265.30 / 8)
    assert small.u0 == pytest.approx((1096.98 + 0.5) / 8 - 0.5)
    assert small.baseline == cam.baseline and small.size == (128, 256)
    np.testing.assert_allclose(small.K, [[small.fx, 0, small.u0], [0, small.fy, small.v0], [0, 0, 1]])
    np.testing.assert_allclose(small.scaled(1024, 2048).K, cam.K, rtol=1e-12)
    assert isinstance(cityscapes_19().names, list)


def test_camera_json_round_trip(tmp_path):
    cam = CityscapesCamera(2000.0, 2001.0, 1000.0, 500.0, 0.2).scaled(64, 128)
    cam.to_json(tmp_path / "c.json")
    assert CityscapesCamera.from_json(tmp_path / "c.json") == cam


def test_supersampled_image_is_the_mean_of_its_rays_and_labels_depth_stay_at_pixel_centres():
    plain = generate_scene(5, SIZE)
    smooth = generate_scene(5, SIZE, supersample=3)
    fine = generate_scene(5, (SIZE[0] * 3, SIZE[1] * 3))  # the same scene, 3 x 3 rays per pixel
    assert smooth.camera == plain.camera
    np.testing.assert_array_equal(smooth.labels, plain.labels)
    np.testing.assert_array_equal(np.isnan(smooth.depth), np.isnan(plain.depth))
    np.testing.assert_allclose(smooth.depth, plain.depth, rtol=1e-6)
    box = fine.image.reshape(SIZE[0], 3, SIZE[1], 3, 3).astype(np.float32).mean(axis=(1, 3))
    assert np.abs(smooth.image.astype(np.float32) - box).max() <= 0.5 + 1e-3  # rounded to uint8
    edges = np.abs(plain.image.astype(int) - smooth.image).mean()
    assert edges > 1.0  # aliased object edges are averaged
    for bad in (0, 2, 1.5):
        with pytest.raises(ValueError, match="odd"):
            generate_scene(5, SIZE, supersample=bad)


def test_trees_record_their_supersampling(tmp_path):
    from mtan_ros.data import open_dataset, write_preprocessed_tree

    root = write_preprocessed_tree(tmp_path / "tree", n_train=1, n_val=1, size=SIZE, supersample=3)
    image = open_dataset(root, split="train")[0]["image"].permute(1, 2, 0).numpy()
    expected = generate_scene(scene_rng(0, "train", 0), SIZE, supersample=3).image / np.float32(255.0)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    with pytest.raises(FileExistsError):
        write_preprocessed_tree(tmp_path / "tree", n_train=1, n_val=1, size=SIZE, supersample=1)
