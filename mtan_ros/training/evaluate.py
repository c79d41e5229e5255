"""One pass of a model over a dataset split: losses and whole-split metrics.

Used by the trainer after each epoch and by ``mtan-eval``. Under torch.distributed
each process evaluates its own shard and the sums (confusion matrix, depth error
sums, loss sums) are added across processes, so the metrics equal a
single-process evaluation of the same weights.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from mtan_ros.common.cpu import BF16_FLAGS, cpu_bf16_flags
from mtan_ros.training.losses import task_losses
from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors, PerImageSegmentation

__all__ = ["EvalResult", "evaluate", "amp_unavailable", "autocast_context", "to_device", "predict",
           "convert_depth"]


@dataclass
class EvalResult:
    """Metrics as plain floats plus the accumulators they came from (for per-class IoU)."""

    metrics: dict[str, float] = field(default_factory=dict)
    confusion: ConfusionMatrix | None = None
    per_image: PerImageSegmentation | None = None
    depth: DepthErrors | None = None
    depth_m: DepthErrors | None = None
    images: int = 0


def autocast_context(device: torch.device, enabled: bool):
    """bfloat16 autocast on CPU, float16 on CUDA; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def amp_unavailable(device: torch.device) -> str | None:
    """Why --amp does not run in reduced precision on `device`, or None where it does.

    CPUs without bf16 instructions would emulate bf16; training stays fp32 there.
    """
    if device.type != "cpu":
        return None
    return None if cpu_bf16_flags() else f"this CPU reports neither {' nor '.join(BF16_FLAGS)} (no bf16 instructions)"


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a collated batch on ``device`` (asynchronously from pinned memory on CUDA)."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def convert_depth(depth: torch.Tensor, source: Any, target: Any) -> torch.Tensor:
    """Depth values from one DepthEncoding to another through metres (0 where there is no value)."""
    if source is None or target is None or source == target:
        return depth
    return target.from_metres(source.to_metres(depth)).to(depth.dtype)


def predict(model: torch.nn.Module, images: torch.Tensor, *, amp: bool = False,
            input_size: tuple[int, int] | None = None,
            output_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Model outputs (float32) for a batch, run at ``input_size`` and resized to ``output_size``.

    Images are resized bilinearly to the size the model was trained at; semantic
    logits and depth are resized bilinearly back (labels are the argmax after
    resizing), so metrics are computed at the ground truth's resolution.
    """
    if input_size is not None and tuple(images.shape[-2:]) != tuple(input_size):
        images = F.interpolate(images, size=tuple(input_size), mode="bilinear", align_corners=False,
                               antialias=True)
    with autocast_context(images.device, amp):
        outputs = model(images.contiguous(memory_format=torch.channels_last))
    outputs = {k: v.float() for k, v in outputs.items()}
    if output_size is not None:
        for task, value in outputs.items():
            if tuple(value.shape[-2:]) != tuple(output_size):
                value = F.interpolate(value, size=tuple(output_size), mode="bilinear", align_corners=False)
                if task == "normal":
                    value = F.normalize(value, dim=1)
                outputs[task] = value
    return outputs


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[Mapping[str, Any]], tasks: Mapping[str, int],
             device: torch.device, *, depth_encoding: Any = None, model_depth_encoding: Any = None,
             amp: bool = False, input_size: tuple[int, int] | None = None, dist: Any = None,
             progress: Any = None) -> EvalResult:
    """Losses (batch means averaged over batches, like the reference) and whole-split metrics.

    ``depth_encoding`` is the dataset's (for the metres columns); when the model
    was trained with another encoding (``model_depth_encoding``), its depth is
    converted to the dataset's before comparison.
    """
    model.eval()
    confusion = ConfusionMatrix(tasks["semantic"], device=device) if "semantic" in tasks else None
    per_image = PerImageSegmentation(tasks["semantic"], device=device) if "semantic" in tasks else None
    depth = DepthErrors(device=device) if "depth" in tasks else None
    depth_m = DepthErrors(device=device) if "depth" in tasks and depth_encoding is not None else None
    names = list(tasks)
    sums = torch.zeros(len(names) + 2, dtype=torch.float64, device=device)  # losses, batches, images
    for batch in loader:
        batch = to_device(batch, device)
        images = batch["image"]
        outputs = predict(model, images, amp=amp, input_size=input_size, output_size=tuple(images.shape[-2:]))
        if "depth" in outputs:
            outputs["depth"] = convert_depth(outputs["depth"], model_depth_encoding, depth_encoding)
        losses = task_losses(outputs, batch)
        sums[:len(names)] += torch.stack([losses[t].detach().double() for t in names])
        sums[len(names)] += 1
        sums[len(names) + 1] += images.shape[0]
        if confusion is not None:
            labels = outputs["semantic"].argmax(1)
            confusion.update(labels, batch["semantic"])
            per_image.update(labels, batch["semantic"])
        if depth is not None:
            target = batch["depth"].reshape(outputs["depth"].shape)
            depth.update(outputs["depth"], target)
            if depth_m is not None:
                depth_m.update(depth_encoding.to_metres(outputs["depth"]), depth_encoding.to_metres(target))
        if progress is not None:
            progress.update(1)
    if dist is not None:
        dist.all_reduce_sum(sums)
        for acc in (confusion, per_image, depth, depth_m):
            if acc is not None:
                acc.all_reduce()
    batches = max(float(sums[len(names)]), 1.0)
    metrics = {f"loss_{t}": float(sums[i]) / batches for i, t in enumerate(names)}
    if confusion is not None:
        metrics["miou"] = confusion.miou()
        metrics["pixel_accuracy"] = confusion.pixel_accuracy()
        metrics["miou_per_image"] = per_image.miou()
        metrics["pixel_accuracy_per_image"] = per_image.pixel_accuracy()
    if depth is not None:
        metrics["abs_err"] = depth.abs_err()
        metrics["rel_err"] = depth.rel_err()
    if depth_m is not None:
        metrics["abs_err_m"] = depth_m.abs_err()
        metrics["rel_err_m"] = depth_m.rel_err()
        if depth_m.missing:
            metrics["depth_missing_fraction"] = depth_m.missing / max(depth_m.missing + depth_m.count, 1)
    return EvalResult(metrics=metrics, confusion=confusion, per_image=per_image, depth=depth, depth_m=depth_m,
                      images=int(sums[len(names) + 1]))
