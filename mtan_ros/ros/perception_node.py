"""The real-time perception node: camera image in, metric depth and semantic labels out.

Run it with `ros2 launch mtan_ros perception.launch.py model_path:=...`, or
`ros2 run mtan_ros perception_node --ros-args -p model_path:=...`, or
`python -m mtan_ros.ros.perception_node --ros-args -p model_path:=...`.

A managed (lifecycle) node: configure reads the parameters and loads the model (with
one warm-up inference), activate subscribes to the camera and starts publishing,
deactivate stops taking frames (the model stays loaded), cleanup releases the model
(and GPU memory); `ros2 lifecycle set/get` and lifecycle managers drive it. With
`autostart` (the default) it configures and activates itself, so `ros2 run` works
alone; it then exits with code 1 when the model cannot be loaded.

How it stays real time: the camera subscription (keep last 1, reliability matched to
the camera, see camera_input) only drops the message into a one-frame slot; a
worker thread takes the newest frame, decodes it, runs the Predictor and publishes.
Frames that arrive while the worker is busy replace each other and are counted as
dropped, so results always describe a recent image. Outputs nobody subscribes to
are not computed; with no subscriber at all the model does not run.

Topics (relative, so namespaces and remaps apply):
  in   image_raw (sensor_msgs/Image) or image_raw/compressed (with compressed_input),
       camera_info (optional; needed for points and depth/camera_info)
  out  depth (32FC1 metres, NaN = no estimate), depth/camera_info, semantic (mono8),
       semantic_color (rgb8), overlay (rgb8), points (PointCloud2), /diagnostics
Every output carries the input image's header, and its size unless
`output_resolution: model` asks for the network's size.
"""
from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Optional

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mtan_ros.errors import ConfigError, ImageConversionError, MtanRosError, NodeStartupError
from mtan_ros.ros import qos, transport
from mtan_ros.ros.camera_input import CameraSubscription
from mtan_ros.ros.compressed import check_compressed_msg, compressed_msg_to_rgb, jpeg_decoder_name
from mtan_ros.ros.cv_bridge_check import bridge_status
from mtan_ros.ros.diagnostics import PipelineStats, diagnostic_array, diagnostic_status
from mtan_ros.ros.frame_slot import LatestFrameSlot
from mtan_ros.ros.image_limits import keep_frame_buffers_mapped, release_freed_memory
from mtan_ros.ros.image_messages import image_msg_to_rgb
from mtan_ros.ros.input_monitor import InputMonitor
from mtan_ros.ros.outputs import MessagePool, OutputPublishers
from mtan_ros.ros.params import coerce, declare_parameters, refuse_change
from mtan_ros.ros.perception_params import NODE_NAME, SPEC_BY_NAME, SPECS, load_perception_defaults
from mtan_ros.ros.pointcloud import PointCloudBuilder, camera_info_problem, scaled_camera_info
from mtan_ros.ros.throttle import Throttle

# End-to-end latencies outside this window (ms) mean the camera stamps with another clock.
_PLAUSIBLE_LATENCY_MS = (0.0, 60_000.0)
# Class ids travel as mono8, and 255 means "void" in ground truth and evaluation.
MAX_CLASSES = 255
# How often the camera's publishers are looked at (reliability, silence diagnosis).
GRAPH_PERIOD_S = 0.2


def default_inference_threads(cpu_count: Optional[int] = None, environ: Optional[dict] = None) -> int:
    """CPU threads for inference when the parameter is 0: OMP_NUM_THREADS if the user set it, else every core.

    Measured on 2 cores (README, Threads): a full-width model needs both cores (773 ms end
    to end at 2 Mpx against 957 ms with one thread), and the node's inference then takes
    no longer than the bare model's.
    """
    given = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return cpu_count or os.cpu_count() or 1


