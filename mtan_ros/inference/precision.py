"""Reduced precision that keeps metric depth in metres right, and `precision: auto` chosen by measurement.

The network predicts inverse depth. Its last layers sum terms much larger than
a far pixel's small inverse depth, so bf16's 8-bit mantissa leaves an absolute
error there that becomes hundreds of per cent once the value is inverted
(measured through the Predictor: per-pixel differences of thousands of metres
against fp32 while labels stayed 98-99 % equal). The depth tail therefore runs
in float32 whatever the rest of the model runs in.

That is not enough on its own: bf16 rounding makes near-equal values in a 2x2
max-pooling window equal, the first one wins, and max-unpooling then puts the
decoder's values elsewhere; depth far away changes by far more than 1 % (and
fp32 itself does the same under input noise of half a grey level). So `auto`
keeps a reduced precision only where it is measured both faster and within
tolerance of fp32 on this model (`choose_precision`).
"""
from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from mtan_ros.common.cpu import BF16_FLAGS, cpu_bf16_flags  # noqa: F401 (re-exported)
from mtan_ros.data.synthetic import generate_scene
from mtan_ros.model import SegNetMTAN, SegNetSingle, SegNetSplit

LOG = logging.getLogger("mtan_ros.inference")

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# A reduced precision must be this much faster to be chosen: timings on a shared 2-core machine scatter by
# several per cent between runs, and a precision change costs accuracy.
SPEED_MARGIN = 1.10
# Within tolerance of fp32 (the auto choice, the benchmark's "acceptable" column and the tests use these):
MIN_LABEL_AGREEMENT = 0.99     # share of pixels with fp32's label
MAX_DEPTH_P99_RELATIVE = 0.01  # 99th percentile of |d - d_fp32| / d_fp32 over pixels with d_fp32 in (0, max_depth]
CHECK_MAX_DEPTH_M = 100.0      # the node's default max_depth
NEAR_M = 20.0                  # near / far boundary of the worst-difference columns
# Warm-up timing of the candidates: at least MIN_RUNS interleaved pairs, more while under TIME_BUDGET_S.
WARMUP_RUNS = 2
MIN_RUNS = 5
MAX_RUNS = 15
TIME_BUDGET_S = 3.0
CHECK_SCENE_SEED = 20261207


class Float32(nn.Module):
    """Runs `module` in float32 with autocast off: its inputs are upcast, its weights stay float32.

    Its output is float32, so only what ends the network may be wrapped (or
    what feeds other wrapped modules and elementwise products, which promote
    to float32): a reduced-precision layer after it would get float32 inputs.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(inputs[0].device.type, enabled=False):
            return self.module(*(x.float() for x in inputs))


def cast_outside_float32(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating parameters and buffers to `dtype` except inside Float32 wrappers; returns `model`."""
    if isinstance(model, Float32):
        return model
    model._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
    for child in model.children():
        cast_outside_float32(child, dtype)
    return model


def depth_tail(model: nn.Module) -> list[str]:
    """Names of the modules that end the depth branch: the depth head and, in MTAN, its last decoder mask.

    Measured on width-0.25 MTANs trained 1 and 4 epochs (bf16 in one part,
    float32 elsewhere): the depth head alone moved the 99th percentile of the
    metre difference by 2.5 / 1.8 %, the last depth decoder mask by 3.4 / 1.4 %,
    the other depth masks by less than 0.2 % together. Both cost under 4 % of
    the network's FLOPs.
    """
    if isinstance(model, SegNetMTAN):
        return ["heads.depth", f"decoder_attention.depth.{len(model.decoder_attention['depth']) - 1}"]
    if isinstance(model, SegNetSplit):
        return ["heads.depth"]
    if isinstance(model, SegNetSingle):
        return ["networks.depth.1"]
    return []


