"""Depth and semantic labels for camera images, without ROS.

The Predictor owns everything between an RGB array and metric outputs, as one
sequence of torch operations that runs unchanged on the CPU and on CUDA:

    uint8 H x W x 3 -> tensor -> resize to the model's input (antialiased when
    shrinking) -> [0, 1] -> backend (normalisation + model) -> argmax labels,
    nearest upsampling; raw depth, bilinear upsampling -> metres through the
    checkpoint's DepthEncoding -> NaN beyond max_depth -> numpy results.

Only the transfers differ: on the CPU the input array is used in place and the
results are written straight into the returned (or caller's) arrays; on CUDA
the image goes up through pinned memory and the results come down once, with
one synchronisation. The ROS node, the evaluator and the benchmarks all go
through it, so what is measured is what is published.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtan_ros.common.text import quote_path
from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.inference.batching import BatchPlan, ParallelPasses, choose_plan, static_plan
from mtan_ros.inference.backends import BACKENDS, DTYPES, OnnxRuntimeBackend, TorchBackend, resolve_backend
from mtan_ros.model.checkpoint import CheckpointMeta, build_model_from_checkpoint, load_checkpoint
from mtan_ros.inference.export import inference_model
from mtan_ros.inference.precision import PRECISIONS, PrecisionChoice, check_image, choose_precision, time_interleaved

LOG = logging.getLogger("mtan_ros.inference")

# Anything larger than this is a corrupt header rather than a camera.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@dataclass
class Prediction:
    """Outputs at the requested size (the input image's by default)."""

    labels: np.ndarray  # H x W uint8 class ids
    depth: np.ndarray   # H x W float32 metres, NaN where there is no estimate
    # H x W uint8, 255 x the softmax probability of the label's class; only when asked for (else None)
    confidence: np.ndarray | None = None


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


def _check_size(size: object, name: str = "output_size") -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if height <= 0 or width <= 0 or height * width > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name} {height}x{width} is not a usable image size")
    return height, width


def _check_max_depth(max_depth: float | None) -> float | None:
    if max_depth is None or max_depth == math.inf:
        return None
    if not (isinstance(max_depth, (int, float)) and max_depth > 0):
        raise ValueError(f"max_depth must be a positive number of metres or None, got {max_depth!r}")
    return float(max_depth)


