"""Predictor: the pre/post-processing path against a plain reference, sizes, units, buffers, precision."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_checkpoint
from mtan_ros.common import cpu
from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.inference import Predictor, resolve_device
from mtan_ros.benchmarks.inference import FixedOutputs
from mtan_ros.model.checkpoint import CheckpointMeta, ModelSpec, build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.optimize import fold_batchnorm
from mtan_ros.inference.predictor import depth_to_metres_

MODEL_SIZE = (64, 128)


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


def _fixed_predictor(depth_values, encoding=DepthEncoding("metric", 1.0), seed=0, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 7, *MODEL_SIZE, generator=generator)
    depth = torch.as_tensor(depth_values, dtype=torch.float32).reshape(1, 1, *MODEL_SIZE)
    meta = CheckpointMeta(model=ModelSpec("mtan", {"semantic": 7, "depth": 1}, 0.125),
                          class_names=[f"c{i}" for i in range(7)], class_colors=[(i, i, i) for i in range(7)],
                          input_size=MODEL_SIZE, mean=mean, std=std, depth=encoding)
    model = FixedOutputs(logits, depth, record=True)
    return Predictor(model, meta, device="cpu", precision="fp32"), model, logits[0].numpy(), depth[0, 0].numpy()


def _nearest_sources(n_out, n_in):
    """Source index of each output pixel, pixel centres aligned (computed in float32 as the kernels do)."""
    scale = np.float32(n_in / n_out)
    return np.minimum(np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(int), n_in - 1)


def _bilinear(values, size):
    """Bilinear resizing with pixel centres aligned and edges clamped, in float64."""
    def axis(n_out, n_in):
        source = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        first = np.minimum(np.floor(source).astype(int), n_in - 1)
        return first, np.minimum(first + 1, n_in - 1), source - first

    r0, r1, wr = axis(size[0], values.shape[0])
    c0, c1, wc = axis(size[1], values.shape[1])
    v = values.astype(np.float64)
    with np.errstate(invalid="ignore"):  # infinity times a zero weight: NaN, as in the kernels
        rows = v[r0] * (1 - wr)[:, None] + v[r1] * wr[:, None]
        return (rows[:, c0] * (1 - wc) + rows[:, c1] * wc).astype(np.float32)


def _reference_outputs(logits, raw, size, encoding, max_depth=None):
    """Labels: argmax, nearest; depth: bilinear, then metres, then NaN beyond max_depth."""
    low = logits.argmax(0).astype(np.uint8)
    labels = low[_nearest_sources(size[0], low.shape[0])][:, _nearest_sources(size[1], low.shape[1])]
    metres = encoding.to_metres(raw if raw.shape == size else _bilinear(raw, size))
    if max_depth is not None:
        metres = np.where(metres > max_depth, np.float32(np.nan), metres)
    return labels, metres


def _random_depth(seed, invalid_share=0.1):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 60.0, MODEL_SIZE).astype(np.float32)
    depth[rng.random(MODEL_SIZE) < invalid_share] = rng.choice([0.0, -1.0, np.nan])
    return depth


SIZES = [MODEL_SIZE, (128, 256), (200, 300), (1024, 2048), (32, 64), (37, 53), (1, 1)]


def _assert_depth_matches(result, raw, size, encoding, max_depth=None):
    """Equal NaN masks and values, up to float32 rounding of the interpolation weights.

    The kernels compute source coordinates in float32, so each weight is off by
    up to an ulp of the coordinate (~1e-5 at 2048 pixels): the tolerance scales
    with the contrast of the raw values; a pixel that sits on a threshold
    (0, max_depth) may land on either side.
    """
    _, metres = _reference_outputs(np.zeros((1, *raw.shape)), raw, size, encoding, max_depth)
    assert np.mean(np.isnan(result) != np.isnan(metres)) <= 1e-3
    both = ~np.isnan(result) & ~np.isnan(metres)
    interpolated = raw if raw.shape == size else _bilinear(raw, size)
    contrast = float(np.nanmax(np.abs(raw[np.isfinite(raw)])))
    np.testing.assert_allclose(encoding.from_metres(result)[both], interpolated[both], rtol=1e-5,
                               atol=5e-5 * contrast)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["metric", "inverse"])
def test_outputs_equal_the_reference_at_every_size(size, kind):
    encoding = DepthEncoding(kind, 2.5 if kind == "metric" else 0.3)
    raw = _random_depth(seed=1)
    if kind == "inverse":
        with np.errstate(divide="ignore"):
            raw = 1.0 / raw  # 0 becomes infinity: also no estimate
    predictor, _, logits, raw = _fixed_predictor(raw, encoding)
    for max_depth in (None, 40.0):
        result = predictor(_image(40, 70), output_size=size, max_depth=max_depth)
        labels, _ = _reference_outputs(logits, raw, size, encoding, max_depth)
        assert result.labels.dtype == np.uint8 and result.depth.dtype == np.float32
        assert result.labels.shape == size and result.depth.shape == size
        np.testing.assert_array_equal(result.labels, labels)
        _assert_depth_matches(result.depth, raw, size, encoding, max_depth)
        if max_depth is not None:
            assert not (result.depth > max_depth).any()


def test_depth_checks_skipped_by_the_low_resolution_test_give_the_same_result():
    """All raw values valid and within max_depth: no full-resolution pass, still the reference values."""
    raw = np.random.default_rng(3).uniform(1.0, 30.0, MODEL_SIZE).astype(np.float32)
    predictor, _, logits, raw = _fixed_predictor(raw)
    for max_depth in (None, 31.0, 10.0):
        result = predictor(_image(64, 128), output_size=(300, 500), max_depth=max_depth)
        _assert_depth_matches(result.depth, raw, (300, 500), DepthEncoding(), max_depth)
        assert np.isnan(result.depth).any() == (max_depth == 10.0)


@pytest.mark.parametrize("kind", ["metric", "inverse"])
def test_in_place_metres_equal_the_depth_encoding(kind):
    encoding = DepthEncoding(kind, 1.85)
    values = torch.tensor([[2.0, 0.0, -1.0, float("nan"), float("inf"), 1e-3, 40.0, 0.5]])
    expected = encoding.to_metres(values.clone())
    got = depth_to_metres_(values.clone(), values.clone(), encoding)
    torch.testing.assert_close(got, expected, equal_nan=True)
    limited = depth_to_metres_(values.clone(), values.clone(), encoding, max_depth=3.0)
    torch.testing.assert_close(limited, torch.where(expected > 3.0, float("nan"), expected), equal_nan=True)


@pytest.mark.parametrize("max_depth", [None, 3.0])
def test_out_of_range_depth_becomes_nan_and_the_rest_stays_bit_exact(max_depth):
    """The clamp/divide masking against a plain boolean mask, edge values included."""
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(300, 400, generator=generator) * 4.0
    edges = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 3.0, float(np.nextafter(np.float32(3), 4)),
             1e-30, float(np.finfo(np.float32).max)]
    values.view(-1)[:len(edges)] = torch.tensor(edges)
    limit = float(np.finfo(np.float32).max) if max_depth is None else max_depth
    expected = values.clone().masked_fill_(~((values > 0) & (values <= limit)), float("nan"))
    got = depth_to_metres_(values.clone(), values.clone(), DepthEncoding("metric", 1.0), max_depth=max_depth)
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.equal(got.nan_to_num(-7.0), expected.nan_to_num(-7.0))  # bit-exact where kept
    kept = [not bool(v) for v in torch.isnan(got.view(-1)[:len(edges)])]
    assert kept == [False] * 5 + [True, max_depth is None, True, max_depth is None]


@pytest.mark.parametrize("size", [(37, 53), (64, 128), (256, 512), (1024, 2048)])
def test_input_is_resized_antialiased_and_normalised(size):
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    predictor, model, _, _ = _fixed_predictor(_random_depth(0), mean=mean, std=std)
    image = _image(*size, seed=4)
    predictor(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    if size != MODEL_SIZE:
        x = F.interpolate(x, size=MODEL_SIZE, mode="bilinear", align_corners=False,
                          antialias=size[0] > MODEL_SIZE[0])
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (x / 255.0 - mean_t) / std_t
    # Resizing in uint8 (fixed-point weights, results rounded) is within a grey level.
    tolerance = 1.01 / 255.0 / min(std) if size != MODEL_SIZE else 1e-5
    assert model.seen.shape == (1, 3, *MODEL_SIZE)
    assert float((model.seen.double() - expected).abs().max()) <= tolerance


def test_results_are_written_into_the_callers_buffers():
    predictor, _, _, _ = _fixed_predictor(_random_depth(5))
    image = _image(120, 200, seed=6)
    expected = predictor(image, max_depth=30.0)
    labels = np.full((120, 200), 255, np.uint8)
    depth = np.full((120, 200), -7.0, np.float32)
    result = predictor(image, max_depth=30.0, out=(labels, depth))
    assert result.labels is labels and result.depth is depth
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_array_equal(depth, expected.depth)
    # A buffer that is a view of a larger block (as a message's data would be).
    block = np.zeros(120 * 200 * 4 + 16, np.uint8)
    view = block[16:].view(np.float32).reshape(120, 200)
    predictor(image, max_depth=30.0, out=(labels, view))
    np.testing.assert_array_equal(view, expected.depth)


def test_a_batch_writes_each_result_into_its_own_buffers():
    predictor, _, _, _ = _fixed_predictor(_random_depth(5))
    images = [_image(120, 200, seed=6), _image(48, 64, seed=7), _image(90, 160, seed=8)]
    expected = [predictor(image, max_depth=30.0) for image in images]
    buffers = [(np.full(img.shape[:2], 255, np.uint8), np.full(img.shape[:2], -7.0, np.float32)) for img in images]
    buffers[1] = None  # this image's results in new arrays
    results = predictor.predict_batch(images, max_depth=30.0, out=buffers)
    for result, wanted, pair in zip(results, expected, buffers):
        if pair is not None:
            assert result.labels is pair[0] and result.depth is pair[1]
        np.testing.assert_array_equal(result.labels, wanted.labels)
        np.testing.assert_array_equal(result.depth, wanted.depth)
    with pytest.raises(ValueError, match="one entry per image: 1 for 3"):
        predictor.predict_batch(images, out=[None])
    with pytest.raises(ValueError, match=r"shape \(48, 64\)"):
        predictor.predict_batch(images, out=[None, buffers[0], None])


def test_output_size_and_input_size():
    predictor, _, logits, raw = _fixed_predictor(_random_depth(7))
    assert predictor.input_size == MODEL_SIZE
    camera = _image(480, 640, seed=8)
    at_model = predictor(camera, output_size=predictor.input_size)
    assert at_model.labels.shape == MODEL_SIZE and at_model.depth.shape == MODEL_SIZE
    np.testing.assert_array_equal(at_model.labels, logits.argmax(0))
    assert predictor(camera).labels.shape == (480, 640)
    assert predictor(camera, output_size=(10, 20)).depth.shape == (10, 20)


def test_bad_output_arguments_are_clear_errors():
    predictor, _, _, _ = _fixed_predictor(_random_depth(9))
    image = _image(64, 128)
    cases = [
        ({"output_size": (0, 10)}, "output_size"),
        ({"output_size": "big"}, "output_size"),
        ({"max_depth": -1.0}, "max_depth"),
        ({"out": (np.zeros((64, 128), np.uint8),)}, "pair"),
        ({"out": (np.zeros((64, 128), np.uint8), np.zeros((64, 128), np.float64))}, "float32"),
        ({"out": (np.zeros((64, 127), np.uint8), np.zeros((64, 128), np.float32))}, "shape"),
        ({"out": (np.zeros((64, 128), np.uint8), np.zeros((128, 64), np.float32).T)}, "contiguous"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            predictor(image, **kwargs)


@pytest.mark.parametrize("size", [(64, 128), (37, 53), (480, 640), (1, 1)])
def test_outputs_have_the_input_size_dtypes_and_class_range(tiny_checkpoint, size):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    result = predictor(_image(*size))
    assert result.labels.shape == size and result.labels.dtype == np.uint8
    assert result.depth.shape == size and result.depth.dtype == np.float32
    assert result.labels.max() < 7
    assert predictor.num_classes == 7 and predictor.class_colors.shape == (7, 3)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_batch_equals_single_calls(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    images = [_image(64, 128, seed=1), _image(100, 90, seed=2), _image(64, 128, seed=3)]
    batch = predictor.predict_batch(images, max_depth=50.0)
    assert len(batch) == 3
    for image, result in zip(images, batch):
        single = predictor(image, max_depth=50.0)
        assert result.labels.shape == image.shape[:2]
        assert (result.labels == single.labels).mean() > 0.999  # ties may break differently per batch size
        scale = np.nanmax(np.abs(single.depth))
        np.testing.assert_allclose(result.depth, single.depth, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
    assert [r.labels.shape for r in predictor.predict_batch(images, output_size=(20, 30))] == [(20, 30)] * 3
    assert predictor.predict_batch([]) == []


@pytest.mark.slow
def test_reduced_precision_runs_and_stays_close_to_fp32(tiny_checkpoint):
    """bf16 on a model whose BatchNorm statistics were measured on street scenes.

    Only a loose agreement is asserted: on untrained weights SegNet's
    max-unpooling makes bf16 flip many labels (the benchmark judges precision
    by task metrics on a trained model).
    """
    from mtan_ros.benchmarks.inference import calibrated_random_model, street_images

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


def test_cuda_request_without_cuda_falls_back_to_cpu(tiny_checkpoint, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cpu, "CPUINFO", str(tmp_path / "no_cpuinfo"))
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
        Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="int4")
    with pytest.raises(ValueError, match="backend 'tvm'"):
        Predictor.from_checkpoint(tiny_checkpoint, device="cpu", backend="tvm")
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


@pytest.mark.slow
def test_non_contiguous_images_are_accepted(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    bgr = _image(64, 128, seed=11)
    rgb_view = bgr[:, :, ::-1]
    a, b = predictor(rgb_view), predictor(np.ascontiguousarray(rgb_view))
    np.testing.assert_array_equal(a.labels, b.labels)


def test_close_releases_the_model(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    predictor.close()
    assert predictor.model is None


@pytest.mark.slow
def test_compiled_predictor_matches_eager(tiny_checkpoint):
    eager = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    compiled = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32", compile=True)
    assert compiled.compiled and not eager.compiled
    image = _image(64, 128, seed=9)
    a, b = eager(image), compiled(image)
    assert (a.labels == b.labels).mean() > 0.999
    scale = np.nanmax(np.abs(a.depth))
    np.testing.assert_allclose(b.depth, a.depth, rtol=1e-3, atol=1e-4 * scale, equal_nan=True)
