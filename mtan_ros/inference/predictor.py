"""Depth and semantic labels for camera images, without ROS.

The Predictor owns everything between an RGB array and metric outputs:
resizing to the checkpoint's input size, normalisation, device placement,
reduced precision, and bringing results back to the input's size and to
metres. The ROS node, the evaluator and the benchmarks all go through it, so
what is measured is what is published.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from mtan_ros.inference.checkpoint import CheckpointMeta, build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.optimize import fold_batchnorm

LOG = logging.getLogger("mtan_ros.inference")

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Anything larger than this is a corrupt header rather than a camera.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


@dataclass
class Prediction:
    """Outputs at the input image's size."""

    labels: np.ndarray  # H x W uint8 class ids
    depth: np.ndarray   # H x W float32 metres, NaN where there is no estimate


def resolve_device(requested: str = "auto") -> torch.device:
    """`auto` takes CUDA when present; a CUDA request without CUDA falls back to CPU with a log line."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        LOG.info("no CUDA device available; running on CPU")
        return torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            LOG.warning("device '%s' requested but CUDA is not available; falling back to CPU", requested)
            return torch.device("cpu")
        device = torch.device(requested)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(f"device '{requested}' does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0..)")
        return torch.device("cuda", index)
    raise ValueError(f"device '{requested}' is not one of auto, cpu, cuda, cuda:N")


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto`: fp16 on CUDA, fp32 on CPUs.

    bf16 is faster on CPUs with native bf16 kernels, but SegNet's max-unpooling
    copies each activation to the position of its 2x2 maximum, and bf16
    rounding turns near-ties into different positions: on our benchmark
    models too many labels change (see the README's benchmark table), so bf16
    on the CPU is an explicit choice, never the default.
    """
    requested = (requested or "auto").strip().lower()
    if requested not in PRECISIONS:
        raise ValueError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and requested == "fp16":
        LOG.warning("fp16 is slow on CPUs; using bf16 instead" if cpu_supports_bf16()
                    else "fp16 is slow on CPUs; using fp32 instead")
        return "bf16" if cpu_supports_bf16() else "fp32"
    if device.type == "cpu" and requested == "bf16" and not cpu_supports_bf16():
        LOG.warning("this CPU has no native bf16 support; bf16 will be emulated and slow")
    return requested


