"""mtan-export writes torch.export programs and ONNX graphs that reproduce the checkpoint's outputs."""
from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest
import torch

from conftest import make_checkpoint
from mtan_ros.errors import ExportError
from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from mtan_ros.inference.export import FORMATS, export, main

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
    x = torch.rand(1, 3, 64, 128)
    logits, depth = _reference(lively, x)
    with torch.no_grad():
        got_logits, got_depth = graph(x)
    assert float(depth.abs().mean()) > 1e-3  # outputs large enough for the tolerance to mean something
    torch.testing.assert_close(got_logits, logits, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(got_depth, depth, rtol=1e-3, atol=1e-3)
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
    x = torch.rand(3, 3, 64, 128, generator=torch.Generator().manual_seed(4))  # the batch size is free
    logits, depth = _reference(lively, x)
    got_logits, got_depth = session.run(None, {"image": x.numpy()})
    assert float(depth.abs().mean()) > 1e-3
    np.testing.assert_allclose(got_logits, logits.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got_depth, depth.numpy(), rtol=1e-3, atol=1e-3)
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["pooling"] == "masks" and sidecar["input"]["size"] == [64, 128]


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