def keep_depth_tail_float32(model: nn.Module) -> nn.Module:
    """Wrap `model`'s depth tail (see depth_tail) in Float32, in place; returns `model`."""
    for name in depth_tail(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        parent.register_module(child, Float32(parent.get_submodule(child)))
    return model


@dataclass(frozen=True)
class Agreement:
    """How far a reduced precision's outputs are from fp32's on the same images."""

    labels: float        # share of pixels with fp32's label
    depth_p99: float     # 99th percentile of the relative metre difference (see MAX_DEPTH_P99_RELATIVE)
    worst_near_m: float  # largest metre difference where fp32 says < NEAR_M (inf: no estimate where fp32 has one)
    worst_far_m: float   # the same from NEAR_M to max_depth
    max_depth: float

    def problems(self) -> list[str]:
        """What is outside tolerance, as short phrases; empty when within."""
        found = []
        if not self.labels >= MIN_LABEL_AGREEMENT:
            found.append(f"labels {self.labels * 100:.1f} % equal (needs >= {MIN_LABEL_AGREEMENT * 100:g} %)")
        if not self.depth_p99 <= MAX_DEPTH_P99_RELATIVE:
            found.append(f"depth {_percent(self.depth_p99)} off at the 99th percentile within {self.max_depth:g} m "
                         f"(needs <= {MAX_DEPTH_P99_RELATIVE * 100:g} %)")
        return found

    @property
    def acceptable(self) -> bool:
        return not self.problems()


def _percent(value: float) -> str:
    return "inf %" if math.isinf(value) else f"{value * 100:.3g} %"


def compare_to_fp32(reference_labels: np.ndarray, reference_depth: np.ndarray, labels: np.ndarray,
                    depth: np.ndarray, max_depth: float = CHECK_MAX_DEPTH_M) -> Agreement:
    """Agreement of (labels, depth in metres) with fp32's, over pixels whose fp32 depth is in (0, max_depth].

    Depth must not be cut at max_depth (a far value is a difference, not a
    gap); a NaN where fp32 has a depth counts as an infinite difference.
    """
    reference_depth = np.asarray(reference_depth, dtype=np.float64)
    inside = np.isfinite(reference_depth) & (reference_depth > 0) & (reference_depth <= max_depth)
    difference = np.abs(np.asarray(depth, dtype=np.float64) - reference_depth)
    difference = np.where(np.isnan(difference) & inside, np.inf, difference)
    near = inside & (reference_depth < NEAR_M)
    far = inside & (reference_depth >= NEAR_M)
    relative = difference[inside] / reference_depth[inside]
    return Agreement(
        labels=float(np.mean(np.asarray(labels) == np.asarray(reference_labels))),
        depth_p99=float(np.quantile(relative, 0.99, method="higher")) if relative.size else 0.0,
        worst_near_m=float(difference[near].max()) if near.any() else 0.0,
        worst_far_m=float(difference[far].max()) if far.any() else 0.0,
        max_depth=float(max_depth))


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a Predictor runs at, why, and the measurements behind it (empty when nothing was timed)."""

    precision: str
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # median per candidate
    agreement: Agreement | None = None                          # the reduced candidate against fp32

    def __str__(self) -> str:
        return f"{self.precision}: {self.reason}"


def static_choice(requested: str, device: torch.device) -> PrecisionChoice | None:
    """The choice where nothing needs measuring; None for `auto` on a CPU with bf16 instructions."""
    requested = (requested or "auto").strip().lower()
    if requested not in PRECISIONS:
        raise ValueError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if requested == "auto":
            return PrecisionChoice("fp16", "auto on CUDA takes fp16 without timing it")
        return PrecisionChoice(requested, f"precision={requested}")
    flags = cpu_bf16_flags()
    if requested == "fp32":
        return PrecisionChoice("fp32", "precision=fp32")
    if requested == "bf16":
        if flags:
            return PrecisionChoice("bf16", "precision=bf16")
        LOG.warning("precision bf16: this CPU reports neither %s, so bf16 is emulated", " nor ".join(BF16_FLAGS))
        return PrecisionChoice("bf16", f"precision=bf16 (this CPU reports neither {' nor '.join(BF16_FLAGS)})")
    if requested == "fp16":
        precision = "bf16" if flags else "fp32"
        LOG.warning("precision fp16 runs as %s on CPUs", precision)
        return PrecisionChoice(precision, f"precision=fp16 runs as {precision} on CPUs "
                                          f"({', '.join(flags) if flags else 'no bf16 instructions'})")
    if not flags:
        return PrecisionChoice("fp32", f"this CPU reports neither {' nor '.join(BF16_FLAGS)}: not timed")
    return None


def check_image(input_size: tuple[int, int]) -> np.ndarray:
    """A synthetic street scene, H x W x 3 uint8 RGB: the input of warm-up timings and accuracy checks."""
    return generate_scene(CHECK_SCENE_SEED, size=tuple(input_size)).image


def check_scene(input_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """check_image as a 1 x 3 x H x W float batch in [0, 1], as the Predictor hands it to a backend."""
    image = check_image(input_size)
    return (torch.from_numpy(image).permute(2, 0, 1)[None].float() * (1.0 / 255.0)).to(device)  # as the Predictor


def time_interleaved(calls: dict[str, Callable[[], Any]], synchronize: Callable[[], None] = lambda: None,
                     ) -> dict[str, list[float]]:
    """Milliseconds per call, alternating the calls so that load on the machine hits all alike."""
    for _ in range(WARMUP_RUNS):
        for call in calls.values():
            call()
    synchronize()
    times: dict[str, list[float]] = {name: [] for name in calls}
    begin = time.perf_counter()
    while True:
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            synchronize()
            times[name].append((time.perf_counter() - start) * 1000.0)
        runs = len(times[name])
        if runs >= MAX_RUNS or runs >= MIN_RUNS and time.perf_counter() - begin > TIME_BUDGET_S:
            return times


def choose_precision(requested: str, device: torch.device, wrapper: nn.Module,
                     build: Callable[[nn.Module, str], Any], depth_encoding: Any,
                     input_size: tuple[int, int]) -> tuple[Any, PrecisionChoice]:
    """The backend to run and why: `build(wrapper, precision)` makes one.

    `auto` on a CPU with bf16 instructions builds fp32 and bf16, times them
    interleaved on a synthetic street scene at the input size, compares their
    outputs, and keeps bf16 only when it is SPEED_MARGIN faster and within
    tolerance of fp32; the other backend is closed.
    """
    choice = static_choice(requested, device)
    if choice is not None:
        return build(wrapper, choice.precision), choice
    backends = {"fp32": build(copy.deepcopy(wrapper), "fp32"), "bf16": build(wrapper, "bf16")}
    scene = check_scene(input_size, device)
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def call(name: str) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = backends[name](scene)
        return run

    with torch.inference_mode():
        times = time_interleaved({name: call(name) for name in backends})
    medians = {name: statistics.median(values) for name, values in times.items()}
    agreement = compare_to_fp32(*_labels_and_metres(outputs["fp32"], depth_encoding),
                                *_labels_and_metres(outputs["bf16"], depth_encoding))
    speedup = medians["fp32"] / medians["bf16"]
    measured = (f"bf16 ran at {speedup:.2f}x the speed of fp32 (medians {medians['bf16']:.1f} / "
                f"{medians['fp32']:.1f} ms, {len(times['fp32'])} interleaved runs at "
                f"{input_size[0]}x{input_size[1]})")
    if speedup < SPEED_MARGIN:
        precision, reason = "fp32", f"{measured}, less than the {SPEED_MARGIN:.2f}x needed"
    elif not agreement.acceptable:
        precision, reason = "fp32", (f"{measured}, but on a synthetic street scene: "
                                     f"{'; '.join(agreement.problems())}")
    else:
        precision, reason = "bf16", f"{measured}, within tolerance of fp32 on a synthetic street scene"
    backends.pop("fp32" if precision == "bf16" else "bf16").close()
    return backends[precision], PrecisionChoice(precision, reason, medians, agreement)


def _labels_and_metres(outputs: tuple[torch.Tensor, torch.Tensor], encoding: Any) -> tuple[np.ndarray, np.ndarray]:
    logits, raw = outputs
    return (logits.float().argmax(dim=1).cpu().numpy(), encoding.to_metres(raw.float()).cpu().numpy())