class PerceptionNode(LifecycleNode):
    """Subscribes a camera, runs the Predictor off the executor thread, publishes its results."""

    def __init__(self, predictor: Any = None, **node_kwargs: Any) -> None:
        """`predictor`: an already loaded Predictor (tests, benchmarks); by default model_path is loaded."""
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self.p = declare_parameters(self, SPECS, load_perception_defaults(node_name=self.get_name()))
        except ConfigError as exc:
            raise NodeStartupError(str(exc)) from None
        self._given_predictor = predictor
        self.predictor: Any = None
        self._outputs: Optional[OutputPublishers] = None
        self._pool = MessagePool()
        self._palette_lut: Optional[np.ndarray] = None
        self._slot = LatestFrameSlot()
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._stats = PipelineStats()
        self._throttle = Throttle(self.p["warning_period"])
        self._camera_info: Optional[CameraInfo] = None
        self._input_type: Any = Image
        self._clouds = PointCloudBuilder()
        self._image_sub: Optional[CameraSubscription] = None
        self._info_sub: Optional[CameraSubscription] = None
        self._monitor: Optional[InputMonitor] = None
        self._graph_timer: Any = None
        self._warned_problem: Optional[str] = None
        self._locked_size: Optional[tuple[int, int]] = None
        self.lifecycle_state = "unconfigured"
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> bool:
        """Configure and activate (what `autostart` does); False when configuring failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except NodeStartupError as exc:
            self._release_model()
            if self.context.ok():
                self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:
            self._release_model()
            if not self.context.ok():  # shut down while loading (Ctrl-C, SIGTERM): not a failure to report
                return TransitionCallbackReturn.FAILURE
            # A bug, not a user error: rclpy would swallow it silently, so say it with its traceback.
            self.get_logger().error(f"configure failed unexpectedly: {type(exc).__name__}: {_first_line(exc)}\n"
                                    + traceback.format_exc())
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        self.lifecycle_state = "active"
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.lifecycle_state = "inactive"
        self.get_logger().info("inactive: not taking frames (the model stays loaded)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self.lifecycle_state = "unconfigured"
        self.get_logger().info("unconfigured: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_model()
        self.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_model()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ configure / activate

    def _configure(self) -> None:
        self.predictor = self._given_predictor if self._given_predictor is not None else self._load_predictor()
        classes = len(self.predictor.class_names)
        if classes > MAX_CLASSES:
            raise NodeStartupError(
                f"model_path {self.p['model_path']!r} has {classes} classes, but semantic is published as mono8 "
                f"class ids (at most {MAX_CLASSES} classes; 255 is void): use a checkpoint with fewer classes")
        self._palette_lut = self._make_palette_lut(self.predictor.class_colors)
        self._outputs = OutputPublishers(self, on_incompatible=self._on_output_incompatible)
        self.get_logger().info(
            f"configured: model {self.p['model_path'] or '<given>'} on {self.predictor.device}, "
            f"{self.predictor.precision}, {classes} classes, input {self._input_size()[0]}x{self._input_size()[1]}")
        choice = getattr(self.predictor, "precision_choice", None)
        if choice is not None:
            self.get_logger().info(f"precision {choice}")

    def _load_predictor(self) -> Any:
        path = self.p["model_path"]
        if not path:
            raise NodeStartupError(
                "parameter model_path is empty: pass the checkpoint to use, e.g. "
                "`ros2 launch mtan_ros perception.launch.py model_path:=/path/to/checkpoint` or "
                "`--ros-args -p model_path:=/path/to/checkpoint` (mtan-train and mtan-demo write checkpoints)")
        from mtan_ros.errors import CheckpointError
        from mtan_ros.inference import Predictor  # imports torch: only once the node really starts

        threads = self._set_inference_threads()
        try:
            predictor = Predictor.from_checkpoint(path, device=self.p["device"], precision=self.p["precision"],
                                                  compile=self.p["compile"], backend=self.p["backend"],
                                                  threads=threads)
        except CheckpointError as exc:
            raise NodeStartupError(f"cannot load model_path {path!r}: {exc}") from None
        except (ValueError, RuntimeError, ImportError) as exc:  # unknown device/precision, CUDA or a runtime absent
            raise NodeStartupError(
                f"cannot start the model from {path!r} on device={self.p['device']!r} "
                f"precision={self.p['precision']!r} backend={self.p['backend']!r}: {_first_line(exc)}") from None
        # One inference now, so the first camera frame does not pay for lazy initialisation.
        height, width = predictor.input_size
        try:
            predictor(np.zeros((height, width, 3), np.uint8))
        except (ValueError, RuntimeError) as exc:
            raise NodeStartupError(f"model_path {path!r} loads but cannot run on {predictor.device}: "
                                   f"{_first_line(exc)}") from None
        return predictor

    def _set_inference_threads(self) -> int:
        """Threads for inference (torch's, and ONNX Runtime's through the Predictor)."""
        import torch

        threads = self.p["inference_threads"] or default_inference_threads()
        torch.set_num_threads(threads)
        return threads

    def _input_size(self) -> tuple[int, int]:
        return tuple(self.predictor.input_size)

    @staticmethod
    def _make_palette_lut(colors: Any) -> np.ndarray:
        palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[:256]
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: len(palette), 0, :] = palette
        return lut

    def _activate(self) -> None:
        compressed = self.p["compressed_input"]
        self._input_type = CompressedImage if compressed else Image
        topic = "image_raw/compressed" if compressed else "image_raw"
        profile = transport.profile_path()
        self._monitor = InputMonitor(self.resolve_topic_name(topic), self.p["no_input_warning_after"],
                                     profile_hint=str(profile) if profile else "")
        self._warned_problem = None
        self._locked_size = None
        requested = self._requested_reliability
        keep_frame_buffers_mapped()
        self._image_sub = CameraSubscription(self, self._input_type, topic, self._on_image, requested=requested,
                                             monitor=self._monitor)
        self._info_sub = CameraSubscription(self, CameraInfo, "camera_info", self._on_camera_info,
                                            requested=requested)
        # Steady clock: with use_sim_time a ROS-time timer would wait for the first /clock message.
        self._graph_timer = self.create_timer(GRAPH_PERIOD_S, self._refresh_inputs, clock=self._steady)
        self._stop.clear()
        self._slot = LatestFrameSlot()
        self._worker = threading.Thread(target=self._work, name="mtan-inference", daemon=True)
        self._worker.start()
        backend, _ = bridge_status()
        self.get_logger().info(f"active: {self._image_sub.topic_name} -> depth, semantic, semantic_color, "
                               f"overlay, points (image conversion: {backend})")

    def _requested_reliability(self) -> str:
        return self.p["input_reliability"]

    # ------------------------------------------------------------------ deactivate / cleanup

    def _deactivate(self) -> None:
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)  # a daemon thread: never blocks the exit for longer
            self._worker = None
        if self._graph_timer is not None:
            self.destroy_timer(self._graph_timer)
            self._graph_timer = None
        for subscription in (self._image_sub, self._info_sub):
            if subscription is not None:
                subscription.destroy()
        self._image_sub = self._info_sub = None
        self._monitor = None
        self._camera_info = None

    def _release_model(self) -> None:
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        self._pool.clear()
        device = str(getattr(self.predictor, "device", ""))
        if self.predictor is not None and self.predictor is not self._given_predictor:
            if hasattr(self.predictor, "close"):
                self.predictor.close()
        self.predictor = None
        gc.collect()
        if device.startswith("cuda"):
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def close(self) -> None:
        """Stop the worker, release the model (and cached GPU memory), destroy the node."""
        self._deactivate()
        self._release_model()
        self.destroy_node()

    # ------------------------------------------------------------------ executor callbacks

    def _on_image(self, msg: Any) -> None:
        """Hand the frame to the worker (decoding and inference happen there).

        A compressed frame's declared size is checked here, before it takes the slot: a
        stream of decode bombs must never displace the good frames between them.
        """
        if isinstance(msg, CompressedImage):
            try:
                check_compressed_msg(msg, max_pixels=self.p["max_input_pixels"], expected_size=self._locked_size)
            except ImageConversionError as exc:
                self._stats.on_received(False)
                self._reject(exc.kind, f"{self._image_sub.topic_name}: frame skipped: {exc}")
                return
        replaced = self._slot.put((msg, time.monotonic()))
        self._stats.on_received(replaced)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        problem = camera_info_problem(msg)
        if problem is not None:
            topic = self._info_sub.topic_name if self._info_sub else "camera_info"
            self._warn(f"camera_info.invalid:{problem}",
                       f"{topic}: ignored, it {problem}; points and depth/camera_info wait for a valid one")
            self._camera_info = None
            return
        self._camera_info = msg
        if self._monitor is not None:
            self._monitor.expect_frames(msg.width, msg.height)

    def _refresh_inputs(self) -> None:
        for subscription in (self._image_sub, self._info_sub):
            if subscription is not None:
                subscription.refresh()
        monitor = self._monitor
        if monitor is None:
            return
        self._stats.on_lost_in_transport(monitor.lost)
        problem = monitor.problem()
        if problem is None:
            self._warned_problem = None
        elif problem.code != self._warned_problem:
            self._warned_problem = problem.code
            self.get_logger().warning(problem.text)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        changes = {}
        configured = self.lifecycle_state in ("inactive", "active")
        for param in params:
            spec = SPEC_BY_NAME.get(param.name)
            if spec is None:  # use_sim_time, qos_overrides and other parameters rclpy manages itself
                continue
            try:
                value = coerce(spec, param.value)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            reason = refuse_change(spec, configured, self.get_fully_qualified_name())
            if reason and value != self.p[spec.name]:
                return SetParametersResult(successful=False, reason=reason)
            changes[spec.name] = value
        self.p.update(changes)  # read by the worker per frame; each value is replaced atomically
        if "warning_period" in changes:
            self._throttle.period_s = changes["warning_period"]
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        backend, _ = bridge_status()
        problem = self._monitor.problem() if self._monitor is not None else None
        status = diagnostic_status(
            f"{self.get_fully_qualified_name()}: perception",
            self._stats.snapshot(),
            device=str(getattr(self.predictor, "device", "none")),
            precision=str(getattr(self.predictor, "precision", "none")),
            input_topic=self._image_sub.topic_name if self._image_sub is not None else "",
            warning=problem.text if problem is not None else None,
            inactive=None if self.lifecycle_state == "active" else self.lifecycle_state,
            extra={
                "lifecycle_state": self.lifecycle_state,
                "model_path": str(self.p["model_path"]),
                "precision_choice": str(getattr(self.predictor, "precision_choice", "")),
                "image_conversion": backend,
                "jpeg_decoder": jpeg_decoder_name(),
                "input_reliability": qos.reliability_word(self._image_sub.reliability) if self._image_sub else "",
                "camera_info_received": str(self._camera_info is not None).lower(),
            },
        )
        self.pub_diag.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        slot = self._slot
        while not self._stop.is_set():
            item = slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # never let one frame end the worker
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: publishers may already be gone
                self._reject("internal", f"frame skipped after an unexpected error: {type(exc).__name__}: "
                                         f"{_first_line(exc)}")

    def _on_output_incompatible(self, topic: str, policy: str) -> None:
        self._warn(f"output_qos.{topic}",
                   f"{topic}: a subscriber asks for a {policy} policy this output does not offer, so it receives "
                   f"nothing. Outputs are reliable, volatile, keep last 1; subscribe with volatile durability and "
                   f"no deadline or liveliness requirement (the defaults of RViz and ros2 bag record)")

    def _warn(self, key: str, text: str) -> None:
        line = self._throttle.message(key, text)
        if line:
            self.get_logger().warning(line)

    def _reject(self, kind: str, text: str) -> None:
        self._warn(kind, text)
        self._stats.on_rejected(text)

    def _decode(self, msg: Any) -> np.ndarray:
        """H x W x 3 RGB of a camera frame; ImageConversionError if unusable."""
        limits = {"max_pixels": self.p["max_input_pixels"], "expected_size": self._locked_size}
        if isinstance(msg, CompressedImage):
            return compressed_msg_to_rgb(msg, **limits)
        return image_msg_to_rgb(msg, **limits)

    def _process(self, msg: Any, received: float) -> None:
        outputs, predictor = self._outputs, self.predictor
        camera_info = self._camera_info
        wanted = outputs.wanted(self.p, camera_info is not None)
        if not any(wanted.values()):
            self._stats.on_idle()
            return
        topic = self._image_sub.topic_name if self._image_sub is not None else "image_raw"
        try:
            rgb = self._decode(msg)
        except ImageConversionError as exc:
            self._reject(exc.kind, f"{topic}: frame skipped: {exc}")
            release_freed_memory()
            return
        if self.p["lock_input_size"] and self._locked_size is None:
            self._locked_size = rgb.shape[:2]
        p, pool, header = self.p, self._pool, msg.header
        camera_size = rgb.shape[:2]
        height, width = camera_size if p["output_resolution"] == "camera" else self._input_size()
        depth_msg, depth = pool.get("depth", header, height, width, "32FC1")
        labels_msg, labels = pool.get("semantic", header, height, width, "mono8")
        start = time.perf_counter()
        try:
            predictor(rgb, output_size=(height, width), max_depth=p["max_depth"], out=(labels, depth))
        except ValueError as exc:
            self._reject("predictor", f"{topic}: frame skipped, the model refused it: {_first_line(exc)}")
            return
        inference_ms = (time.perf_counter() - start) * 1e3

        if wanted["depth"]:
            outputs.publish("depth", depth_msg)
        if wanted["depth/camera_info"]:
            outputs.publish("depth/camera_info", scaled_camera_info(camera_info, header, width, height))
        if wanted["semantic"]:
            outputs.publish("semantic", labels_msg)
        image = rgb
        if (height, width) != camera_size and (wanted["overlay"] or wanted["points"]):
            image = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        if wanted["semantic_color"] or wanted["overlay"]:
            color_msg, color = pool.get("semantic_color", header, height, width, "rgb8")
            cv2.applyColorMap(labels, self._palette_lut, dst=color)
            if wanted["semantic_color"]:
                outputs.publish("semantic_color", color_msg)
            if wanted["overlay"]:
                alpha = float(p["overlay_alpha"])
                overlay_msg, overlay = pool.get("overlay", header, height, width, "rgb8")
                cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0, dst=overlay)
                outputs.publish("overlay", overlay_msg)
        if wanted["points"]:
            try:
                cloud = self._clouds.build(header, depth, image, labels, camera_info, p["points_stride"])
            except ValueError as exc:
                self._warn("camera_info.points", f"points skipped: {exc}")
            else:
                outputs.publish("points", cloud)
        self._record(header, received, inference_ms)

    def _record(self, header: Any, received: float, inference_ms: float) -> None:
        processing_ms = (time.monotonic() - received) * 1e3
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        latency_ms: Optional[float] = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if not (_PLAUSIBLE_LATENCY_MS[0] <= latency_ms <= _PLAUSIBLE_LATENCY_MS[1]):
            latency_ms = None
        self._stats.on_published(inference_ms, processing_ms, latency_ms)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, cut to `limit` characters (library errors can be long)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of `perception_node`: 0 after Ctrl-C / SIGTERM, 1 when the node cannot start.

    Unless the user configured Fast DDS, the package's shared-memory profile is used (as
    perception.launch.py does), so that full-resolution outputs reach local subscribers.
    """
    os.environ.update(transport.large_image_env())
    rclpy.init(args=argv)
    node: Optional[PerceptionNode] = None
    code = 0
    try:
        node = PerceptionNode()
        if node.p["autostart"] and not node.start():
            code = 1 if node.context.ok() else 0
        if code == 0 and node.context.ok():
            rclpy.spin(node)
    except MtanRosError as exc:  # NodeStartupError, or any other error the user can fix
        rclpy.logging.get_logger(NODE_NAME).error(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # The context was shut down (SIGTERM, Ctrl-C) while the node was still starting.
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
