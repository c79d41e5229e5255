"""One training epoch and one validation pass, with their inputs passed in explicitly."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from mtan_ros.errors import TrainingError

from mtan_ros.training.distributed import DistContext
from mtan_ros.training.evaluate import autocast_context, evaluate, to_device
from mtan_ros.training.losses import task_losses
from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors
from mtan_ros.training.run import Parts

__all__ = ["EpochResult", "train_epoch", "train_step", "validate"]


@dataclass
class EpochResult:
    """Epoch-averaged training losses and metrics, and how the epoch went."""

    stats: dict[str, float]
    stopped: bool  # the time budget ran out during the epoch
    images: int
    seconds: float


def train_step(parts: Parts, images: torch.Tensor, batch: dict[str, Any], weights: dict[str, float],
               ctx: DistContext, *, amp: bool = False, outside_ddp: Any = ()) -> tuple[dict, dict, torch.Tensor]:
    """One optimiser step: forward (autocast with `amp`), task losses, weighted backward, step.

    Separate from the epoch loop so that mtan_ros.benchmarks.training_step times
    exactly what training runs. Returns (outputs, losses, total loss).
    """
    with autocast_context(ctx.device, amp):
        outputs = parts.network(images)
    losses = task_losses(outputs, batch, parts.class_weights)
    parts.optimizer.zero_grad(set_to_none=True)
    total = parts.weighting.backward(losses, weights, parts.shared_parameters, scale=parts.scaler.scale)
    for p in outside_ddp:  # learnt weighting parameters (uncertainty log-variances)
        if p.grad is not None:
            ctx.all_reduce_sum(p.grad)
            p.grad /= ctx.world_size
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return outputs, losses, total


def train_epoch(parts: Parts, loader: Any, tasks: dict[str, int], epoch: int, weights: dict[str, float],
                ctx: DistContext, *, amp: bool = False, deadline: float | None = None, show: bool = False,
                desc: str = "") -> EpochResult:
    """Train over every batch of `loader` once (stopping early when `deadline`, a monotonic time, passes)."""
    from tqdm.auto import tqdm  # optional: pip install .[train]

    device = ctx.device
    model = parts.network
    model.train()
    names = list(tasks)
    confusion = ConfusionMatrix(tasks["semantic"], device) if "semantic" in tasks else None
    depth = DepthErrors(device) if "depth" in tasks else None
    sums = torch.zeros(len(names) + 3, dtype=torch.float64, device=device)  # losses, total, batches, images
    outside_ddp = parts.weighting.parameters() if ctx.distributed else []
    stopped = False
    begin = time.perf_counter()
    seen = 0
    bar = tqdm(loader, total=len(loader), desc=desc, unit="batch", leave=False, disable=not show,
               dynamic_ncols=True)
    for step, batch in enumerate(bar):
        parts.schedule.apply(parts.optimizer, epoch, step)
        batch = to_device(batch, device)
        images = batch["image"].contiguous(memory_format=torch.channels_last)
        outputs, losses, total = train_step(parts, images, batch, weights, ctx, amp=amp, outside_ddp=outside_ddp)
        values = torch.stack([losses[t].detach().double() for t in names] + [total.double()])
        if not bool(torch.isfinite(values).all()):
            raise TrainingError(
                f"epoch {epoch + 1}, batch {step + 1}: a loss became {values.tolist()}; lower --lr"
                + (" or train without --amp" if amp else "") + ", and check the data for bad values")
        sums[:len(names) + 1] += values
        sums[len(names) + 1] += 1
        sums[len(names) + 2] += images.shape[0]
        seen += images.shape[0]
        if confusion is not None:
            confusion.update(outputs["semantic"].detach().argmax(1), batch["semantic"])
        if depth is not None:
            depth.update(outputs["depth"].detach().float(), batch["depth"].reshape(outputs["depth"].shape))
        if show:
            done = max(float(sums[len(names) + 1]), 1.0)
            elapsed = time.perf_counter() - begin
            bar.set_postfix({**{t[:5]: f"{float(sums[i]) / done:.4f}" for i, t in enumerate(names)},
                             "img/s": f"{seen * ctx.world_size / max(elapsed, 1e-9):.1f}"}, refresh=False)
        if deadline is not None and ctx.any(time.monotonic() > deadline):
            stopped = True
            break
    bar.close()
    seconds = time.perf_counter() - begin
    ctx.all_reduce_sum(sums)
    for acc in (confusion, depth):
        if acc is not None:
            acc.all_reduce()
    batches = max(float(sums[len(names) + 1]), 1.0)
    stats = {f"train_loss_{t}": float(sums[i]) / batches for i, t in enumerate(names)}
    stats["train_loss"] = float(sums[len(names)]) / batches
    if confusion is not None:
        stats["train_miou"] = confusion.miou()
        stats["train_pixel_accuracy"] = confusion.pixel_accuracy()
    if depth is not None:
        stats["train_abs_err"] = depth.abs_err()
        stats["train_rel_err"] = depth.rel_err()
    return EpochResult(stats=stats, stopped=stopped, images=int(sums[len(names) + 2]), seconds=seconds)


def validate(parts: Parts, loader: Any, tasks: dict[str, int], ctx: DistContext, *, depth_encoding: Any,
             amp: bool = False, show: bool = False) -> dict[str, float]:
    """Whole-split validation metrics (summed over processes), keyed ``val_<metric>``."""
    from tqdm.auto import tqdm  # optional: pip install .[train]

    model = parts.model
    ctx.broadcast_buffers(model)
    with tqdm(total=len(loader), desc="validation", unit="batch", leave=False, disable=not show,
              dynamic_ncols=True) as bar:
        result = evaluate(model, loader, tasks, ctx.device, depth_encoding=depth_encoding, amp=amp, dist=ctx,
                          progress=bar)
    return {f"val_{k}": v for k, v in result.metrics.items()}