def _check_out(out: object, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The caller's (labels, depth) buffers, checked so that a wrong one fails here and not half-written."""
    try:
        labels, depth = out  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError("out must be a pair (labels uint8 H x W, depth float32 H x W) of numpy arrays") from None
    for array, dtype, what in ((labels, np.uint8, "labels"), (depth, np.float32, "depth")):
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != size:
            got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            raise ValueError(f"out {what} must be a {np.dtype(dtype)} array of shape {size}, got {got}")
        if not (array.flags.c_contiguous and array.flags.writeable):
            raise ValueError(f"out {what} must be a writeable C-contiguous array")
    return labels, depth


def resize_labels(labels: torch.Tensor, out: torch.Tensor) -> None:
    """N x 1 x h x w uint8 class ids into `out` (N x 1 x H x W), nearest neighbour with pixel centres aligned.

    Centre-aligned ("nearest-exact") so that labels and the bilinear depth
    line up at any scale.
    """
    if labels.shape[-2:] == out.shape[-2:]:
        out.copy_(labels)
    else:
        torch.ops.aten._upsample_nearest_exact2d.out(labels, list(out.shape[-2:]), None, None, out=out)


def resize_depth(depth: torch.Tensor, out: torch.Tensor) -> None:
    """N x 1 x h x w float32 into `out` (N x 1 x H x W), bilinear with pixel centres aligned."""
    if depth.shape[-2:] == out.shape[-2:]:
        out.copy_(depth)
    else:
        torch.ops.aten.upsample_bilinear2d.out(depth, list(out.shape[-2:]), False, None, None, out=out)


def label_confidence(logits: torch.Tensor) -> torch.Tensor:
    """N x 1 x h x w uint8: round(255 x softmax probability of the argmax class) of N x C x h x w logits.

    The largest softmax probability is exp(max - logsumexp), computed in float32
    without forming the N x C probabilities.
    """
    logits = logits.float()
    top = logits.amax(dim=1, keepdim=True)
    probability = torch.exp(top - torch.logsumexp(logits, dim=1, keepdim=True))
    return probability.mul_(255.0).round_().to(torch.uint8)


def depth_to_metres_(depth: torch.Tensor, low: torch.Tensor, encoding: DepthEncoding,
                     max_depth: float | None = None) -> torch.Tensor:
    """`encoding.to_metres(depth)` in place, then NaN beyond `max_depth`; `low` is what `depth` was upsampled from.

    The same values as DepthEncoding.to_metres (NaN where the raw value is not
    positive and finite; metres that overflow to infinity count as no estimate
    too), in fewer passes over a camera-sized map: bilinear upsampling never
    leaves the range of the samples it mixes, so the model-resolution map tells
    whether any pixel can be invalid or beyond max_depth, and the
    full-resolution comparison runs only when one can.
    """
    low_min, low_max, finite = (float(v) for v in torch.stack(
        [low.amin(), low.amax(), torch.isfinite(low).all().to(low.dtype)]).tolist())
    scale = float(encoding.scale)
    if encoding.kind == "metric":
        if scale != 1.0:
            depth.mul_(scale)
        farthest = low_max * scale
    else:
        torch.reciprocal(depth, out=depth).mul_(scale)  # what `scale / tensor` computes in torch
        farthest = scale / low_min if low_min > 0 else math.inf
    limit = _FLOAT32_MAX if max_depth is None else max_depth
    all_valid = bool(finite) and low_min > 0
    # A margin for the rounding of the interpolation weights.
    all_near = max_depth is None or farthest <= max_depth * (1.0 - 1e-5)
    if not (all_valid and all_near):
        _nan_outside_(depth, limit)
    return depth


def _nan_outside_(depth: torch.Tensor, limit: float) -> None:
    """NaN in place wherever `depth` is not in (0, limit] (NaN and infinity included).

    The same result as masked_fill with a comparison mask, 2.6x faster on a 2 Mpx map
    on CPUs (measured 1.4 vs 3.6 ms: boolean masks are not vectorised there): a value is
    in range iff clamping leaves it unchanged, and x / 1 * 1 is x exactly while
    x / 0 * 0 is NaN for every x. Positive values below the smallest normal float
    (1e-38 m) count as out of range, like zero.
    """
    keep = torch.clamp(depth, min=_FLOAT32_TINY, max=limit)
    torch.eq(keep, depth, out=keep)  # 1.0 in range, 0.0 outside
    depth.div_(keep).mul_(keep)


class Predictor:
    """A loaded model ready for images; see `from_checkpoint`.

    Options (all keyword-only): `backend` "torch", "onnxruntime" or "auto"
    (onnxruntime for fp32 on CPUs where it is installed, torch otherwise; see
    backends.resolve_backend); `channels_last`, `fold_bn`, `compile`
    (torch.compile; slow to start) for the torch backend; `pooling` "indices"
    or "masks" (identical outputs; default masks for onnxruntime on CUDA, which
    TensorRT needs, indices elsewhere); `onnx_path` an .onnx
    file written by `mtan-export` for the onnxruntime backend (default: export
    the checkpoint's model in memory); `providers` ONNX Runtime execution
    providers (default: TensorRT, CUDA then CPU, as installed); `threads` ONNX
    Runtime's intra-op threads (0: its default).

    `precision_choice` says which precision runs and why (with the warm-up
    timings and the agreement with fp32 where `auto` measured them);
    `batch_plan` how batches of several images run (see `plan_batches`).
    """

    def __init__(self, model: torch.nn.Module, meta: CheckpointMeta, device: str | torch.device = "auto",
                 precision: str = "auto", *, backend: str = "torch", channels_last: bool | None = None,
                 fold_bn: bool = True, compile: bool = False, pooling: str | None = None,
                 onnx_path: str | os.PathLike | None = None, providers: Sequence[str] | None = None,
                 threads: int = 0):
        if "semantic" not in meta.model.tasks or "depth" not in meta.model.tasks:
            raise ValueError(f"the Predictor needs a model with 'semantic' and 'depth' tasks, this one has "
                             f"{sorted(meta.model.tasks)}")
        self.meta = meta
        self._device = device if isinstance(device, torch.device) else resolve_device(device)
        self._on_cuda = self._device.type == "cuda"
        self.class_names = list(meta.class_names)
        self.class_colors = np.asarray(meta.class_colors, dtype=np.uint8).reshape(-1, 3)
        requested = (precision or "auto").strip().lower()
        if requested not in PRECISIONS:
            raise ValueError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
        if self._on_cuda:
            torch.backends.cudnn.benchmark = True
        backend, backend_reason = resolve_backend(backend, self._device, requested, compile)
        # Masks for TensorRT; on CPUs ONNX Runtime ran the indices form faster (14.9 vs 16.4 ms, Zen 4, demo model).
        pooling = pooling or ("masks" if backend == "onnxruntime" and self._on_cuda else "indices")
        if backend == "onnxruntime":
            self._backend = self._onnxruntime(model, requested, fold_bn, pooling, onnx_path, providers, threads)
            ran = self._backend.precision
            self.precision_choice = PrecisionChoice(ran, f"onnxruntime runs {ran} with providers "
                                                         f"{', '.join(self._backend.providers)} ({backend_reason})")
        else:
            layout = True if channels_last is None else bool(channels_last)
            self._backend, self.precision_choice = choose_precision(
                requested, self._device, inference_model(model, meta, fold_bn=fold_bn, pooling=pooling),
                lambda wrapper, precision: TorchBackend(wrapper, self._device, precision, channels_last=layout,
                                                        compile=compile),
                meta.depth, self.input_size)
        LOG.info("precision %s", self.precision_choice)
        self.backend = self._backend.name
        self.precision = self._backend.precision
        self.compiled = self._backend.compiled
        # uint8 bilinear resizing has fast CPU kernels; CUDA has none for uint8 and resizes floats.
        self._resize_uint8 = not self._on_cuda
        self.batch_plan = BatchPlan("one_pass", "not planned: batches run in one pass", 1)
        self._parallel: ParallelPasses | None = None
        if self.compiled:
            LOG.info("compiling the model for %s (this takes a while once)", self._device)
            self.predict_batch([np.zeros((*self.input_size, 3), dtype=np.uint8)])

    def _onnxruntime(self, model, precision, fold_bn, pooling, onnx_path, providers, threads):
        options = {"providers": providers, "threads": threads}
        args = (self._device, precision, self.num_classes, tuple(self.meta.input_size))
        if onnx_path is not None:
            return OnnxRuntimeBackend(onnx_path, *args, **options)
        wrapper = inference_model(model, self.meta, fold_bn=fold_bn, pooling=pooling)
        LOG.info("exporting the model to ONNX for onnxruntime (mtan-export writes a file to reuse)")
        return OnnxRuntimeBackend.from_wrapper(wrapper, *args, **options)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", precision: str = "auto",
                        **options) -> "Predictor":
        """Load a checkpoint written by `mtan-train`; raises CheckpointError with a one-line reason."""
        checkpoint = load_checkpoint(path)
        model = build_model_from_checkpoint(checkpoint, source=f"checkpoint {quote_path(path)}")
        return cls(model, checkpoint.meta, device=device, precision=precision, **options)

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model runs at; pass it as output_size for outputs at the model's resolution."""
        height, width = self.meta.input_size
        return int(height), int(width)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model(self) -> torch.nn.Module | None:
        """The PyTorch module the torch backend runs (None for onnxruntime and after close)."""
        return getattr(self._backend, "model", None)

    def __call__(self, image: np.ndarray, *, output_size: tuple[int, int] | None = None,
                 max_depth: float | None = None,
                 out: tuple[np.ndarray, np.ndarray] | None = None, confidence: bool = False) -> Prediction:
        """Labels and metric depth for one H x W x 3 uint8 RGB image.

        output_size: (height, width) of the results; None = the image's size.
        max_depth: metres beyond which depth becomes NaN; None = no limit.
        out: (labels uint8, depth float32) arrays of the output size to write the results into
        (e.g. views of outgoing message buffers); the returned Prediction holds these arrays.
        confidence: also return `confidence` (uint8, 255 x the probability of each label's class,
        computed at the model's resolution and resized like the labels); off, it costs nothing.
        """
        image = validate_image(image)
        size = image.shape[:2] if output_size is None else _check_size(output_size)
        buffers = None if out is None else _check_out(out, tuple(size))
        return self._run([image], [tuple(size)], _check_max_depth(max_depth), [buffers], confidence)[0]

    def predict_batch(self, images: Sequence[np.ndarray], *, output_size: tuple[int, int] | None = None,
                      max_depth: float | None = None, confidence: bool = False,
                      out: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None) -> list[Prediction]:
        """Predict several images in one forward pass; sizes may differ (each result has its image's size).

        out: one (labels, depth) pair or None per image, as `out` of a single call: several
        cameras' outgoing message buffers filled by one forward pass, without a copy.
        """
        if len(images) == 0:
            return []
        images = [validate_image(img, f"image {i}") for i, img in enumerate(images)]
        sizes = [tuple(img.shape[:2]) if output_size is None else _check_size(output_size) for img in images]
        if out is None:
            buffers = [None] * len(images)
        elif len(out) != len(images):
            raise ValueError(f"out must hold one entry per image: {len(out)} for {len(images)} images")
        else:
            buffers = [None if pair is None else _check_out(pair, size) for pair, size in zip(out, sizes)]
        return self._run(images, sizes, _check_max_depth(max_depth), buffers, confidence)

    def plan_batches(self, batch_size: int, mode: str = "auto") -> BatchPlan:
        """Decide how `predict_batch` runs batches of up to `batch_size` images, and return the plan.

        mode: "one_pass" (one forward pass per batch), "parallel" (one pass per image,
        all at once; CPU only) or "auto": on a CPU, both are timed on a batch of
        synthetic scenes and the faster is kept; on CUDA one pass. Results are the same
        either way, up to the order of fp32 sums.
        """
        plan = static_plan(mode, batch_size, on_cuda=self._on_cuda, compiled=self.compiled)
        if plan is None:
            images = [check_image(self.input_size)] * batch_size
            self._set_parallel(batch_size)
            plan = choose_plan(
                batch_size, lambda: self._run(images, [self.input_size] * batch_size, None, [None] * batch_size,
                                              one_pass=True),
                lambda: self._run(images, [self.input_size] * batch_size, None, [None] * batch_size),
                time_interleaved)
        self._set_parallel(batch_size if plan.mode == "parallel" else 0)
        self.batch_plan = plan
        LOG.info("batches %s", plan)
        return plan

    def _set_parallel(self, workers: int) -> None:
        if self._parallel is not None and self._parallel.workers != workers:
            self._parallel.close()
            self._parallel = None
        if workers > 1 and self._parallel is None:
            self._parallel = ParallelPasses(workers)

    def close(self) -> None:
        """Release the model, the parallel passes' threads and, on CUDA, the cached GPU memory."""
        self._set_parallel(0)
        self._backend.close()
        if self._on_cuda:
            torch.cuda.empty_cache()

    # --- the one processing path -------------------------------------------------------------
    def _run(self, images: list[np.ndarray], sizes: list[tuple[int, int]], max_depth: float | None,
             outs: list, confidence: bool = False, *, one_pass: bool = False) -> list[Prediction]:
        with torch.inference_mode():
            inputs = [self._resize_input(self._upload(image)) for image in images]
            logits, raw_depth = self._forward(inputs, None if one_pass else self._parallel)
            # Class scores next to each other in memory: argmax over NCHW is ~15x slower on CPUs.
            labels = logits.contiguous(memory_format=torch.channels_last).argmax(dim=1, keepdim=True)
            labels = labels.to(torch.uint8)
            raw_depth = raw_depth.float()
            results = []
            for index, (size, out) in enumerate(zip(sizes, outs)):
                label_map, depth_map, host = self._destination(size, out)
                resize_labels(labels[index:index + 1], label_map.view(1, 1, *size))
                resize_depth(raw_depth[index:index + 1], depth_map.view(1, 1, *size))
                depth_to_metres_(depth_map, raw_depth[index], self.meta.depth, max_depth)
                results.append((label_map, depth_map, host))
            predictions = self._download(results)
            if confidence:
                self._add_confidence(predictions, label_confidence(logits), sizes)
            return predictions

    def _forward(self, inputs: list[torch.Tensor],
                 parallel: ParallelPasses | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The backend on the images (uint8 or float in, float32 out): one pass, or one per image at once.

        Only the network runs on the parallel threads; resizing stays here, so that the
        threads allocate no camera-sized buffers (each would keep its own freed memory).
        """
        if parallel is None or len(inputs) == 1:
            batch = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
            return self._backend(batch * (1.0 / 255.0))

        def forward(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.inference_mode():  # a per-thread mode: the calling thread's does not reach this one
                return self._backend(image * (1.0 / 255.0))

        results = parallel.map(forward, inputs)
        return torch.cat([logits for logits, _ in results]), torch.cat([depth for _, depth in results])

    def _add_confidence(self, predictions: list[Prediction], low: torch.Tensor, sizes: list) -> None:
        """Each prediction's confidence from `low` (N x 1 x h x w uint8), resized as the labels are."""
        for index, (prediction, size) in enumerate(zip(predictions, sizes)):
            host = np.empty(size, np.uint8)
            if self._on_cuda:
                target = torch.empty(size, dtype=torch.uint8, device=self._device)
            else:
                target = torch.from_numpy(host)
            resize_labels(low[index:index + 1], target.view(1, 1, *size))
            if self._on_cuda:
                torch.from_numpy(host).copy_(target)
            prediction.confidence = host

    def _resize_input(self, image: torch.Tensor) -> torch.Tensor:
        """1 x 3 x H x W uint8 to the model's input size: bilinear, antialiased when shrinking."""
        height, width = image.shape[-2:]
        target = self.input_size
        if (height, width) == target:
            return image
        if not self._resize_uint8:
            image = image.float()
        shrinking = height > target[0] or width > target[1]
        return F.interpolate(image, size=target, mode="bilinear", align_corners=False, antialias=shrinking)

    # --- transfers: the only place where CPU and CUDA differ -----------------------------------
    def _upload(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 as a 1 x 3 x H x W (channels_last) tensor on the device.

        CPU: a view of the array, no copy. CUDA: through pinned memory (from
        torch's caching host allocator, which keeps a buffer until its copy is
        done), uploaded without blocking.
        """
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        host = torch.from_numpy(image)
        if self._on_cuda:
            pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
            pinned.copy_(host)
            host = pinned.to(self._device, non_blocking=True)
        return host.permute(2, 0, 1).unsqueeze(0)

    def _destination(self, size: tuple[int, int], out: tuple[np.ndarray, np.ndarray] | None):
        """Tensors the results are computed into, and the numpy arrays they end up in.

        CPU: views of the numpy arrays themselves (the caller's `out`, or new
        ones). CUDA: device tensors, and host arrays (the caller's, or pinned
        ones) that `_download` fills.
        """
        if self._on_cuda and out is None:
            out = (torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy(),
                   torch.empty(size, dtype=torch.float32, pin_memory=True).numpy())
        elif out is None:
            out = (np.empty(size, np.uint8), np.empty(size, np.float32))
        if not self._on_cuda:
            return torch.from_numpy(out[0]), torch.from_numpy(out[1]), out
        return (torch.empty(size, dtype=torch.uint8, device=self._device),
                torch.empty(size, dtype=torch.float32, device=self._device), out)

    def _download(self, results: list) -> list[Prediction]:
        if self._on_cuda:
            for label_map, depth_map, (labels, depth) in results:
                torch.from_numpy(labels).copy_(label_map, non_blocking=True)
                torch.from_numpy(depth).copy_(depth_map, non_blocking=True)
            torch.cuda.current_stream(self._device).synchronize()
        return [Prediction(labels=labels, depth=depth) for _, _, (labels, depth) in results]


__all__ = ["BACKENDS", "DTYPES", "PRECISIONS", "Prediction", "PrecisionChoice", "Predictor", "depth_to_metres_",
           "resize_depth", "resize_labels", "resolve_device", "validate_image"]
