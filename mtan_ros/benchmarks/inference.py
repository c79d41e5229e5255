"""Predictor speed and accuracy per precision and backend, against fp32 eager, measured in one run.

    python -m mtan_ros.benchmarks.inference [--checkpoint best.pt] [--data DIR] [--images 32]
        [--precisions fp32,bf16,auto] [--backends torch,onnxruntime] [--variants masks,channels_first]
        [--compile] [--max-depth 100] [--camera 1024x2048]

Reduced precision and other backends are judged by what they do to the task
metrics and to depth in metres, not by label agreement alone: every
configuration predicts the same validation set (synthetic street scenes by
default, or the `val` split of --data) and the table gives, next to fp32
eager's, its mIoU, its depth absolute error in metres over ground truth within
--max-depth, the share of labels equal to fp32's, how far its depth is from
fp32's (99th percentile of the relative difference, worst pixel near and far)
and whether that is within tolerance (mtan_ros.inference.precision: labels
>= 99 % equal, depth <= 1 % off at the 99th percentile); rows outside it say
NOT acceptable. Configurations are timed interleaved, frame by frame, so that
load on the machine hits all alike; the ratios are the numbers to compare.

Without --checkpoint the model has random weights (BatchNorm statistics
calibrated on synthetic scenes): timings hold, but agreement and metric deltas
then say nothing about a trained model, and the output says so.

A second table times only the pre- and post-processing at a camera size
(--camera) with the model's input size: the Predictor's torch path against
the previous OpenCV/numpy path, with the model replaced by fixed outputs.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mtan_ros.common.entry import run_command
from mtan_ros.errors import ConfigError
from mtan_ros.inference.backends import BACKENDS, onnxruntime_providers
from mtan_ros.model.checkpoint import CheckpointMeta, ModelSpec, build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.precision import NEAR_M, Agreement, compare_to_fp32, cpu_bf16_flags
from mtan_ros.inference.predictor import Predictor, resolve_device
from mtan_ros.data import open_dataset
from mtan_ros.data.synthetic import generate_scene
from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors
from mtan_ros.model import build_model

RANDOM_WEIGHTS_NOTE = ("RANDOM WEIGHTS (no --checkpoint): latency holds, but label agreement and metric deltas "
                       "say nothing about a trained model; pass --checkpoint for those")


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not HEIGHTxWIDTH, e.g. 256x512") from None
    return height, width


def street_images(size: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [generate_scene(rng, size=size).image for _ in range(count)]


def calibrated_random_model(meta: CheckpointMeta, images: list[np.ndarray]) -> torch.nn.Module:
    """Random weights with BatchNorm statistics measured on real-looking inputs."""
    torch.manual_seed(0)
    model = build_model(meta.model.arch, dict(meta.model.tasks), meta.model.width)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for image in images:
            model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0)
    return model.eval()


def random_meta(size: tuple[int, int], width: float, classes: int) -> CheckpointMeta:
    return CheckpointMeta(model=ModelSpec("mtan", {"semantic": classes, "depth": 1}, width),
                          class_names=[f"class{i}" for i in range(classes)],
                          class_colors=[(i, i, i) for i in range(classes)], input_size=size)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_interleaved(calls: list[Callable[[np.ndarray], object]], images: list[np.ndarray], warmup: int,
                     iters: int) -> list[list[float]]:
    """Latency in ms of each call, alternating calls so that load on the machine hits all alike."""
    for index in range(warmup):
        for call in calls:
            call(images[index % len(images)])
    times: list[list[float]] = [[] for _ in calls]
    for index in range(iters):
        for slot, call in enumerate(calls):
            start = time.perf_counter()
            call(images[index % len(images)])
            times[slot].append((time.perf_counter() - start) * 1000.0)
    return times


# --- validation data and metrics -------------------------------------------------------------
@dataclass
class Sample:
    image: np.ndarray   # H x W x 3 uint8
    labels: np.ndarray  # H x W int64, -1 = void
    metres: np.ndarray  # H x W float32, 0 = no ground truth


def validation_set(meta: CheckpointMeta, data: str | None, count: int) -> tuple[list[Sample], str]:
    """`count` samples of synthetic scenes at the model's size, or of DIR's val split; and a description."""
    if data:
        dataset = open_dataset(data, split="val")
    else:
        dataset = open_dataset(None, split="val", format="synthetic", length=count, size=tuple(meta.input_size),
                               num_classes=meta.num_classes, seed=0)
    if dataset.num_classes != meta.num_classes:
        raise ConfigError(f"the validation data has {dataset.num_classes} classes, the model {meta.num_classes}")
    samples = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        image = (item["image"].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        metres = dataset.depth_encoding.to_metres(item["depth"][0].numpy())
        samples.append(Sample(np.ascontiguousarray(image), item["semantic"].numpy(),
                              np.nan_to_num(metres, nan=0.0).astype(np.float32)))
    if not samples:
        raise ConfigError(f"'{data}' has no val images")
    return samples, dataset.describe()


@dataclass
class Scores:
    miou: float
    abs_err_m: float  # metres, over ground truth within max_depth
    labels: list[np.ndarray] = field(repr=False)
    depth: list[np.ndarray] = field(repr=False)  # metres, not cut at max_depth


def score(predictor: Predictor, samples: list[Sample], max_depth: float) -> Scores:
    """Whole-split mIoU (as mtan-eval defines it) and depth absolute error in metres within max_depth."""
    confusion, depth_m = ConfusionMatrix(predictor.num_classes), DepthErrors()
    labels, depths = [], []
    for sample in samples:
        prediction = predictor(sample.image, output_size=sample.labels.shape)
        confusion.update(prediction.labels.astype(np.int64), sample.labels)
        depth_m.update(prediction.depth, np.where(sample.metres <= max_depth, sample.metres, np.float32(0.0)))
        labels.append(prediction.labels)
        depths.append(prediction.depth)
    return Scores(confusion.miou(), depth_m.abs_err(), labels, depths)


def agreement(scores: Scores, reference: Scores, max_depth: float) -> Agreement:
    """The configuration's labels and metres against fp32 eager's, over the whole validation set."""
    return compare_to_fp32(np.concatenate([x.ravel() for x in reference.labels]),
                           np.concatenate([x.ravel() for x in reference.depth]),
                           np.concatenate([x.ravel() for x in scores.labels]),
                           np.concatenate([x.ravel() for x in scores.depth]), max_depth)


# --- configurations --------------------------------------------------------------------------
VARIANTS = {"masks": {"pooling": "masks"}, "channels_first": {"channels_last": False}}


@dataclass
class Config:
    backend: str
    precision: str
    compiled: bool = False
    variant: str = ""

    @property
    def name(self) -> str:
        extra = f" {self.variant}" if self.variant else ""
        return f"{self.backend}{' compiled' if self.compiled else ''} {self.precision}{extra}"


def configurations(device: torch.device, backends: list[str], precisions: list[str], compiled: bool,
                   variants: list[str] = ()) -> list[Config]:
    """fp32 eager first (the reference); then every other backend x precision (x variant) that exists on `device`."""
    configs = [Config("torch", "fp32")]
    for precision in precisions:
        if precision == "fp16" and device.type == "cpu":
            continue  # the Predictor runs fp16 requests on CPUs as bf16 or fp32
        if "torch" in backends and precision != "fp32":
            configs.append(Config("torch", precision))
        if "torch" in backends:
            configs.extend(Config("torch", precision, variant=variant) for variant in variants)
        if compiled:
            configs.append(Config("torch", precision, compiled=True))
        if "onnxruntime" in backends and (precision == "fp32" or device.type == "cuda" and precision == "fp16"):
            configs.append(Config("onnxruntime", precision))
        if "auto" in backends and precision == "auto":
            configs.append(Config("auto", "auto"))  # the node's default configuration
    return configs


def build(config: Config, model: torch.nn.Module, meta: CheckpointMeta, device: torch.device) -> Predictor:
    return Predictor(copy.deepcopy(model), meta, device=device, precision=config.precision, backend=config.backend,
                     compile=config.compiled, **VARIANTS.get(config.variant, {}))


def accuracy_table(args: argparse.Namespace, model: torch.nn.Module, meta: CheckpointMeta,
                   device: torch.device, samples: list[Sample]) -> list[str]:
    configs = configurations(device, args.backends, args.precisions, args.compile, args.variants)
    predictors, lines = [], []
    for config in configs:
        try:
            predictors.append((config, build(config, model, meta, device)))
        except Exception as exc:  # one backend missing or failing must not hide the others
            lines.append(f"| {config.name} | skipped: {str(exc).splitlines()[0][:120]} |")
    images = [s.image for s in samples]
    times = time_interleaved([p for _, p in predictors], images, args.warmup, args.iters)
    reference_ms = statistics.median(times[0])
    max_depth = args.max_depth
    reference = score(predictors[0][1], samples, max_depth)
    header = ("backend precision", "ran as", "p50 ms", "p95 ms", "speed-up vs fp32 eager", "labels = fp32",
              "mIoU %", "Δ mIoU points", f"depth abs err m (GT <= {max_depth:g} m)", "Δ m",
              "depth vs fp32, p99 relative", f"worst m, fp32 < {NEAR_M:g} m", f"worst m, {NEAR_M:g}-{max_depth:g} m",
              "acceptable")
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (config, predictor), ms in zip(predictors, times):
        scores = reference if predictor is predictors[0][1] else score(predictor, samples, max_depth)
        against = agreement(scores, reference, max_depth)
        verdict = "yes" if against.acceptable else "NOT acceptable: " + "; ".join(against.problems())
        rows.append(f"| {config.name} | {predictor.backend} {predictor.precision} | {percentile(ms, 50):.1f} | "
                    f"{percentile(ms, 95):.1f} | {reference_ms / statistics.median(ms):.2f}x | "
                    f"{against.labels * 100:.2f}% | {scores.miou * 100:.2f} | "
                    f"{(scores.miou - reference.miou) * 100:+.2f} | {scores.abs_err_m:.3f} | "
                    f"{scores.abs_err_m - reference.abs_err_m:+.3f} | {against.depth_p99 * 100:.3g}% | "
                    f"{against.worst_near_m:.3g} | {against.worst_far_m:.3g} | {verdict} |")
    for config, predictor in predictors:
        if config.precision == "auto":
            lines.append(f"{config.name}: {predictor.precision_choice}")
    return rows + lines


# --- pre/post-processing: the torch path against the previous OpenCV/numpy one -----------------
class FixedOutputs(torch.nn.Module):
    """Stands in for the model, so that only the work around it is timed (or tested).

    Returns the same logits (1 x C x h x w) and raw depth (1 x 1 x h x w) for any
    input; with `record`, keeps the last input it was given in `.seen`.
    """

    def __init__(self, logits: torch.Tensor, depth: torch.Tensor, record: bool = False):
        super().__init__()
        self.register_buffer("logits", logits)
        self.register_buffer("depth", depth)
        self.record = record
        self.seen: torch.Tensor | None = None

    @classmethod
    def random(cls, meta: CheckpointMeta, seed: int = 0) -> "FixedOutputs":
        generator = torch.Generator().manual_seed(seed)
        size = tuple(meta.input_size)
        return cls(torch.randn(1, meta.num_classes, *size, generator=generator),
                   torch.rand(1, 1, *size, generator=generator) * 40.0 + 1.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.record:
            self.seen = x.detach().float().clone()
        n = x.shape[0]
        return {"semantic": self.logits.expand(n, -1, -1, -1), "depth": self.depth.expand(n, -1, -1, -1)}


def opencv_path(meta: CheckpointMeta, outputs: FixedOutputs) -> Callable[[np.ndarray], tuple]:
    """The Predictor's previous CPU path: OpenCV resizing and numpy unit conversion around the model."""
    import cv2  # cv2: +0.13 s, measured with -X importtime; only the OpenCV comparison

    height, width = meta.input_size
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(meta.std).view(1, 3, 1, 1)

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.stack([small])).permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)
        x = ((x - mean) * inv_std).contiguous(memory_format=torch.channels_last)
        out = outputs(x)
        labels = out["semantic"].argmax(dim=1).to(torch.uint8)[0].numpy()
        raw = out["depth"][:, 0].float()[0].numpy()
        labels = cv2.resize(labels, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        raw = cv2.resize(raw, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        return labels, meta.depth.to_metres(raw)

    return run


def prepost_table(meta: CheckpointMeta, camera: tuple[int, int], warmup: int, iters: int) -> list[str]:
    outputs = FixedOutputs.random(meta)
    predictor = Predictor(outputs, meta, device="cpu", precision="fp32")
    labels, depth = np.empty(camera, np.uint8), np.empty(camera, np.float32)
    calls = {
        "OpenCV/numpy (previous)": opencv_path(meta, outputs),
        "torch path": predictor,
        "torch path, out= buffers": lambda image: predictor(image, out=(labels, depth)),
        "torch path, max_depth=80": lambda image: predictor(image, max_depth=80.0),
    }
    image = street_images(camera, 1, seed=5)[0]
    times = time_interleaved(list(calls.values()), [image], warmup, iters)
    base = statistics.median(times[0])
    rows = [f"| pre+post at {camera[0]}x{camera[1]} -> {meta.input_size[0]}x{meta.input_size[1]} | p50 ms | "
            "p95 ms | speed-up vs previous |", "|---|---|---|---|"]
    for name, ms in zip(calls, times):
        rows.append(f"| {name} | {percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} | "
                    f"{base / statistics.median(ms):.2f}x |")
    return rows


def machine_line(device: torch.device) -> str:
    load = ", load average {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    cuda = f"CUDA {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "no CUDA"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cuda}, CPU bf16 instructions: "
            f"{', '.join(cpu_bf16_flags()) or 'none'}, {os.cpu_count()} CPUs{load}; "
            f"onnxruntime providers: {', '.join(onnxruntime_providers()) or 'not installed'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtan_ros.benchmarks.inference",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random weights; see above)")
    parser.add_argument("--data", help="dataset folder whose val split to score on (default: synthetic scenes)")
    parser.add_argument("--images", type=int, default=32, help="validation images (default: 32)")
    parser.add_argument("--size", type=parse_size, default=(128, 256), help="input size of the random model")
    parser.add_argument("--width", type=float, default=1.0, help="channel width of the random model")
    parser.add_argument("--classes", type=int, default=7, help="classes of the random model (7 or 19)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated (default: fp32,bf16 on CPUs; fp32,fp16,bf16 on CUDA)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: torch,onnxruntime,auto (auto: with --precisions ...,auto a row for "
                             "backend and precision auto, the node's default)")
    parser.add_argument("--variants", default="",
                        help="comma-separated torch rows per precision besides the defaults: masks (2x2 one-hot "
                             "pooling masks), channels_first")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (slow to build)")
    parser.add_argument("--max-depth", type=float, default=100.0,
                        help="metres: depth errors count ground truth up to this, and fp32 depth up to this is "
                             "compared (default 100, the node's max_depth)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--camera", type=parse_size, default=(1024, 2048),
                        help="camera size for the pre/post-processing table")
    parser.add_argument("--no-prepost", action="store_true", help="skip the pre/post-processing table")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        raise ConfigError(f"--backends {','.join(unknown)}: choose from {', '.join(BACKENDS)}")
    default_precisions = "fp32,fp16,bf16" if device.type == "cuda" else "fp32,bf16"
    args.precisions = [p.strip() for p in (args.precisions or default_precisions).split(",") if p.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"--variants {','.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        meta, model = ckpt.meta, build_model_from_checkpoint(ckpt, source=f"checkpoint '{args.checkpoint}'")
        weights = f"checkpoint {args.checkpoint} (width {meta.model.width}, {meta.num_classes} classes)"
    else:
        meta = random_meta(args.size, args.width, args.classes)
        model = calibrated_random_model(meta, street_images(meta.input_size, 8, seed=2))
        weights = RANDOM_WEIGHTS_NOTE
    samples, described = validation_set(meta, args.data, args.images)
    print(machine_line(device))
    print(f"model: {weights}; input {meta.input_size[0]}x{meta.input_size[1]}; validation: {len(samples)} images "
          f"of {described}")
    print()
    print("\n".join(accuracy_table(args, model, meta, device, samples)))
    if not args.no_prepost:
        print()
        print("\n".join(prepost_table(meta, args.camera, args.warmup, max(args.iters, 10))))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("benchmark", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
