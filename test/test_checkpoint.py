"""Checkpoints: round trip, atomic writes, and refusal of unsafe or damaged files."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from conftest import make_checkpoint
from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.inference.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip_keeps_meta_weights_and_training_state(tmp_path, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    training_state = {"epoch": 3, "optimizer": {"lr": [1e-4]}, "rng": torch.get_rng_state(),
                      "dwa_history": [[1.0, 2.0], [0.5, 1.5]]}
    copy = save_checkpoint(tmp_path / "copy.pt", ckpt.state_dict, ckpt.meta, training_state)
    again = load_checkpoint(copy)
    assert again.meta == ckpt.meta
    assert again.meta.model.tasks == {"semantic": 7, "depth": 1}
    assert again.meta.input_size == (64, 128)
    assert again.meta.depth == DepthEncoding("metric", 1.0)
    assert again.meta.class_names[0] == ckpt.meta.class_names[0] and len(again.meta.class_colors) == 7
    assert set(again.state_dict) == set(ckpt.state_dict)
    for key, value in ckpt.state_dict.items():
        assert torch.equal(again.state_dict[key], value), key
    assert again.training_state["epoch"] == 3
    assert torch.equal(again.training_state["rng"], training_state["rng"])
    assert again.training_state["dwa_history"] == [[1.0, 2.0], [0.5, 1.5]]

    model_a = build_model_from_checkpoint(ckpt)
    model_b = build_model_from_checkpoint(again)
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        out_a, out_b = model_a(x), model_b(x)
    assert torch.equal(out_a["semantic"], out_b["semantic"])
    assert torch.equal(out_a["depth"], out_b["depth"])


class _RunsCode:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "mtan_ros.checkpoint", "version": 1, "meta": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)
    assert not marker.exists()

    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_truncated_file_is_a_one_line_error(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    for fraction in (0.5, 0.9, 0.999):
        cut = tmp_path / f"cut{fraction}.pt"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
            load_checkpoint(cut)
        assert "\n" not in str(info.value)
        assert str(cut) in str(info.value)


def test_foreign_missing_and_garbage_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an mtan_ros checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found; train one with `mtan-train"):
        load_checkpoint(tmp_path / "absent.pt")


def test_weights_that_do_not_fit_the_declared_model(tmp_path, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    other = make_checkpoint(tmp_path / "wide.pt", width=0.25)
    wrong = load_checkpoint(other)
    wrong.state_dict = ckpt.state_dict  # 0.125-width weights under a 0.25-width spec
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model_from_checkpoint(wrong)
    partial = load_checkpoint(tiny_checkpoint)
    partial.state_dict = dict(list(ckpt.state_dict.items())[:-3])
    with pytest.raises(CheckpointError, match="missing 3 weights"):
        build_model_from_checkpoint(partial)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, tiny_checkpoint, monkeypatch):
    target = tmp_path / "last.pt"
    target.write_bytes(tiny_checkpoint.read_bytes())
    before = target.read_bytes()
    ckpt = load_checkpoint(target)

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, ckpt.state_dict, ckpt.meta)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
