"""Where the model runs: PyTorch (eager or compiled) or ONNX Runtime.

Every backend takes the same input, an N x 3 x H x W batch at the checkpoint's
input size with RGB scaled to [0, 1] on the Predictor's device, and returns
(semantic logits, raw depth) as tensors on that device. So the Predictor's
pre- and post-processing is one piece of code whatever runs the model.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from typing import Sequence

import numpy as np
import torch

from mtan_ros.errors import ConfigError
from mtan_ros.inference.export import MAX_BATCH, NormalisedModel, onnx_model_bytes
from mtan_ros.inference.precision import cast_outside_float32, keep_depth_tail_float32

LOG = logging.getLogger("mtan_ros.inference")

BACKENDS = ("auto", "torch", "onnxruntime")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# What the onnxruntime backend needs when it exports the checkpoint itself.
ONNX_MODULES = ("onnxruntime", "onnx", "onnxscript")


def resolve_backend(requested: str, device: torch.device, precision: str, compile: bool) -> tuple[str, str]:
    """The backend to run and why. `auto`: ONNX Runtime on CPUs for fp32 where it is installed, else torch.

    Measured on a 2-core Zen 4 (avx512_bf16, no AMX), the demo's width-0.25
    checkpoint at 64x128, 40 interleaved rounds: ONNX Runtime fp32 1.32x of
    torch fp32 eager with outputs within tolerance of it; torch bf16 1.26x and
    torch.compile bf16 1.46x, both outside tolerance (mtan_ros.inference.precision);
    torch.compile fp32 1.29x after a 39 s start. On CUDA and for bf16/fp16 or
    compile requests, torch.
    """
    requested = (requested or "auto").strip().lower()
    if requested not in BACKENDS:
        raise ValueError(f"backend '{requested}' is not one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested, f"backend={requested}"
    if device.type == "cuda":
        return "torch", "backend auto runs torch on CUDA"
    if compile or precision not in ("auto", "fp32"):
        return "torch", f"backend auto runs torch for {'compile' if compile else 'precision=' + precision}"
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return "torch", f"backend auto runs torch: onnxruntime needs {', '.join(missing)} (mtan_ros[onnx])"
    return "onnxruntime", "backend auto runs onnxruntime fp32 on CPUs"


class TorchBackend:
    """The PyTorch model, optionally compiled with torch.compile.

    Reduced precision: the model is cast to it except for the depth tail, which
    stays float32 (see mtan_ros.inference.precision). Not autocast: on CPUs it
    runs max-unpooling in float32, converting each decoder stage's input there
    and back.
    """

    name = "torch"

    def __init__(self, wrapper: NormalisedModel, device: torch.device, precision: str, *,
                 channels_last: bool = True, compile: bool = False):
        self.device = device
        self.precision = precision
        self.input_dtype = DTYPES[precision]
        # channels_last suits oneDNN and cuDNN convolutions alike.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = wrapper.to(device=device, memory_format=self.memory_format)
        if precision != "fp32":
            keep_depth_tail_float32(self.model.model)
            cast_outside_float32(self.model, self.input_dtype)
        self.compiled = bool(compile)
        # Freezing folds the weights into the compiled graph (prepacked convolutions on CPUs);
        # compiling happens on the first call of each batch size.
        self._forward = torch.compile(self.model, dynamic=False, options={"freezing": True}) if compile \
            else self.model

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(x.to(dtype=self.input_dtype, memory_format=self.memory_format))

    def close(self) -> None:
        self.model = None
        self._forward = None


def onnxruntime_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime; empty when it is not installed."""
    try:
        import onnxruntime  # optional: pip install .[onnx]
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def choose_providers(device: torch.device, available: Sequence[str]) -> list[str]:
    """TensorRT, then CUDA, then CPU on a CUDA device (each where installed); the CPU provider on a CPU."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    if "CUDAExecutionProvider" not in chosen and "TensorrtExecutionProvider" not in chosen:
        raise ConfigError(f"backend onnxruntime on {device} needs onnxruntime-gpu (installed providers: "
                          f"{', '.join(available) or 'none'}); `pip install onnxruntime-gpu` or use device cpu")
    return chosen


def onnxruntime_precision(requested: str, providers: Sequence[str]) -> str:
    """fp16 only through TensorRT (which builds its own fp16 engine from the fp32 graph); fp32 otherwise."""
    tensorrt = bool(providers) and providers[0] == "TensorrtExecutionProvider"
    if requested == "auto":
        return "fp16" if tensorrt else "fp32"
    if requested == "fp16" and tensorrt:
        return "fp16"
    if requested != "fp32":
        LOG.warning("backend onnxruntime runs %s as fp32 (reduced precision needs the TensorRT provider)",
                    requested)
    return "fp32"


class OnnxRuntimeBackend:
    """The exported graph (see mtan_ros.inference.export) in an ONNX Runtime session.

    Inputs and outputs are bound to torch tensors in place (I/O binding), so on
    a GPU nothing leaves the device between pre-processing, the graph and
    post-processing.
    """

    name = "onnxruntime"
    compiled = False

    def __init__(self, model: bytes | str | os.PathLike, device: torch.device, precision: str,
                 num_classes: int, input_size: tuple[int, int], *, providers: Sequence[str] | None = None,
                 threads: int = 0):
        import onnxruntime  # optional: pip install .[onnx]

        self.device = device
        self.input_dtype = torch.float32
        self.num_classes = int(num_classes)
        self.input_size = tuple(input_size)
        self.providers = list(providers) if providers else choose_providers(device, onnxruntime_providers())
        self.precision = onnxruntime_precision(precision, self.providers)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about every node it leaves on the CPU
        if threads:
            options.intra_op_num_threads = int(threads)
        # ORT's worker threads otherwise spin after every run, taking the cores that DDS, the executor and
        # torch need: measured, torch bf16 ran at 0.61x instead of 1.45x of fp32 after an ORT session had run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
        self.session = onnxruntime.InferenceSession(source, sess_options=options,
                                                    providers=self._provider_options(self.providers))
        self.providers = self.session.get_providers()
        if self.precision == "fp16" and self.providers[0] != "TensorrtExecutionProvider":
            LOG.warning("the TensorRT provider did not start (providers: %s); running fp32",
                        ", ".join(self.providers))
            self.precision = "fp32"
        shape = self.session.get_inputs()[0].shape
        if list(shape[2:]) != list(self.input_size):
            raise ConfigError(f"the ONNX graph takes {shape[2]}x{shape[3]} images, the checkpoint "
                              f"{self.input_size[0]}x{self.input_size[1]}; export it again from this checkpoint")

    def _provider_options(self, providers: list[str]) -> list:
        index = self.device.index or 0
        height, width = self.input_size
        result: list = []
        for name in providers:
            if name == "TensorrtExecutionProvider":
                cache = os.path.join(tempfile.gettempdir(), "mtan_ros_tensorrt")
                os.makedirs(cache, exist_ok=True)
                result.append((name, {
                    "device_id": index, "trt_fp16_enable": self.precision == "fp16",
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                    # One engine for every batch size up to 4, built once per input size.
                    "trt_profile_min_shapes": f"image:1x3x{height}x{width}",
                    "trt_profile_opt_shapes": f"image:1x3x{height}x{width}",
                    "trt_profile_max_shapes": f"image:4x3x{height}x{width}",
                }))
            elif name == "CUDAExecutionProvider":
                result.append((name, {"device_id": index}))
            else:
                result.append(name)
        return result

    @classmethod
    def from_wrapper(cls, wrapper: NormalisedModel, device: torch.device, precision: str, num_classes: int,
                     input_size: tuple[int, int], **options) -> "OnnxRuntimeBackend":
        """Export `wrapper` (on the CPU, fp32) in memory and open it."""
        return cls(onnx_model_bytes(wrapper.float().cpu(), input_size), device, precision, num_classes,
                   input_size, **options)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] > MAX_BATCH:
            raise ValueError(f"batch of {x.shape[0]} images is larger than the {MAX_BATCH} the graph declares")
        x = x.to(dtype=torch.float32).contiguous()
        n, _, height, width = x.shape
        logits = torch.empty((n, self.num_classes, height, width), dtype=torch.float32, device=x.device)
        depth = torch.empty((n, 1, height, width), dtype=torch.float32, device=x.device)
        kind, index = x.device.type, x.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input("image", kind, index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output("semantic_logits", kind, index, np.float32, tuple(logits.shape), logits.data_ptr())
        binding.bind_output("depth", kind, index, np.float32, tuple(depth.shape), depth.data_ptr())
        if kind == "cuda":
            # ONNX Runtime works on its own stream: the input must be written before it starts.
            torch.cuda.current_stream(x.device).synchronize()
        self.session.run_with_iobinding(binding)
        return logits, depth

    def close(self) -> None:
        self.session = None