def validate_image(image: object, name: str = "image") -> np.ndarray:
    """An H x W x 3 uint8 array, or a ValueError saying what is wrong with it."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be H x W x 3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name} of {image.shape[1]}x{image.shape[0]} pixels is larger than the "
                         f"{MAX_IMAGE_PIXELS} pixels this predictor accepts")
    return image


class Predictor:
    """A loaded model ready for images; see `from_checkpoint`."""

    def __init__(self, model: torch.nn.Module, meta: CheckpointMeta, device: str | torch.device = "auto",
                 precision: str = "auto", channels_last: bool | None = None, fold_bn: bool = True,
                 compile: bool = False):
        if "semantic" not in meta.model.tasks or "depth" not in meta.model.tasks:
            raise ValueError(f"the Predictor needs a model with 'semantic' and 'depth' tasks, this one has "
                             f"{sorted(meta.model.tasks)}")
        self.meta = meta
        self._device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = resolve_precision(precision, self._device)
        self._dtype = _DTYPES[self.precision]
        # channels_last helps oneDNN and cuDNN convolutions alike; measured in the benchmark.
        self._channels_last = True if channels_last is None else bool(channels_last)
        model = model.eval()
        if fold_bn:
            model = fold_batchnorm(model)
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        self.model = model.to(device=self._device, dtype=self._dtype, memory_format=memory_format)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.input_height, self.input_width = meta.input_size
        self._mean = torch.tensor(meta.mean, dtype=torch.float32, device=self._device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(meta.std, dtype=torch.float32, device=self._device)).view(1, 3, 1, 1)
        self.class_names = list(meta.class_names)
        self.class_colors = np.asarray(meta.class_colors, dtype=np.uint8).reshape(-1, 3)
        self._pinned: torch.Tensor | None = None
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._forward = self.model
        self.compiled = bool(compile)
        if self.compiled:
            self._compile()

    def _compile(self) -> None:
        """torch.compile with weight freezing, compiled now so that the first frame is not slow.

        On CPUs this saves another 10-25% of inference time (fused convolutions
        with prepacked weights) at the cost of 20-60 s at start-up.
        """
        import torch._inductor.config as inductor_config

        LOG.info("compiling the model for %s (this takes a while once)", self._device)
        self._forward = torch.compile(self.model, dynamic=False)
        example = np.zeros((self.input_height, self.input_width, 3), dtype=np.uint8)
        with inductor_config.patch(freezing=True):
            self.predict_batch([example])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", precision: str = "auto",
                        **options) -> "Predictor":
        """Load a checkpoint written by `mtan-train`; raises CheckpointError with a one-line reason."""
        checkpoint = load_checkpoint(path)
        model = build_model_from_checkpoint(checkpoint, source=f"checkpoint '{path}'")
        return cls(model, checkpoint.meta, device=device, precision=precision, **options)

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __call__(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predict several images in one forward pass; sizes may differ."""
        if len(images) == 0:
            return []
        images = [validate_image(img, f"image {i}") for i, img in enumerate(images)]
        batch = self._upload([self._resize_input(img) for img in images])
        with torch.inference_mode():
            outputs = self._forward(self._normalise(batch))
            raw_labels = outputs["semantic"].argmax(dim=1).to(torch.uint8)
            raw_depth = outputs["depth"][:, 0].float()
            sizes = [img.shape[:2] for img in images]
            if self._device.type == "cuda":
                return self._finish_on_gpu(raw_labels, raw_depth, sizes)
            return [self._finish_on_cpu(raw_labels[i].numpy(), raw_depth[i].numpy(), size)
                    for i, size in enumerate(sizes)]

    def close(self) -> None:
        """Release the model and, on CUDA, the cached GPU memory."""
        on_cuda = self._device.type == "cuda"
        self.model = None
        self._forward = None
        self._pinned = None
        if on_cuda:
            torch.cuda.empty_cache()

    def _resize_input(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if (height, width) == (self.input_height, self.input_width):
            return np.ascontiguousarray(image)
        shrinking = height * width > self.input_height * self.input_width
        return cv2.resize(image, (self.input_width, self.input_height),
                          interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def _upload(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """N x H x W x 3 uint8 on the device; through a reused pinned buffer on CUDA."""
        if self._device.type != "cuda":
            return torch.from_numpy(np.stack(arrays))
        shape = (len(arrays), self.input_height, self.input_width, 3)
        if self._pinned is None or self._pinned.shape[0] < len(arrays):
            self._pinned = torch.empty(shape, dtype=torch.uint8).pin_memory()
        host = self._pinned[: len(arrays)]
        for index, array in enumerate(arrays):
            host[index].copy_(torch.from_numpy(array))
        return host.to(self._device, non_blocking=True)

    def _normalise(self, batch_nhwc: torch.Tensor) -> torch.Tensor:
        # Permuting NHWC to NCHW gives a channels_last tensor without a copy.
        x = batch_nhwc.permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)
        x = (x - self._mean) * self._inv_std
        memory_format = torch.channels_last if self._channels_last else torch.contiguous_format
        return x.to(dtype=self._dtype, memory_format=memory_format)

    def _finish_on_cpu(self, labels: np.ndarray, raw_depth: np.ndarray, size: tuple[int, int]) -> Prediction:
        height, width = size
        if labels.shape != (height, width):
            labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
            raw_depth = cv2.resize(raw_depth, (width, height), interpolation=cv2.INTER_LINEAR)
        depth = self.meta.depth.to_metres(raw_depth)
        return Prediction(labels=np.ascontiguousarray(labels), depth=depth)

    def _finish_on_gpu(self, labels: torch.Tensor, raw_depth: torch.Tensor,
                       sizes: list[tuple[int, int]]) -> list[Prediction]:
        """Resize and convert on the GPU, then one synchronisation for all downloads."""
        import torch.nn.functional as F

        pending = []
        for index, (height, width) in enumerate(sizes):
            lab, dep = labels[index : index + 1], raw_depth[index : index + 1]
            if lab.shape[-2:] != (height, width):
                lab = F.interpolate(lab[:, None], size=(height, width), mode="nearest")[:, 0]
                dep = F.interpolate(dep[:, None], size=(height, width), mode="bilinear",
                                    align_corners=False)[:, 0]
            metres = self.meta.depth.to_metres(dep)
            host_labels = torch.empty((height, width), dtype=torch.uint8, pin_memory=True)
            host_depth = torch.empty((height, width), dtype=torch.float32, pin_memory=True)
            host_labels.copy_(lab[0], non_blocking=True)
            host_depth.copy_(metres[0], non_blocking=True)
            pending.append((host_labels, host_depth))
        torch.cuda.current_stream(self._device).synchronize()
        return [Prediction(labels=lab.numpy(), depth=dep.numpy()) for lab, dep in pending]
