"""Predictor: sizes, dtypes, units, precision, device fallback and bad images."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from conftest import make_checkpoint
from mtan_ros.inference import Predictor, resolve_device, resolve_precision
from mtan_ros.inference.checkpoint import build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.optimize import fold_batchnorm


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _randomise_batchnorm(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("size", [(64, 128), (37, 53), (480, 640), (1, 1)])
def test_outputs_have_the_input_size_dtypes_and_class_range(tiny_checkpoint, size):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    result = predictor(_image(*size))
    assert result.labels.shape == size and result.labels.dtype == np.uint8
    assert result.depth.shape == size and result.depth.dtype == np.float32
    assert result.labels.max() < 7
    assert predictor.num_classes == 7 and predictor.class_colors.shape == (7, 3)


def test_depth_is_the_model_output_converted_to_metres(tmp_path):
    """An inverse-depth checkpoint: metres = scale / raw, NaN where raw <= 0."""
    path = make_checkpoint(tmp_path / "inv.pt", depth_kind="inverse", depth_scale=1.85)
    ckpt = load_checkpoint(path)
    model = _randomise_batchnorm(build_model_from_checkpoint(ckpt))
    image = _image(64, 128, seed=3)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        out = model(x)
    raw = out["depth"][0, 0].numpy()
    expected = np.where(raw > 0, 1.85 / np.where(raw > 0, raw, 1), np.nan).astype(np.float32)
    expected_labels = out["semantic"][0].argmax(0).numpy().astype(np.uint8)

    predictor = Predictor(model, ckpt.meta, device="cpu", precision="fp32")
    result = predictor(image)
    np.testing.assert_array_equal(np.isnan(result.depth), np.isnan(expected))
    valid = ~np.isnan(expected)
    np.testing.assert_allclose(result.depth[valid], expected[valid], rtol=1e-4)
    assert (result.labels == expected_labels).mean() > 0.999


def test_upsampled_outputs_follow_the_model_resolution(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    small = _image(64, 128, seed=5)
    big = cv2.resize(small, (512, 256), interpolation=cv2.INTER_NEAREST)
    low, high = predictor(small), predictor(big)
    np.testing.assert_array_equal(high.labels[::4, ::4], low.labels)


def test_batchnorm_folding_keeps_outputs(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    model = _randomise_batchnorm(build_model_from_checkpoint(ckpt))
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm(model)
        after = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for task in before:
        torch.testing.assert_close(after[task], before[task], rtol=1e-4, atol=1e-4)


def test_batch_equals_single_calls(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    images = [_image(64, 128, seed=1), _image(100, 90, seed=2), _image(64, 128, seed=3)]
    batch = predictor.predict_batch(images)
    assert len(batch) == 3
    for image, result in zip(images, batch):
        single = predictor(image)
        assert (result.labels == single.labels).mean() > 0.999  # ties may break differently per batch size
        scale = np.nanmax(np.abs(single.depth))
        np.testing.assert_allclose(result.depth, single.depth, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
    assert predictor.predict_batch([]) == []


def test_reduced_precision_runs_and_stays_close_to_fp32(tiny_checkpoint):
    """bf16 on a model whose BatchNorm statistics were measured on street scenes.

    Only a loose agreement is asserted: SegNet's max-unpooling makes bf16 flip
    labels on untrained weights (why `auto` keeps fp32 on CPUs).
    """
    from mtan_ros.inference.benchmark import calibrated_random_model, street_images

    meta = load_checkpoint(tiny_checkpoint).meta
    model = calibrated_random_model(meta, street_images((64, 128), 4, seed=2))
    fp32 = Predictor(model, meta, device="cpu", precision="fp32")
    model = calibrated_random_model(meta, street_images((64, 128), 4, seed=2))
    bf16 = Predictor(model, meta, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    image = street_images((64, 128), 1, seed=7)[0]
    a, b = fp32(image), bf16(image)
    assert b.labels.dtype == np.uint8 and b.depth.dtype == np.float32
    assert (a.labels == b.labels).mean() > 0.3  # far above chance agreement of 1/7
    assert b.depth.shape == a.depth.shape


def test_cuda_request_without_cuda_falls_back_to_cpu(tiny_checkpoint, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mtan_ros.inference"):
        assert resolve_device("cuda") == torch.device("cpu")
        predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cuda:0", precision="auto")
    assert predictor.device == "cpu"
    assert predictor.precision == "fp32"
    assert "falling back to CPU" in caplog.text
    assert predictor(_image(64, 128)).labels.shape == (64, 128)
    assert resolve_device("auto") == torch.device("cpu")


def test_bad_arguments_are_clear_errors(tiny_checkpoint):
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="precision 'int4'"):
        resolve_precision("int4", torch.device("cpu"))
    assert resolve_precision("fp16", torch.device("cpu")) in ("bf16", "fp32")
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    cases = [
        (np.zeros((10, 10), np.uint8), "H x W x 3"),
        (np.zeros((10, 10, 4), np.uint8), "H x W x 3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message):
            predictor(image)


def test_close_releases_the_model(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    predictor.close()
    assert predictor.model is None


def test_compiled_predictor_matches_eager(tiny_checkpoint):
    eager = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    compiled = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32", compile=True)
    assert compiled.compiled and not eager.compiled
    image = _image(64, 128, seed=9)
    a, b = eager(image), compiled(image)
    assert (a.labels == b.labels).mean() > 0.999
    scale = np.nanmax(np.abs(a.depth))
    np.testing.assert_allclose(b.depth, a.depth, rtol=1e-3, atol=1e-4 * scale, equal_nan=True)
