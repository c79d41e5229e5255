"""Reduced precision: the depth tail stays float32, and `auto` is chosen by measurement."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mtan_ros.common import cpu
from mtan_ros.depth_encoding import CITYSCAPES_INVERSE
from mtan_ros.inference.backends import TorchBackend
from mtan_ros.benchmarks.inference import calibrated_random_model, random_meta, street_images
from mtan_ros.model.checkpoint import CheckpointMeta, ModelSpec
from mtan_ros.inference.export import inference_model
from mtan_ros.inference import Predictor, precision
from mtan_ros.inference.precision import (SPEED_MARGIN, Float32, check_scene, choose_precision, compare_to_fp32,
                                          cpu_bf16_flags, depth_tail, keep_depth_tail_float32, static_choice)
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


# --- tolerance -------------------------------------------------------------------------------------
def test_compare_to_fp32_measures_labels_depth_percentile_and_worst_near_and_far():
    reference = np.full((10, 20), 10.0, np.float32)
    reference[:, 10:] = 50.0               # half near (10 m), half far (50 m)
    reference[0, 0] = 150.0                # beyond max_depth: not counted
    depth = reference.copy()
    depth[1, 1] = 10.5                     # 5 % off, near
    depth[2, 15] = 52.0                    # 4 % off, far
    depth[0, 0] = 1000.0                   # outside the range: ignored
    labels = np.zeros((10, 20), np.uint8)
    other = labels.copy()
    other[0, :3] = 1
    agreement = compare_to_fp32(labels, reference, other, depth, max_depth=100.0)
    assert agreement.labels == pytest.approx(197 / 200)
    assert agreement.worst_near_m == pytest.approx(0.5)
    assert agreement.worst_far_m == pytest.approx(2.0)
    assert agreement.depth_p99 == pytest.approx(0.04)  # 199 pixels: the 99th percentile is the second largest
    assert not agreement.acceptable and len(agreement.problems()) == 2
    depth[3, 3] = np.nan                   # no estimate where fp32 has one
    assert compare_to_fp32(labels, reference, labels, depth).worst_near_m == np.inf
    assert compare_to_fp32(labels, reference, labels, reference).acceptable


# --- the choice ------------------------------------------------------------------------------------
def _cpu_flags(monkeypatch, tmp_path, flags):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test cpu\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(cpu, "CPUINFO", str(cpuinfo))


@pytest.mark.parametrize("flags, auto, fp16", [("fpu avx512f avx2", "fp32", "fp32"), (None, "fp32", "fp32"),
                                               ("fpu avx512f avx512_bf16", None, "bf16"),
                                               ("fpu avx512f amx_bf16 amx_tile", None, "bf16")])
def test_static_choices_and_when_auto_measures(monkeypatch, tmp_path, flags, auto, fp16):
    """auto measures only on CPUs with bf16 instructions; other requests pin the precision."""
    _cpu_flags(monkeypatch, tmp_path, flags)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    chosen = static_choice("auto", cpu)
    assert (chosen.precision if chosen else None) == auto
    assert static_choice("fp16", cpu).precision == fp16
    assert static_choice("fp32", cpu).precision == "fp32"
    assert static_choice("bf16", cpu).precision == "bf16"
    assert static_choice("auto", cuda).precision == "fp16"
    assert static_choice("bf16", cuda).precision == "bf16"
    with pytest.raises(ValueError, match="precision 'int4'"):
        static_choice("int4", cpu)


class _FakeBackend:
    """Returns fixed outputs; `depth_factor` scales the raw depth, `flipped` pixels get another label."""

    def __init__(self, precision, depth_factor=1.0, flipped=0):
        self.precision, self.closed = precision, False
        logits = torch.zeros(1, 3, *SIZE)
        logits[:, 1] = 1.0
        logits.view(1, 3, -1)[:, 2, :flipped] = 2.0
        raw = torch.linspace(0.02, 0.5, SIZE[0] * SIZE[1]).view(1, 1, *SIZE)  # 3.7 - 92 m
        self.outputs = (logits, raw * depth_factor)

    def __call__(self, x):
        return self.outputs

    def close(self):
        self.closed = True


@pytest.mark.parametrize("times, depth_factor, flipped, expected, says", [
    ({"fp32": 20.0, "bf16": 10.0}, 1.0, 0, "bf16", "2.00x"),
    ({"fp32": 20.0, "bf16": 19.0}, 1.0, 0, "fp32", "less than the 1.10x needed"),
    ({"fp32": 20.0, "bf16": 10.0}, 1.05, 0, "fp32", "depth 4.76 % off at the 99th percentile within 100 m"),
    ({"fp32": 20.0, "bf16": 10.0}, 1.0, 164, "fp32", "labels 98.0 % equal"),
])
def test_auto_keeps_bf16_only_when_measured_faster_and_within_tolerance(monkeypatch, tmp_path, times, depth_factor,
                                                                        flipped, expected, says):
    _cpu_flags(monkeypatch, tmp_path, "fpu avx512f avx512_bf16")
    monkeypatch.setattr(precision, "check_scene", lambda size, device: torch.zeros(1, 3, *size))

    def fake_timing(calls, synchronize=None):
        for call in calls.values():
            call()
        return {name: [times[name]] * 5 for name in calls}

    monkeypatch.setattr(precision, "time_interleaved", fake_timing)
    made = {}

    def build(wrapper, precision_name):
        changes = (depth_factor, flipped) if precision_name == "bf16" else ()
        made[precision_name] = _FakeBackend(precision_name, *changes)
        return made[precision_name]

    backend, choice = choose_precision("auto", torch.device("cpu"), torch.nn.Identity(), build, CITYSCAPES_INVERSE,
                                       SIZE)
    assert choice.precision == expected and backend is made[expected]
    assert made["fp32" if expected == "bf16" else "bf16"].closed and not backend.closed
    assert choice.timings_ms == times
    assert says in choice.reason and f"medians {times['bf16']:.1f} / {times['fp32']:.1f} ms" in choice.reason
    assert choice.agreement.acceptable == (depth_factor == 1.0 and flipped == 0)


def test_auto_on_this_cpu_follows_its_own_measurement(tiny_checkpoint):
    """Whatever this CPU is: a bf16 choice was measured faster by the margin and within tolerance."""
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="auto")
    choice = predictor.precision_choice
    assert predictor.precision == choice.precision
    if not cpu_bf16_flags():
        assert choice.precision == "fp32" and choice.timings_ms == {}
        return
    assert set(choice.timings_ms) == {"fp32", "bf16"}
    faster = choice.timings_ms["fp32"] / choice.timings_ms["bf16"] >= SPEED_MARGIN
    assert (choice.precision == "bf16") == (faster and choice.agreement.acceptable)
    scene = (check_scene(SIZE, torch.device("cpu"))[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    reference = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")(scene)
    result = predictor(scene)
    assert compare_to_fp32(reference.labels, reference.depth, result.labels, result.depth).acceptable
