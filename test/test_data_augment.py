"""Scale-crop and flip augmentation: geometry, depth units, determinism."""
import numpy as np
import pytest
import torch

from mtan_ros.data import SyntheticDataset
from mtan_ros.data.augment import augment_sample, random_flip, random_scale_crop
from mtan_ros.depth_encoding import CITYSCAPES_INVERSE, METRIC

H, W = 16, 32


def _sample():
    image = torch.rand(3, H, W)
    semantic = torch.arange(H * W, dtype=torch.int64).reshape(H, W) % 7
    semantic[0, :5] = -1
    depth = torch.full((1, H, W), 10.0)
    depth[0, 7:9, :] = 0.0  # inside every 1/1.5 crop
    return image, semantic, depth


@pytest.mark.parametrize("encoding, expected", [(METRIC, 10.0 / 1.5), (CITYSCAPES_INVERSE, 10.0 * 1.5)])
def test_scale_moves_depth_in_the_direction_of_the_encoding(encoding, expected):
    image, semantic, depth = _sample()
    _, _, out = random_scale_crop(image, semantic, depth, np.random.default_rng(0), scales=(1.5,),
                                  depth_encoding=encoding)
    values = np.unique(out.numpy())
    assert values[0] == 0.0 and len(values) == 2  # invalid stays 0
    assert values[1] == pytest.approx(expected)


def test_scale_one_is_the_identity():
    image, semantic, depth = _sample()
    out = random_scale_crop(image, semantic, depth, np.random.default_rng(1), scales=(1.0,))
    torch.testing.assert_close(out[0], image)
    assert torch.equal(out[1], semantic) and torch.equal(out[2], depth)


def test_crop_is_a_window_enlarged_with_nearest_labels():
    image, _, depth = _sample()
    ids = torch.arange(H * W, dtype=torch.int64).reshape(H, W)
    for seed in range(5):
        img, lab, dep = random_scale_crop(image, ids, depth, np.random.default_rng(seed), scales=(2.0,))
        assert img.shape == (3, H, W) and lab.shape == (H, W) and dep.shape == (1, H, W) and lab.dtype == torch.int64
        top, left = divmod(int(lab[0, 0]), W)
        window = ids[top:top + H // 2, left:left + W // 2]
        assert torch.equal(lab, window.repeat_interleave(2, 0).repeat_interleave(2, 1))
        # the image is the same window, bilinearly enlarged (its mean is close to the window's)
        crop = image[:, top:top + H // 2, left:left + W // 2]
        assert img.mean().item() == pytest.approx(crop.mean().item(), abs=0.02)


def test_flip_flips_all_three_together():
    image, semantic, depth = _sample()
    depth[0, :, 0] = 3.0
    img, lab, dep = random_flip(image, semantic, depth, np.random.default_rng(0), probability=1.0)
    assert torch.equal(img, image.flip(-1)) and torch.equal(lab, semantic.flip(-1)) and torch.equal(dep, depth.flip(-1))
    assert (dep[0, :, -1] == 3.0).all()
    same = random_flip(image, semantic, depth, np.random.default_rng(0), probability=0.0)
    assert all(a is b for a, b in zip(same, (image, semantic, depth)))


@pytest.mark.parametrize("make", [np.random.default_rng, lambda s: torch.Generator().manual_seed(s)])
def test_deterministic_under_a_seed(make):
    image, semantic, depth = _sample()
    item = {"image": image, "semantic": semantic, "depth": depth}
    a = augment_sample(item, make(3), METRIC)
    b = augment_sample(item, make(3), METRIC)
    for key in a:
        assert torch.equal(a[key], b[key])
    outs = [augment_sample(item, make(s), METRIC)["image"] for s in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_dataset_augmentation_is_reproducible_per_epoch():
    ds = SyntheticDataset(2, size=(32, 64), seed=0, augment=True, augment_seed=11)
    first = ds[1]
    assert torch.equal(first["image"], ds[1]["image"]) and torch.equal(first["depth"], ds[1]["depth"])
    plain = SyntheticDataset(2, size=(32, 64), seed=0)[1]
    assert first["image"].shape == plain["image"].shape and first["semantic"].dtype == torch.int64
    changed = False
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        changed |= not torch.equal(ds[1]["image"], first["image"])
    assert changed
    torch.manual_seed(0)
    unseeded = SyntheticDataset(2, size=(32, 64), seed=0, augment=True)
    x = unseeded[0]["image"]
    torch.manual_seed(0)
    assert torch.equal(unseeded[0]["image"], x)
