"""Predictor's optional confidence: 255 x the softmax probability of each label's class, aligned with the labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.inference import Predictor
from mtan_ros.inference import predictor as predictor_module
from mtan_ros.benchmarks.inference import FixedOutputs
from mtan_ros.model.checkpoint import CheckpointMeta, ModelSpec

MODEL_SIZE = (64, 128)
CLASSES = 7


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _predictor(seed=0):
    """A Predictor whose model returns fixed logits: spread out, with a few certain and a few tied pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, CLASSES, *MODEL_SIZE, generator=generator) * 3.0
    logits[0, :, 0, :8] = 0.0  # all classes tied: 1 / 7
    logits[0, 2, 1, :8] = 60.0  # certain: 255
    depth = torch.full((1, 1, *MODEL_SIZE), 10.0)
    meta = CheckpointMeta(model=ModelSpec("mtan", {"semantic": CLASSES, "depth": 1}, 0.125),
                          class_names=[f"c{i}" for i in range(CLASSES)],
                          class_colors=[(i, i, i) for i in range(CLASSES)], input_size=MODEL_SIZE,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), depth=DepthEncoding("metric", 1.0))
    return Predictor(FixedOutputs(logits, depth), meta, device="cpu", precision="fp32"), logits[0].double().numpy()


def _reference(logits):
    """255 x max softmax in float64, and where its rounding could go either way in float32."""
    shifted = np.exp(logits - logits.max(axis=0))
    scaled = 255.0 * (shifted / shifted.sum(axis=0)).max(axis=0)
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
    return np.round(scaled), near_half


def _nearest_sources(n_out, n_in):
    """Source index of each output pixel, pixel centres aligned (float32 as in the kernels)."""
    scale = np.float32(n_in / n_out)
    return np.minimum(np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(int), n_in - 1)


def test_confidence_is_255_times_the_max_softmax_rounded_at_model_resolution():
    predictor, logits = _predictor()
    result = predictor(_image(48, 96), output_size=MODEL_SIZE, confidence=True)
    expected, near_half = _reference(logits)
    assert result.confidence.dtype == np.uint8 and result.confidence.shape == MODEL_SIZE
    difference = result.confidence.astype(int) - expected
    assert not difference[~near_half].any()
    assert np.abs(difference).max() <= 1
    assert (result.confidence[0, :8] == 36).all()  # round(255 / 7)
    assert (result.confidence[1, :8] == 255).all()
    # 1 / num_classes is the least the top class can have.
    assert result.confidence.min() >= 36 and result.confidence.max() == 255
    np.testing.assert_array_equal(result.labels, logits.argmax(0))


@pytest.mark.parametrize("size", [(480, 640), (37, 53), (200, 100), (1, 1)])
def test_confidence_is_resized_like_the_labels(size):
    predictor, _ = _predictor(seed=1)
    image = _image(120, 160)
    low = predictor(image, output_size=MODEL_SIZE, confidence=True)
    result = predictor(image, output_size=size, confidence=True)
    assert result.confidence.shape == result.labels.shape == size
    rows, cols = _nearest_sources(size[0], MODEL_SIZE[0]), _nearest_sources(size[1], MODEL_SIZE[1])
    np.testing.assert_array_equal(result.labels, low.labels[rows][:, cols])
    np.testing.assert_array_equal(result.confidence, low.confidence[rows][:, cols])


def test_confidence_costs_nothing_unless_asked(monkeypatch):
    predictor, _ = _predictor()

    def refuse(*_args):
        raise AssertionError("confidence computed without being asked for")

    monkeypatch.setattr(predictor_module, "label_confidence", refuse)
    assert predictor(_image(64, 128)).confidence is None
    assert all(p.confidence is None for p in predictor.predict_batch([_image(64, 128), _image(30, 40)]))


def test_confidence_with_caller_buffers_and_batches():
    predictor, _ = _predictor(seed=2)
    images = [_image(90, 120, seed=3), _image(30, 50, seed=4)]
    single = [predictor(image, confidence=True) for image in images]
    batch = predictor.predict_batch(images, confidence=True)
    for one, many in zip(single, batch):
        np.testing.assert_array_equal(one.confidence, many.confidence)
    labels, depth = np.empty((90, 120), np.uint8), np.empty((90, 120), np.float32)
    written = predictor(images[0], out=(labels, depth), confidence=True)
    assert written.labels is labels
    np.testing.assert_array_equal(written.confidence, single[0].confidence)


def test_confidence_of_a_real_model(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    result = predictor(_image(100, 150), confidence=True)
    assert result.confidence.shape == (100, 150) and result.confidence.dtype == np.uint8
    assert result.confidence.min() >= round(255 / predictor.num_classes)
