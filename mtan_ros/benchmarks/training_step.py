"""The training step against a plain PyTorch loop body, fp32 and --amp, measured in one run.

    python -m mtan_ros.benchmarks.training_step [--size 128x256] [--batch 2] [--width 1.0] [--steps 6]

The project's step (`mtan_ros.training.epoch.train_step`: autocast, task
losses, task weighting, GradScaler, Adam) is timed against the plainest loop
that trains the same 3-task SegNet-MTAN (forward, sum of the task losses,
backward, Adam step), each with its own copy of the same initial weights, on
the same random batch, step by step in turn so that load on the machine hits
all alike. The ratios against the plain fp32 loop are the numbers to compare.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Callable

import torch

from mtan_ros.common.entry import run_command
from mtan_ros.benchmarks.inference import parse_size
from mtan_ros.inference.precision import cpu_bf16_flags
from mtan_ros.model import build_model
from mtan_ros.training.config import TrainConfig
from mtan_ros.training.distributed import DistContext
from mtan_ros.training.epoch import train_step
from mtan_ros.training.evaluate import amp_unavailable
from mtan_ros.training.losses import task_losses
from mtan_ros.training.run import build_parts

TASKS = {"semantic": 7, "depth": 1, "normal": 3}


def random_batch(size: tuple[int, int], batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images, labels (with void), positive depth and unit normals of the training loaders' shapes."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(batch, 3, *size, generator=generator)
    return {"image": torch.rand(batch, 3, *size, generator=generator).contiguous(memory_format=torch.channels_last),
            "semantic": torch.randint(-1, TASKS["semantic"], (batch, *size), generator=generator),
            "depth": torch.rand(batch, 1, *size, generator=generator) * 0.4 + 0.01,
            "normal": normal / normal.norm(dim=1, keepdim=True)}


def plain_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], amp: bool) -> Callable[[], float]:
    """A reference loop body: forward (bf16 autocast with `amp`), summed losses, backward, Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outputs = model(batch["image"])
        loss = sum(task_losses(outputs, batch).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def project_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], amp: bool) -> Callable[[], float]:
    """The trainer's own step on `model` (equal task weighting, the default)."""
    ctx = DistContext(device=torch.device("cpu"))
    parts = build_parts(TrainConfig(width=model.width, amp=amp), dict(TASKS), ctx, steps_per_epoch=1)
    parts.model.load_state_dict(model.state_dict())
    weights = parts.weighting.weights(0, {t: [] for t in TASKS})

    def step() -> float:
        return float(train_step(parts, batch["image"], batch, weights, ctx, amp=amp)[2])

    return step


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("mtan", TASKS, args.width).to(memory_format=torch.channels_last).train()
    batch = random_batch(args.size, args.batch)
    note = amp_unavailable(torch.device("cpu"))
    steps = {"plain loop fp32": plain_step(copy.deepcopy(model), batch, False),
             "mtan-train step fp32": project_step(model, batch, False),
             "plain loop bf16 autocast": plain_step(copy.deepcopy(model), batch, True),
             "mtan-train step --amp": project_step(model, batch, note is None)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(args.warmup + args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if index >= args.warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 instructions: "
          f"{', '.join(cpu_bf16_flags()) or 'none'}{load}")
    print(f"3-task SegNet-MTAN width {args.width:g} at {args.size[0]}x{args.size[1]}, batch {args.batch}, "
          f"{args.steps} steps each after {args.warmup} warm-up, interleaved; medians"
          + (f" (--amp trains in fp32 here: {note})" if note else ""))
    reference = statistics.median(times["plain loop fp32"])
    print("| step | ms / step | images / s | vs plain loop fp32 |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {args.batch * 1000.0 / median:.2f} | {reference / median:.2f}x |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtan_ros.benchmarks.training_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(128, 256), help="image size (default 128x256)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width (default 1.0, the paper's)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each (default 6)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each first (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("training_step", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
