"""mtan-export writes a torch.export program that reproduces the checkpoint's outputs."""
from __future__ import annotations

import json

import torch

from mtan_ros.inference.checkpoint import build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.export import main


def test_pt2_export_matches_the_model(tmp_path, tiny_checkpoint):
    out = tmp_path / "model.pt2"
    assert main(["--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    graph = torch.export.load(str(out)).module()
    model = build_model_from_checkpoint(load_checkpoint(tiny_checkpoint))
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        logits, depth = graph(x)
        expected = model(x)
    torch.testing.assert_close(logits, expected["semantic"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(depth, expected["depth"], rtol=1e-4, atol=1e-4)
    sidecar = json.loads((tmp_path / "model.pt2.json").read_text())
    assert sidecar["input"]["size"] == [64, 128] and len(sidecar["class_names"]) == 7


def test_export_of_a_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.pt2")]) == 2
    assert "not found" in capsys.readouterr().err
