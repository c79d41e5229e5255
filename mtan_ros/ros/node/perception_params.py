"""The perception node's parameters: types, ranges and descriptions here, values in config/perception.yaml.

Why split it this way: node and launch defaults that disagree are a classic source
of "works with ros2 launch, not with ros2 run" bugs. The values live in one file,
`config/perception.yaml`, which the launch file passes as its params file and which
the node also reads at start-up as its declared defaults.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from mtan_ros.ros.params import ParamSpec, find_defaults_file, load_defaults

NODE_NAME = "perception_node"
DEFAULTS_RELATIVE = "config/perception.yaml"
RELIABILITY_CHOICES = ("auto", "reliable", "best_effort")
# inference_threads above this many threads per usable core are refused: they only
# oversubscribe the cores, and start-up pays for each (1024 threads made configure
# take 6.5 s instead of 0.2 s on 2 cores).
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity outside Linux
        return os.cpu_count() or 1


MAX_INFERENCE_THREADS = THREADS_PER_CORE * usable_cores()

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", bool, "Configure and activate the node by itself at start-up (false: wait for "
              "`ros2 lifecycle set` or a lifecycle manager).", applies="startup"),
    ParamSpec("model_path", str, "Checkpoint file to load (written by mtan-train / mtan-demo).",
              applies="configure"),
    ParamSpec("device", str, "auto | cpu | cuda | cuda:N. auto picks the GPU when there is one, else the CPU.",
              applies="configure"),
    ParamSpec("precision", str, "auto: fp16 on CUDA; on CPUs with bf16 instructions bf16 where the warm-up "
              "measures it >= 1.1x faster and within tolerance of fp32, else fp32.",
              choices=("auto", "fp32", "fp16", "bf16"), applies="configure"),
    ParamSpec("backend", str, "Inference runtime: torch, onnxruntime (CPU, CUDA or TensorRT providers), or auto "
              "(onnxruntime for fp32 on CPUs where installed: faster there, slower to start; else torch).",
              choices=("torch", "onnxruntime", "auto"), applies="configure"),
    ParamSpec("compile", bool, "torch.compile the model when configured: faster on CPUs, slower start.",
              applies="configure"),
    ParamSpec("inference_threads", int, "CPU threads for inference; 0 = the measured default for this machine "
              f"(see the README, leaves room for the middleware). At most {THREADS_PER_CORE} per usable core "
              f"({MAX_INFERENCE_THREADS} here): more only oversubscribe the cores and slow configure down.",
              range=(0, MAX_INFERENCE_THREADS), applies="configure"),
    ParamSpec("cameras", list, "Camera names, e.g. [front, rear]: each reads <name>/image_raw (or "
              "<name>/image_raw/compressed) and <name>/camera_info and publishes every output under <name>/, and "
              "one model serves them all in batches. Empty: one camera on image_raw, camera_info and today's "
              "output topics.", applies="configure"),
    ParamSpec("max_batch_size", int, "Most camera frames run through the model in one batch; 0 = one per "
              "camera. Smaller batches answer sooner; larger ones save work per frame.", range=(0, 64)),
    ParamSpec("batch_mode", str, "How a batch of several camera frames runs: one_pass (one forward pass), "
              "parallel (one pass per frame, all at once; CPU only) or auto (one pass on CUDA; on CPUs whichever "
              "the configure warm-up times faster on the bare model for a batch of max_batch_size frames).",
              choices=("auto", "one_pass", "parallel"), applies="configure"),
    ParamSpec("compressed_input", bool,
              "Subscribe to image_raw/compressed (JPEG/PNG, sensor_msgs/CompressedImage) instead of image_raw.",
              applies="configure"),
    ParamSpec("input_reliability", str, "Reliability of the camera subscriptions. auto follows the camera's "
              "publishers (reliable when they all offer reliable, best effort when any offers best effort); the "
              "standard override qos_overrides.<topic>.subscription.reliability takes precedence.",
              choices=RELIABILITY_CHOICES),
    ParamSpec("no_input_warning_after", float, "Seconds a matched camera may deliver no complete frame before "
              "the node warns (log and /diagnostics) with the probable cause and its fix.", range=(0.5, 3600.0)),
    ParamSpec("max_input_pixels", int, "Images declaring more pixels than this are refused before anything is "
              "allocated (raise it for cameras above 12.6 Mpx).", range=(1, 1_000_000_000)),
    ParamSpec("lock_input_size", bool, "Refuse frames whose size differs from the first frame after activation "
              "or after it is set true (for cameras that never change resolution; guards against malformed or "
              "hostile frames); false releases the lock at once."),
    ParamSpec("output_resolution", str, "camera: outputs at the camera image's size; model: at the network's "
              "input size (depth/camera_info and points use scaled intrinsics), far cheaper for large cameras.",
              choices=("camera", "model")),
    ParamSpec("publish_depth", bool, "Publish depth (32FC1 metres) and depth/camera_info."),
    ParamSpec("publish_semantic", bool, "Publish semantic (mono8 class ids)."),
    ParamSpec("publish_semantic_color", bool, "Publish semantic_color (rgb8, the checkpoint's class colours)."),
    ParamSpec("publish_overlay", bool, "Publish overlay (rgb8, camera image blended with the class colours)."),
    ParamSpec("publish_points", bool,
              "Publish points (PointCloud2 xyz + rgb + label) once a valid camera_info has arrived."),
    ParamSpec("publish_confidence", bool, "Publish confidence (mono8, 255 x the probability of each pixel's class, "
              "aligned with semantic)."),
    ParamSpec("jpeg_quality", int, "JPEG quality of semantic_color/compressed, overlay/compressed (as "
              "compressed_image_transport's jpeg_quality).", range=(1, 100)),
    ParamSpec("png_level", int, "zlib level of the PNG topics (semantic/compressed, confidence/compressed, "
              "depth/compressedDepth), as the image_transport plugins' png_level.", range=(0, 9)),
    ParamSpec("depth_max", float, "depth/compressedDepth: farthest encodable depth in metres (as "
              "compressed_depth_image_transport's depth_max); farther depths arrive as NaN.", range=(0.5, 10000.0)),
    ParamSpec("depth_quantization", float, "depth/compressedDepth: the plugin's depth_quantization q; the "
              "quantisation step at depth d is about d^2 / (q (q + 1)) metres.", range=(1.0, 10000.0)),
    ParamSpec("overlay_alpha", float, "Weight of the class colours in overlay (0 = image only, 1 = colours only).",
              range=(0.0, 1.0)),
    ParamSpec("points_organized", bool, "points as an organised cloud (rows x columns of the sampled pixels, "
              "NaN where there is no depth): with points_stride 1 pixel-aligned with semantic and confidence, as "
              "Nav2's semantic segmentation layer needs; false: only the points with a depth."),
    ParamSpec("points_stride", int, "Use every N-th pixel in both directions for points.", range=(1, 64)),
    ParamSpec("max_depth", float, "Depth beyond this many metres is published as NaN (no estimate).",
              range=(0.1, 10000.0)),
    ParamSpec("diagnostics_period", float, "Seconds between /diagnostics messages.", range=(0.1, 60.0),
              applies="startup"),
    ParamSpec("warning_period", float, "Seconds between two warnings about the same problem.",
              range=(0.0, 3600.0)),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def defaults_file() -> Path:
    """config/perception.yaml, next to the sources or in the installed share."""
    return find_defaults_file(DEFAULTS_RELATIVE)


def load_perception_defaults(path: Optional[Path | str] = None, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The node's default values (from `path`, else config/perception.yaml), checked against SPECS."""
    return load_defaults(path if path is not None else defaults_file(), SPECS, node_name)
