"""Predictor latency: plain fp32 eager against the fast path, measured in one run.

    python -m mtan_ros.inference.benchmark [--checkpoint CK] [--sizes 128x256 256x512]

Without a checkpoint the model has random weights whose BatchNorm statistics
are calibrated on synthetic street scenes, so activations (and therefore the
agreement figures) behave like a trained network's rather than like noise.
The same images go through both paths; agreement is the share of equal label
pixels and the median relative depth difference.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import numpy as np
import torch

from mtan_ros.inference.checkpoint import (
    CheckpointMeta,
    ModelSpec,
    build_model_from_checkpoint,
    load_checkpoint,
)
from mtan_ros.inference.predictor import Predictor


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not HEIGHTxWIDTH, e.g. 256x512") from None
    return height, width


def street_images(size: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    from mtan_ros.data.synthetic import generate_scene

    rng = np.random.default_rng(seed)
    return [generate_scene(rng, size=size).image for _ in range(count)]


def calibrated_random_model(meta: CheckpointMeta, images: list[np.ndarray]) -> torch.nn.Module:
    """Random weights with BatchNorm statistics measured on real-looking inputs."""
    from mtan_ros.model import build_model

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


def time_interleaved(predictors: list[Predictor], images: list[np.ndarray], warmup: int,
                     iters: int) -> list[list[float]]:
    """Latency in ms of each predictor, alternating calls so that load on the machine hits all alike."""
    for index in range(warmup):
        for predictor in predictors:
            predictor(images[index % len(images)])
    times: list[list[float]] = [[] for _ in predictors]
    for index in range(iters):
        for slot, predictor in enumerate(predictors):
            start = time.perf_counter()
            predictor(images[index % len(images)])
            times[slot].append((time.perf_counter() - start) * 1000.0)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def agreement(plain: Predictor, fast: Predictor, images: list[np.ndarray]) -> tuple[float, float]:
    equal, total, rel = 0, 0, []
    for image in images:
        a, b = plain(image), fast(image)
        equal += int((a.labels == b.labels).sum())
        total += a.labels.size
        both = np.isfinite(a.depth) & np.isfinite(b.depth) & (a.depth > 0)
        rel.append(np.abs(a.depth[both] - b.depth[both]) / a.depth[both])
    rel_all = np.concatenate(rel) if rel else np.zeros(1)
    return equal / max(total, 1), float(np.median(rel_all))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: calibrated random weights)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(128, 256), (256, 512)],
                        help="model input sizes HEIGHTxWIDTH (ignored with --checkpoint)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier (random model)")
    parser.add_argument("--classes", type=int, default=7, help="number of classes (random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="fast path precision (auto|fp32|fp16|bf16)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column (slow to build)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        setups = [(ckpt.meta, build_model_from_checkpoint(ckpt), street_images(ckpt.meta.input_size, 4))]
    else:
        setups = []
        for size in args.sizes:
            meta = CheckpointMeta(
                model=ModelSpec("mtan", {"semantic": args.classes, "depth": 1}, args.width),
                class_names=[f"class{i}" for i in range(args.classes)],
                class_colors=[(i, i, i) for i in range(args.classes)],
                input_size=size,
            )
            images = street_images(size, 4, seed=1)
            setups.append((meta, calibrated_random_model(meta, street_images(size, 8, seed=2)), images))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    for meta, model, images in setups:
        plain = Predictor(copy.deepcopy(model), meta, device="cpu" if args.device == "auto" and
                          not torch.cuda.is_available() else args.device,
                          precision="fp32", channels_last=False, fold_bn=False)
        fast = [Predictor(copy.deepcopy(model), meta, device=args.device, precision=args.precision)]
        if not args.no_compile:
            fast.append(Predictor(copy.deepcopy(model), meta, device=args.device, precision=args.precision,
                                  compile=True))
        plain_ms, *fast_ms = time_interleaved([plain, *fast], images, args.warmup, args.iters)
        height, width = meta.input_size
        for predictor, times in zip(fast, fast_ms):
            equal, depth_rel = agreement(plain, predictor, images)
            path = f"{predictor.precision}, channels_last, folded BN" + (", compiled" if predictor.compiled else "")
            rows.append((f"{height}x{width}", predictor.device, path, percentile(plain_ms, 50),
                         percentile(plain_ms, 95), percentile(times, 50), percentile(times, 95),
                         statistics.median(plain_ms) / statistics.median(times), equal, depth_rel))

    header = ("input", "device", "fast path", "fp32 p50 ms", "fp32 p95 ms", "fast p50 ms", "fast p95 ms",
              "speed-up", "equal labels", "median depth diff")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        size, device, path, p50, p95, f50, f95, ratio, equal, depth_rel = row
        print(f"| {size} | {device} | {path} | {p50:.0f} | {p95:.0f} | "
              f"{f50:.0f} | {f95:.0f} | {ratio:.2f}x | {equal * 100:.2f}% | {depth_rel * 100:.3f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
