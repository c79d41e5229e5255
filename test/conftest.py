"""Shared fixtures: small checkpoints made on the fly (no downloads, CPU only)."""
from __future__ import annotations

import pytest


def make_checkpoint(path, *, arch="mtan", width=0.125, input_size=(64, 128), num_classes=7,
                    depth_kind="metric", depth_scale=1.0, seed=0):
    """Write a random-weight checkpoint; returns its path."""
    import torch

    from mtan_ros.data.classes import CITYSCAPES_7, CITYSCAPES_19
    from mtan_ros.depth_encoding import DepthEncoding
    from mtan_ros.model.checkpoint import CheckpointMeta, ModelSpec, save_checkpoint
    from mtan_ros.model import build_model

    classes = {7: CITYSCAPES_7, 19: CITYSCAPES_19}[num_classes]
    torch.manual_seed(seed)
    tasks = {"semantic": num_classes, "depth": 1}
    model = build_model(arch, tasks, width).eval()
    meta = CheckpointMeta(
        model=ModelSpec(arch=arch, tasks=tasks, width=width),
        class_names=list(classes.names),
        class_colors=[tuple(c) for c in classes.colors],
        input_size=tuple(input_size),
        depth=DepthEncoding(depth_kind, depth_scale),
        info={"note": "random weights for tests"},
    )
    return save_checkpoint(path, model.state_dict(), meta)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight width-0.125 7-class MTAN at 64x128 input, fast on CPU."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
