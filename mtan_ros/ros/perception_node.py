"""The real-time perception node: camera image in, metric depth and semantic labels out.

Run it with `ros2 launch mtan_ros perception.launch.py model_path:=...`, or
`ros2 run mtan_ros perception_node --ros-args -p model_path:=...`, or
`python -m mtan_ros.ros.perception_node --ros-args -p model_path:=...`.

How it stays real time: the subscription (best effort, keep last 1) only drops the
message into a one-frame slot; a worker thread takes the newest frame, converts it,
runs the Predictor and publishes. Frames that arrive while the worker is busy replace
each other and are counted as dropped, so results always describe a recent image.
Outputs nobody subscribes to are not computed; with no subscriber at all the model
does not run.

Topics (relative, so namespaces and remaps apply):
  in   image_raw (sensor_msgs/Image) or image_raw/compressed (with compressed_input),
       camera_info (optional; needed for points and depth/camera_info)
  out  depth (32FC1 metres, NaN = no estimate), depth/camera_info, semantic (mono8),
       semantic_color (rgb8), overlay (rgb8), points (PointCloud2), /diagnostics
Every output carries the input image's header and size.
"""
from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mtan_ros.errors import ImageConversionError, NodeStartupError
from mtan_ros.ros import qos
from mtan_ros.ros.compressed import compressed_msg_to_rgb
from mtan_ros.ros.cv_bridge_check import bridge_status
from mtan_ros.ros.diagnostics import PipelineStats, diagnostic_array, diagnostic_status
from mtan_ros.ros.frame_slot import LatestFrameSlot
from mtan_ros.ros.image_messages import image_msg_to_rgb, new_image_msg
from mtan_ros.ros.params import KIND_WORDS, SPEC_BY_NAME, SPECS, ConfigError, ParamSpec, load_defaults
from mtan_ros.ros.pointcloud import PointCloudBuilder, scaled_camera_info
from mtan_ros.ros.throttle import Throttle

NODE_NAME = "perception_node"
_PARAM_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
# End-to-end latencies outside this window (ms) mean the camera stamps with another clock.
_PLAUSIBLE_LATENCY_MS = (0.0, 60_000.0)


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    description = spec.description if spec.runtime else spec.description + " Read at start-up only."
    descriptor = ParameterDescriptor(name=spec.name, type=_PARAM_TYPES[spec.kind], description=description)
    if spec.range is not None and spec.kind is float:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)
        ]
    elif spec.range is not None and spec.kind is int:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return descriptor


def set_nan_beyond(depth: np.ndarray, limit: float) -> None:
    """depth[depth > limit] = NaN in place, without branches.

    A boolean-mask assignment costs ~13 ms on a 2 Mpx map whose mask is noisy (branch
    mispredictions); OR-ing the quiet-NaN exponent bits into the selected float32 values
    costs ~2 ms whatever the mask looks like. Values above a positive limit are positive,
    so the result is a NaN (a NaN stays NaN).
    """
    beyond = np.greater(depth, np.float32(limit))
    if beyond.any():
        bits = depth.view(np.uint32)
        bits |= beyond.view(np.uint8).astype(np.uint32) * np.uint32(0x7FC00000)


