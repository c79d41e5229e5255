"""Backends: ONNX Runtime gives the torch backend's results; mask pooling equals index pooling bitwise."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mtan_ros.errors import ConfigError
from mtan_ros.inference import Predictor
from mtan_ros.inference import backends
from mtan_ros.inference.backends import choose_providers, onnxruntime_precision, resolve_backend
from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.export import main as export_main
from mtan_ros.model import build_model, set_pooling
from mtan_ros.model.blocks import IndexPooling, MaskPooling
from test_export import lively_checkpoint

pytestmark = pytest.mark.slow


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_mask_pooling_equals_index_pooling_bitwise_ties_included():
    x = torch.randint(0, 3, (2, 5, 8, 12)).float()  # small integers: many ties in each 2x2 window
    pooled, indices = IndexPooling()(x)
    pooled_m, masks = MaskPooling()(x)
    assert torch.equal(pooled, pooled_m)
    assert int(masks.sum()) == pooled.numel()  # exactly one position per window
    y = torch.rand(2, 5, 4, 6)
    assert torch.equal(IndexPooling().unpool(y, indices), MaskPooling().unpool(y, masks))
    torch.manual_seed(0)
    model = build_model("mtan", {"semantic": 7, "depth": 1}, 0.125).eval()
    masked = set_pooling(copy.deepcopy(model), "masks")
    assert model.state_dict().keys() == masked.state_dict().keys()
    images = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        a, b = model(images), masked(images)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="pooling 'max'"):
        set_pooling(model, "max")


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return lively_checkpoint(tmp_path_factory.mktemp("backends") / "lively.pt")


def _assert_same_results(a, b):
    """Equal within float32 rounding, which differs between the runtimes' kernels (as for the export check)."""
    assert (a.labels == b.labels).mean() > 0.999  # a near-tie may flip between runtimes
    assert np.mean(np.isnan(a.depth) != np.isnan(b.depth)) < 1e-3  # a value on the max_depth threshold too
    both = ~np.isnan(a.depth) & ~np.isnan(b.depth)
    np.testing.assert_allclose(a.depth[both], b.depth[both], rtol=1e-3, atol=1e-3)


def test_onnxruntime_backend_equals_the_torch_backend_on_cpu(lively, tmp_path):
    torch_backend = Predictor.from_checkpoint(lively, device="cpu", precision="fp32")
    in_memory = Predictor.from_checkpoint(lively, device="cpu", backend="auto")  # onnxruntime where installed
    assert in_memory.backend == "onnxruntime" and in_memory.precision == "fp32" and in_memory.model is None
    onnx_file = tmp_path / "lively.onnx"
    assert export_main(["--checkpoint", str(lively), "--out", str(onnx_file)]) == 0
    from_file = Predictor.from_checkpoint(lively, device="cpu", backend="onnxruntime", onnx_path=onnx_file)
    for seed, size in enumerate([(64, 128), (480, 640), (50, 70)]):
        image = _image(*size, seed=seed)
        reference = torch_backend(image, max_depth=5.0)
        _assert_same_results(in_memory(image, max_depth=5.0), reference)
        _assert_same_results(from_file(image, max_depth=5.0), reference)
    batch = in_memory.predict_batch([_image(64, 128, seed=7), _image(64, 128, seed=8)])
    _assert_same_results(batch[1], torch_backend(_image(64, 128, seed=8)))


def test_onnx_file_of_another_input_size_is_refused(lively, tmp_path):
    other = lively_checkpoint(tmp_path / "other.pt", input_size=(32, 64))
    onnx_file = tmp_path / "other.onnx"
    assert export_main(["--checkpoint", str(other), "--out", str(onnx_file)]) == 0
    with pytest.raises(ConfigError, match="export it again"):
        Predictor.from_checkpoint(lively, device="cpu", backend="onnxruntime", onnx_path=onnx_file)


def test_provider_and_precision_choice():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(cpu, everything) == ["CPUExecutionProvider"]
    assert choose_providers(gpu, everything) == everything
    assert choose_providers(gpu, everything[1:]) == everything[1:]
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        choose_providers(gpu, ["CPUExecutionProvider"])
    assert onnxruntime_precision("auto", everything) == "fp16"
    assert onnxruntime_precision("auto", everything[1:]) == "fp32"
    assert onnxruntime_precision("fp16", everything[1:]) == "fp32"
    assert onnxruntime_precision("bf16", ["CPUExecutionProvider"]) == "fp32"


@pytest.mark.parametrize("installed", [True, False])
def test_auto_backend_is_onnxruntime_only_for_fp32_on_cpus_where_installed(monkeypatch, installed):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object() if installed else None)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    expected = "onnxruntime" if installed else "torch"
    assert resolve_backend("auto", cpu, "auto", False)[0] == expected
    assert resolve_backend("auto", cpu, "fp32", False)[0] == expected
    assert resolve_backend("auto", cpu, "bf16", False) == ("torch", "backend auto runs torch for precision=bf16")
    assert resolve_backend("auto", cpu, "fp32", True)[0] == "torch"
    assert resolve_backend("auto", gpu, "auto", False)[0] == "torch"
    assert resolve_backend("onnxruntime", cpu, "bf16", True) == ("onnxruntime", "backend=onnxruntime")
    if not installed:
        assert "onnxruntime, onnx, onnxscript" in resolve_backend("auto", cpu, "auto", False)[1]
    with pytest.raises(ValueError, match="backend 'tvm'"):
        resolve_backend("tvm", cpu, "auto", False)


def test_mask_pooling_option_keeps_the_predictions(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    predictor = Predictor(build_model_from_checkpoint(ckpt), ckpt.meta, device="cpu", precision="fp32",
                          pooling="masks")
    reference = Predictor(build_model_from_checkpoint(ckpt), ckpt.meta, device="cpu", precision="fp32")
    image = _image(64, 128, seed=3)
    np.testing.assert_array_equal(predictor(image).labels, reference(image).labels)
