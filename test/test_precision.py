"""Reduced precision: the depth tail stays float32, and `auto` is chosen by measurement."""
from __future__ import annotations

import copy

import pytest
import torch

from mtan_ros.depth_encoding import CITYSCAPES_INVERSE
from mtan_ros.inference.backends import TorchBackend
from mtan_ros.inference.benchmark import calibrated_random_model, random_meta, street_images
from mtan_ros.inference.checkpoint import CheckpointMeta, ModelSpec
from mtan_ros.inference.export import inference_model
from mtan_ros.inference.precision import Float32, depth_tail, keep_depth_tail_float32
from mtan_ros.model import ARCHITECTURES

SIZE = (64, 128)


def _meta(arch: str = "mtan") -> CheckpointMeta:
    meta = random_meta(SIZE, 0.125, 7)
    return CheckpointMeta(model=ModelSpec(arch, dict(meta.model.tasks), 0.125), class_names=meta.class_names,
                          class_colors=meta.class_colors, input_size=SIZE, depth=CITYSCAPES_INVERSE)


def _bf16_backend() -> tuple[TorchBackend, CheckpointMeta]:
    meta = _meta()
    model = calibrated_random_model(meta, street_images(SIZE, 2, seed=2))
    return TorchBackend(inference_model(model, meta), torch.device("cpu"), "bf16"), meta


def _scene() -> torch.Tensor:
    return torch.from_numpy(street_images(SIZE, 1, seed=7)[0]).permute(2, 0, 1)[None].float() / 255.0


def _conv_dtypes(network: torch.nn.Module, run) -> dict[str, tuple[torch.dtype, torch.dtype]]:
    """(output dtype, weight dtype) of every convolution of `network` during `run()`; the outputs it returns."""
    seen: dict[str, tuple[torch.dtype, torch.dtype]] = {}

    def record(name):
        return lambda conv, inputs, output: seen.__setitem__(name, (output.dtype, conv.weight.dtype))

    handles = [conv.register_forward_hook(record(name)) for name, conv in network.named_modules()
               if isinstance(conv, torch.nn.Conv2d)]
    with torch.inference_mode():
        outputs = run()
    for handle in handles:
        handle.remove()
    return seen, outputs


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("how", ["cast model", "autocast"])
def test_depth_tail_runs_in_float32_under_bf16(arch, how):
    """The depth tail's convolutions compute in float32 (their outputs say so), all others in bf16.

    "cast model" is the Predictor's bf16 path; "autocast" a float32 model with
    the tail wrapped, run under bf16 autocast (as evaluation with --amp does).
    """
    meta = _meta(arch)
    model = calibrated_random_model(meta, street_images(SIZE, 2, seed=2))
    if how == "cast model":
        backend = TorchBackend(inference_model(model, meta), torch.device("cpu"), "bf16")
        network = backend.model.model
        seen, (logits, depth) = _conv_dtypes(network, lambda: backend(_scene()))
    else:
        wrapper = inference_model(model, meta)
        network = keep_depth_tail_float32(wrapper.model)

        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return wrapper(_scene())

        seen, (logits, depth) = _conv_dtypes(network, run)
    tail = depth_tail(network)
    assert tail and all(isinstance(network.get_submodule(name), Float32) for name in tail)
    in_tail = {name: dtypes for name, dtypes in seen.items() if any(name.startswith(t + ".") for t in tail)}
    assert len(in_tail) >= 2  # the head's 3x3 and 1x1 convolutions at least
    assert set(in_tail.values()) == {(torch.float32, torch.float32)}
    weight = torch.bfloat16 if how == "cast model" else torch.float32
    assert {dtypes for name, dtypes in seen.items() if name not in in_tail} == {(torch.bfloat16, weight)}
    assert depth.dtype == torch.float32 and logits.dtype == torch.bfloat16


def test_depth_tail_adds_no_reduced_precision_error_to_metres():
    """Given the features that reach it, the tail's metres match a float64 evaluation of the same tail.

    Measured largest relative difference (Zen 4): 6.1e-6, float32 rounding
    amplified ~100x where the head's terms nearly cancel (far pixels); the
    bound leaves 16x for other CPUs' kernels. The same head in bf16 misses it
    by orders of magnitude (measured 0.18).
    """
    backend, meta = _bf16_backend()
    head = backend.model.model.heads["depth"]
    captured = []
    head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    with torch.inference_mode():
        _, raw = backend(_scene())
        exact = meta.depth.scale / copy.deepcopy(head.module).double()(captured[0].double())
        in_bf16 = copy.deepcopy(head.module).bfloat16()(captured[0].bfloat16())
    inside = (exact > 0) & (exact <= 100.0)
    assert int(inside.sum()) > 1000

    def worst(raw_depth: torch.Tensor) -> float:
        metres = meta.depth.to_metres(raw_depth.float()).double()
        return float(((metres - exact).abs() / exact)[inside].max())

    assert worst(raw) <= 1e-4
    assert worst(in_bf16) > 1e-2
