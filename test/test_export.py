"""mtan-export writes torch.export programs and ONNX graphs that reproduce the checkpoint's outputs."""
from __future__ import annotations

import inspect
import json
import sys

import pytest
import torch

from conftest import make_checkpoint
from mtan_ros.errors import ExportError
from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from mtan_ros.inference.export import FORMATS, check_close, export, main

pytestmark = pytest.mark.slow


def lively_checkpoint(path, **kwargs):
    """A random checkpoint whose BatchNorm statistics were measured on street scenes.

    With the initial statistics a random network's outputs shrink to ~1e-6, which
    would make any tolerance pass; calibrated ones give outputs of ordinary size.
    """
    from mtan_ros.benchmarks.inference import calibrated_random_model, street_images

    make_checkpoint(path, **kwargs)
    meta = load_checkpoint(path).meta
    model = calibrated_random_model(meta, street_images(tuple(meta.input_size), 4, seed=2))
    return save_checkpoint(path, model.state_dict(), meta)


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
    return lively_checkpoint(tmp_path_factory.mktemp("export") / "lively.pt")


# How an exported graph may differ from the checkpoint's eager model on a correct export. Measured on
# AMD EPYC Zen 4 (2 cores, torch 2.13, onnxruntime CPU), eager model vs BatchNorm-folded eager vs
# torch.export vs ONNX Runtime, 6 calibrated random checkpoints, about 270 images of 64x128:
# |difference| / RMS of the reference output (per output, over the batch) had a median of 3-5e-6 and a
# 99th percentile per image of at most 1.0e-4; the largest single value reached 4e-3 (a 2x2 max-pool
# near-tie whose index flips moves an unpooled value by one pixel). One image in ~270 differed over half
# its area (logits by up to 8.5, 7 % of its labels): such a flip in the deepest pooling reaches the whole
# receptive field. No image had fewer than 99.988 % of its labels equal outside that one.
# Why this holds on any x86-64 CPU: every such CPU computes fp32 convolutions in fp32 (PyTorch and ONNX
# Runtime use no bf16/TF32 for fp32 on x86 unless asked), AVX2 / AVX-512 / FMA or not only change the
# order and rounding of the same sums, and the measurement above already compares different orders
# (oneDNN vs MLAS kernels, folded vs unfolded weights); the bounds leave a 10x margin over it.
NOISE_Q99 = 1e-3  # per image: 99th percentile of |difference| / output RMS (measured <= 1.0e-4)
LABELS_EQUAL = 0.995  # per image: fraction of equal argmax labels (measured >= 0.99988)
# A pooling flip may spoil one whole image; at 1 in ~270 two flips among 4 images happen about once in
# 10^4 runs, while a wrong export (weights, normalisation, pooling, batch handling) spoils every image.
IMAGES = 4


def out_of_noise(reference, got):
    """Indices of the images whose (logits, depth) differ from the reference by more than float32 noise."""
    spoilt = set()
    for ref, out in zip(reference, got):
        ref, out = torch.as_tensor(ref).double(), torch.as_tensor(out).double()
        scale = float(ref.pow(2).mean().sqrt())
        for i in range(ref.shape[0]):
            if float(torch.quantile(((out[i] - ref[i]).abs() / scale).flatten(), 0.99)) > NOISE_Q99:
                spoilt.add(i)
    logits, got_logits = (torch.as_tensor(t) for t in (reference[0], got[0]))
    equal = (logits.argmax(1) == got_logits.argmax(1)).double().mean(dim=(1, 2))
    spoilt.update(i for i in range(len(equal)) if float(equal[i]) < LABELS_EQUAL)
    return sorted(spoilt)


def _reference(checkpoint, x):
    ckpt = load_checkpoint(checkpoint)
    model = build_model_from_checkpoint(ckpt)
    mean = torch.tensor(ckpt.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(ckpt.meta.std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model((x - mean) / std)
    return out["semantic"], out["depth"]


def test_pt2_export_matches_the_model(tmp_path, lively):
    out = tmp_path / "model.pt2"
    assert main(["--checkpoint", str(lively), "--out", str(out)]) == 0
    graph = torch.export.load(str(out)).module()
    x = torch.rand(IMAGES, 3, 64, 128, generator=torch.Generator().manual_seed(3))
    logits, depth = _reference(lively, x)
    with torch.no_grad():  # the program is exported for batch 1
        got = [graph(x[i:i + 1]) for i in range(IMAGES)]
    got_logits, got_depth = torch.cat([g[0] for g in got]), torch.cat([g[1] for g in got])
    assert float(depth.abs().mean()) > 1e-3  # outputs large enough for the tolerance to mean something
    assert got_logits.shape == logits.shape and got_depth.shape == depth.shape
    spoilt = out_of_noise((logits, depth), (got_logits, got_depth))
    assert len(spoilt) <= 1, f"images {spoilt} of {IMAGES} differ from the model beyond float32 noise"
    sidecar = json.loads((tmp_path / "model.pt2.json").read_text())
    assert sidecar["input"]["size"] == [64, 128] and len(sidecar["class_names"]) == 7
    assert sidecar["pooling"] == "indices"


def test_onnx_export_runs_in_onnxruntime_like_torch(tmp_path, lively):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "model.onnx"
    assert main(["--checkpoint", str(lively), "--out", str(out), "--format", "onnx"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["semantic_logits", "depth"]
    x = torch.rand(IMAGES, 3, 64, 128, generator=torch.Generator().manual_seed(4))  # the batch size is free
    logits, depth = _reference(lively, x)
    got_logits, got_depth = session.run(None, {"image": x.numpy()})
    assert float(depth.abs().mean()) > 1e-3
    assert got_logits.shape == tuple(logits.shape) and got_depth.shape == tuple(depth.shape)
    spoilt = out_of_noise((logits, depth), (got_logits, got_depth))
    assert len(spoilt) <= 1, f"images {spoilt} of {IMAGES} differ from the model beyond float32 noise"
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["pooling"] == "masks" and sidecar["input"]["size"] == [64, 128]


def test_the_export_check_forgives_one_pooling_flip_but_not_a_broken_graph():
    g = torch.Generator().manual_seed(0)
    ours = (torch.randn(4, 7, 8, 16, generator=g), torch.rand(4, 1, 8, 16, generator=g) + 0.1)
    theirs = [t * (1 + 1e-5 * torch.randn(t.shape, generator=g)) for t in ours]  # float32-sized noise
    assert 1e-6 < check_close("graph", ours, theirs) < 1e-4
    theirs[0][2] += torch.randn(theirs[0][2].shape, generator=g)  # one image spoilt, as by a deep pooling flip
    assert check_close("graph", ours, theirs) > 0.5
    theirs[1][3] *= 1.01  # a second image 1 % off
    with pytest.raises(ExportError, match="2 of 4 images"):
        check_close("graph", ours, theirs)


def test_default_format_is_one_that_export_supports():
    assert inspect.signature(export).parameters["fmt"].default in FORMATS


def test_onnx_without_its_packages_says_what_to_install(tmp_path, lively, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    with pytest.raises(ExportError, match=r"mtan_ros\[onnx\]"):
        export(str(lively), str(tmp_path / "m.onnx"), "onnx")
    assert main(["--checkpoint", str(lively), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "mtan-export: error: ONNX export needs" in capsys.readouterr().err


def test_export_of_a_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.pt2")]) == 2
    assert "not found" in capsys.readouterr().err