class PerceptionNode(Node):
    """Subscribes a camera, runs the Predictor off the executor thread, publishes its results."""

    def __init__(self, predictor: Any = None, **node_kwargs: Any) -> None:
        """`predictor`: an already loaded Predictor (tests, benchmarks); by default model_path is loaded."""
        super().__init__(NODE_NAME, **node_kwargs)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.predictor = None
        self.p = self._declare_parameters()
        self.predictor = predictor if predictor is not None else self._load_predictor()
        self._palette_lut = self._make_palette_lut(self.predictor.class_colors)

        self._slot = LatestFrameSlot()
        self._stats = PipelineStats()
        self._throttle = Throttle(self.p["warning_period"])
        self._camera_info: CameraInfo | None = None
        self._clouds = PointCloudBuilder()

        out_qos = qos.output_qos()
        self.pub_depth = self.create_publisher(Image, "depth", out_qos)
        self.pub_depth_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_semantic = self.create_publisher(Image, "semantic", out_qos)
        self.pub_color = self.create_publisher(Image, "semantic_color", out_qos)
        self.pub_overlay = self.create_publisher(Image, "overlay", out_qos)
        self.pub_points = self.create_publisher(PointCloud2, "points", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())

        if self.p["compressed_input"]:
            self.sub_image = self.create_subscription(
                CompressedImage, "image_raw/compressed", self._on_image, qos.image_input_qos()
            )
        else:
            self.sub_image = self.create_subscription(Image, "image_raw", self._on_image, qos.image_input_qos())
        self.sub_info = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos.camera_info_qos())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="mtan-inference", daemon=True)
        self._worker.start()
        backend, why = bridge_status()
        self.get_logger().info(
            f"ready: {self.sub_image.topic_name} -> depth, semantic, semantic_color, overlay, points "
            f"(model {self.p['model_path'] or '<given>'} on {self.predictor.device}, {self.predictor.precision}, "
            f"{len(self.predictor.class_names)} classes; image conversion: {backend})"
        )

    # ------------------------------------------------------------------ start-up

    def _declare_parameters(self) -> dict[str, Any]:
        try:
            defaults = load_defaults(node_name=self.get_name())
        except ConfigError as exc:
            raise NodeStartupError(str(exc)) from None
        values = {}
        for spec in SPECS:
            try:
                param = self.declare_parameter(spec.name, defaults[spec.name], _descriptor(spec))
            except InvalidParameterTypeException as exc:
                raise NodeStartupError(
                    f"parameter {spec.name} must be {KIND_WORDS[spec.kind]} ({exc}); "
                    f"e.g. {spec.name}:={defaults[spec.name]!r}"
                ) from None
            except InvalidParameterValueException:
                raise NodeStartupError(
                    f"parameter {spec.name} is outside its range {spec.range}; the default is {defaults[spec.name]!r}"
                ) from None
            values[spec.name] = param.value
        return values

    def _load_predictor(self) -> Any:
        path = self.p["model_path"]
        if not path:
            raise NodeStartupError(
                "parameter model_path is empty: pass the checkpoint to use, e.g. "
                "`ros2 launch mtan_ros perception.launch.py model_path:=/path/to/checkpoint` or "
                "`--ros-args -p model_path:=/path/to/checkpoint` (mtan-train and mtan-demo write checkpoints)"
            )
        from mtan_ros.inference import Predictor  # imports torch: only once the node really starts
        from mtan_ros.inference.checkpoint import CheckpointError

        try:
            predictor = Predictor.from_checkpoint(path, device=self.p["device"], precision=self.p["precision"],
                                                  compile=self.p["compile"])
        except CheckpointError as exc:
            raise NodeStartupError(f"cannot load model_path {path!r}: {exc}") from None
        except (ValueError, RuntimeError) as exc:  # unknown device/precision, CUDA absent or broken
            raise NodeStartupError(
                f"cannot start the model from {path!r} on device={self.p['device']!r} "
                f"precision={self.p['precision']!r}: {exc}"
            ) from None
        # One inference now so the first camera frame does not pay for lazy initialisation.
        height, width = predictor.meta.input_size
        predictor(np.zeros((height, width, 3), np.uint8))
        return predictor

    @staticmethod
    def _make_palette_lut(colors: Any) -> np.ndarray:
        palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[:256]
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: len(palette), 0, :] = palette
        return lut

    # ------------------------------------------------------------------ executor callbacks

    def _on_image(self, msg: Image | CompressedImage) -> None:
        # Only hand the frame over: conversion and inference happen on the worker thread.
        replaced = self._slot.put((msg, time.monotonic()))
        self._stats.on_received(replaced)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        changes = {}
        for param in params:
            spec = SPEC_BY_NAME.get(param.name)
            if spec is None:  # use_sim_time and other parameters rclpy manages itself
                continue
            if not spec.runtime and param.value != self.p[spec.name]:
                return SetParametersResult(successful=False, reason=f"{spec.name} {spec.restart_reason}")
            changes[spec.name] = param.value
        self.p.update(changes)  # read by the worker per frame; each value is replaced atomically
        if "warning_period" in changes:
            self._throttle.period_s = changes["warning_period"]
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        backend, _ = bridge_status()
        status = diagnostic_status(
            f"{self.get_fully_qualified_name()}: perception",
            self._stats.snapshot(),
            device=str(self.predictor.device),
            precision=str(self.predictor.precision),
            input_topic=self.sub_image.topic_name,
            extra={
                "model_path": str(self.p["model_path"]),
                "image_conversion": backend,
                "camera_info_received": str(self._camera_info is not None).lower(),
            },
        )
        self.pub_diag.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # never let one frame end the worker
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: publishers may already be gone
                self._warn("internal", f"frame skipped after an unexpected error: {type(exc).__name__}: {exc}")
                self._stats.on_rejected(f"{type(exc).__name__}: {exc}")

    def _warn(self, key: str, text: str) -> None:
        line = self._throttle.message(key, text)
        if line:
            self.get_logger().warning(line)

    def _wanted(self) -> dict[str, bool]:
        p = self.p
        points = p["publish_points"] and self._camera_info is not None and self.pub_points.get_subscription_count() > 0
        return {
            "depth": p["publish_depth"]
            and (self.pub_depth.get_subscription_count() > 0 or self.pub_depth_info.get_subscription_count() > 0),
            "semantic": p["publish_semantic"] and self.pub_semantic.get_subscription_count() > 0,
            "color": p["publish_semantic_color"] and self.pub_color.get_subscription_count() > 0,
            "overlay": p["publish_overlay"] and self.pub_overlay.get_subscription_count() > 0,
            "points": points,
        }

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        wanted = self._wanted()
        if not any(wanted.values()):
            self._stats.on_idle()
            return
        topic = self.sub_image.topic_name
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_msg_to_rgb(msg, max_pixels=self.p["max_input_pixels"])
            else:
                rgb = image_msg_to_rgb(msg, max_pixels=self.p["max_input_pixels"])
        except ImageConversionError as exc:
            self._warn(exc.kind, f"{topic}: frame skipped: {exc}")
            self._stats.on_rejected(str(exc))
            return
        start = time.perf_counter()
        try:
            prediction = self.predictor(rgb)
        except ValueError as exc:
            self._warn("predictor", f"{topic}: frame skipped, the model refused it: {exc}")
            self._stats.on_rejected(str(exc))
            return
        inference_ms = (time.perf_counter() - start) * 1e3

        header = msg.header
        height, width = rgb.shape[:2]
        p = self.p
        if wanted["depth"] or wanted["points"]:
            depth_msg, depth = new_image_msg(header, height, width, "32FC1")
            np.copyto(depth, prediction.depth, casting="same_kind")
            set_nan_beyond(depth, p["max_depth"])
            if wanted["depth"]:
                self.pub_depth.publish(depth_msg)
                info = self._camera_info
                if info is not None:
                    self.pub_depth_info.publish(scaled_camera_info(info, header, width, height))
        if wanted["semantic"]:
            semantic_msg, labels = new_image_msg(header, height, width, "mono8")
            np.copyto(labels, prediction.labels, casting="unsafe")
            self.pub_semantic.publish(semantic_msg)
        if wanted["color"] or wanted["overlay"]:
            color_msg, color = new_image_msg(header, height, width, "rgb8")
            cv2.applyColorMap(np.ascontiguousarray(prediction.labels, dtype=np.uint8), self._palette_lut, dst=color)
            if wanted["color"]:
                self.pub_color.publish(color_msg)
            if wanted["overlay"]:
                alpha = float(p["overlay_alpha"])
                overlay_msg, overlay = new_image_msg(header, height, width, "rgb8")
                cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0, dst=overlay)
                self.pub_overlay.publish(overlay_msg)
        if wanted["points"]:
            info = self._camera_info
            try:
                cloud = self._clouds.build(header, depth, rgb, prediction.labels, info, p["points_stride"])
            except ValueError as exc:
                self._warn("camera_info", f"points skipped: {exc}")
            else:
                self.pub_points.publish(cloud)

        processing_ms = (time.monotonic() - received) * 1e3
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        latency_ms: float | None = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if not (_PLAUSIBLE_LATENCY_MS[0] <= latency_ms <= _PLAUSIBLE_LATENCY_MS[1]):
            latency_ms = None
        self._stats.on_published(inference_ms, processing_ms, latency_ms)

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop and join the worker, release the model (and cached GPU memory), destroy the node."""
        self._stop.set()
        if self._worker is not None:
            self._slot.close()
            self._worker.join(timeout=10.0)  # a daemon thread: never blocks the exit for longer
        device = str(getattr(self.predictor, "device", ""))
        if hasattr(self.predictor, "close"):
            self.predictor.close()
        self.predictor = None
        gc.collect()
        if device.startswith("cuda"):
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `perception_node`: 0 after Ctrl-C / SIGTERM, 1 when the node cannot start."""
    rclpy.init(args=argv)
    node: PerceptionNode | None = None
    code = 0
    try:
        node = PerceptionNode()
        rclpy.spin(node)
    except NodeStartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).error(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C under `ros2 launch` arrives twice (from the terminal, then forwarded by launch):
        # the second must not interrupt the cleanup with a KeyboardInterrupt traceback.
        previous = _ignore_shutdown_signals()
        try:
            if node is not None:
                node.close()
            rclpy.try_shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code


def _ignore_shutdown_signals() -> dict:
    """Ignore SIGINT/SIGTERM (main thread only); returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, signal.SIG_IGN)
    return previous


if __name__ == "__main__":
    sys.exit(main())
