"""One camera of the perception node: its subscriptions, input checks, outputs and counters.

Why a class: the node serves one camera on its own topics, or several, each under
its name (`front/image_raw` in, `front/depth` out, ...). Every camera needs the same
things, whatever the others do: QoS that follows its driver, an input monitor that
explains silence, size limits and lock, counters, output publishers and reusable
message buffers. The single-camera node is this class named "" on today's topics,
so there is one code path. The node's worker calls `prepare` (decode, pick the
buffers) for each camera of a batch, runs the model once, then `publish`, the one
place where a camera's results become messages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mtan_ros.bags.messages import stamp_ns
from mtan_ros.errors import ImageConversionError
from mtan_ros.imaging.compressed import check_compressed_msg, compressed_msg_to_rgb
from mtan_ros.imaging.limits import release_freed_memory
from mtan_ros.pipeline.batch_scheduler import BatchScheduler
from mtan_ros.pipeline.input_monitor import InputMonitor
from mtan_ros.ros.camera import qos
from mtan_ros.ros.camera.camera_input import CameraSubscription
from mtan_ros.ros.camera.image_messages import image_msg_to_rgb
from mtan_ros.ros.node.diagnostics import PipelineStats, diagnostic_status
from mtan_ros.ros.node.outputs import MessagePool, OutputPublishers
from mtan_ros.ros.node.pointcloud import PointCloudBuilder, camera_info_problem, scaled_camera_info

# End-to-end latencies outside this window (ms) mean the camera stamps with another clock.
_PLAUSIBLE_LATENCY_MS = (0.0, 60_000.0)


@dataclass
class Job:
    """One camera's frame, decoded, and the message buffers its results are written into."""

    camera: "CameraState"
    header: Any
    received: float
    rgb: np.ndarray
    camera_info: Optional[CameraInfo]
    wanted: dict[str, bool]
    depth_msg: Image
    depth: np.ndarray
    labels_msg: Image
    labels: np.ndarray
    confidence: Optional[np.ndarray] = None  # filled by the model when confidence or its compressed form is wanted

    @property
    def wants_confidence(self) -> bool:
        return self.wanted["confidence"] or self.wanted["confidence/compressed"]

    @property
    def out(self) -> tuple[np.ndarray, np.ndarray]:
        return self.labels, self.depth


class CameraState:
    """One camera: made with the node, outputs created by `configure`, subscribed by `activate`.

    `params` is the node's live parameter dict (read per frame); `warn(key, text)`
    logs a throttled warning.
    """

    def __init__(self, node: LifecycleNode, name: str, params: dict[str, Any],
                 warn: Callable[[str, str], None]) -> None:
        self.node = node
        self.name = name
        self.prefix = f"{name}/" if name else ""
        self.p = params
        self._warn_throttled = warn
        self.stats = PipelineStats()
        self.outputs: Optional[OutputPublishers] = None
        self.pool = MessagePool()
        self.clouds = PointCloudBuilder()
        self.camera_info: Optional[CameraInfo] = None
        self.image_sub: Optional[CameraSubscription] = None
        self.info_sub: Optional[CameraSubscription] = None
        self.monitor: Optional[InputMonitor] = None
        self.locked_size: Optional[tuple[int, int]] = None
        self._warned_problem: Optional[str] = None
        self._scheduler: Optional[BatchScheduler] = None

    def __repr__(self) -> str:
        return f"camera {self.name!r}" if self.name else "the camera"

    @property
    def image_topic(self) -> str:
        """The resolved input topic (what the user remaps), also while not subscribed."""
        if self.image_sub is not None:
            return self.image_sub.topic_name
        return self.node.resolve_topic_name(self.prefix + self._image_relative())

    def _image_relative(self) -> str:
        return "image_raw/compressed" if self.p["compressed_input"] else "image_raw"

    # ------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        self.outputs = OutputPublishers(self.node, on_incompatible=self._on_output_incompatible, prefix=self.prefix)

    def release(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        self.pool.clear()

    def activate(self, scheduler: BatchScheduler, requested: Callable[[], str], profile_hint: str) -> None:
        """Subscribe (image and camera_info, reliability following the camera); frames go to `scheduler`."""
        msg_type = CompressedImage if self.p["compressed_input"] else Image
        topic = self.prefix + self._image_relative()
        self.monitor = InputMonitor(self.node.resolve_topic_name(topic), self.p["no_input_warning_after"],
                                    profile_hint=profile_hint)
        self._warned_problem = None
        self.locked_size = None
        self._scheduler = scheduler
        self.image_sub = CameraSubscription(self.node, msg_type, topic, self._on_image, requested=requested,
                                            monitor=self.monitor)
        self.info_sub = CameraSubscription(self.node, CameraInfo, self.prefix + "camera_info", self._on_camera_info,
                                           requested=requested)

    def deactivate(self) -> None:
        for subscription in (self.image_sub, self.info_sub):
            if subscription is not None:
                subscription.destroy()
        self.image_sub = self.info_sub = None
        self._scheduler = None
        self.monitor = None
        self.camera_info = None

    # ------------------------------------------------------------------ executor callbacks

    def _on_image(self, msg: Any) -> None:
        """Hand the frame to the worker (decoding and inference happen there).

        A compressed frame's declared size is checked here, before it takes this camera's
        place in the batch: a stream of decode bombs must never displace the good frames
        between them.
        """
        if isinstance(msg, CompressedImage):
            try:
                check_compressed_msg(msg, max_pixels=self.p["max_input_pixels"], expected_size=self.expected_size())
            except ImageConversionError as exc:
                self.stats.on_received(False)
                self.reject(exc.kind, f"{self.image_topic}: frame skipped: {exc}")
                return
        scheduler = self._scheduler
        if scheduler is None:
            return
        replaced = scheduler.put(self, (msg, time.monotonic()))
        self.stats.on_received(replaced)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        problem = camera_info_problem(msg)
        if problem is not None:
            topic = self.info_sub.topic_name if self.info_sub else self.prefix + "camera_info"
            self.warn(f"camera_info.invalid:{problem}",
                      f"{topic}: ignored, it {problem}; points and depth/camera_info wait for a valid one")
            self.camera_info = None
            return
        self.camera_info = msg
        if self.monitor is not None:
            self.monitor.expect_frames(msg.width, msg.height)

    def refresh(self) -> None:
        """Re-match the subscriptions to the camera's publishers; log a new input problem once."""
        for subscription in (self.image_sub, self.info_sub):
            if subscription is not None:
                subscription.refresh()
        monitor = self.monitor
        if monitor is None:
            return
        self.stats.on_lost_in_transport(monitor.lost)
        self._log_new_problem(monitor.problem())

    def _log_new_problem(self, problem: Any) -> None:
        """Log an input problem the first time it is seen, by the graph refresh or by /diagnostics.

        Both look at the monitor on their own timers; a problem that /diagnostics reports must
        also reach the log, even if it is gone before the next refresh (a camera that stopped).
        """
        if problem is None:
            self._warned_problem = None
        elif problem.code != self._warned_problem:
            self._warned_problem = problem.code
            self.node.get_logger().warning(problem.text)

    def _on_output_incompatible(self, topic: str, policy: str) -> None:
        self.warn(f"output_qos.{topic}",
                  f"{topic}: a subscriber asks for a {policy} policy this output does not offer, so it receives "
                  f"nothing. Outputs are reliable, volatile, keep last 1; subscribe with volatile durability and "
                  f"no deadline or liveliness requirement (the defaults of RViz and ros2 bag record)")

    # ------------------------------------------------------------------ problems

    def warn(self, key: str, text: str) -> None:
        """A throttled warning; one camera's problem never silences another's."""
        self._warn_throttled(f"{self.name}|{key}", text)

    def reject(self, kind: str, text: str) -> None:
        self.warn(kind, text)
        self.stats.on_rejected(text)

    def expected_size(self) -> Optional[tuple[int, int]]:
        """The locked (height, width) while lock_input_size is true, else None: the lock follows its parameter."""
        return self.locked_size if self.p["lock_input_size"] else None

    # ------------------------------------------------------------------ worker thread

    def prepare(self, msg: Any, received: float, output_size: Optional[tuple[int, int]]) -> Optional[Job]:
        """The frame decoded, with buffers of its output size (None: the camera's), or None if nothing is due.

        Nothing is decoded when no output of this camera has a subscriber; a bad frame is
        rejected for this camera alone.
        """
        camera_info = self.camera_info
        wanted = self.outputs.wanted(self.p, camera_info is not None)
        if not any(wanted.values()):
            self.stats.on_idle()
            return None
        try:
            rgb = self._decode(msg)
        except ImageConversionError as exc:
            self.reject(exc.kind, f"{self.image_topic}: frame skipped: {exc}")
            release_freed_memory()
            return None
        if self.p["lock_input_size"] and self.locked_size is None:
            self.locked_size = rgb.shape[:2]
        height, width = output_size or rgb.shape[:2]
        header = msg.header
        depth_msg, depth = self.pool.get("depth", header, height, width, "32FC1")
        labels_msg, labels = self.pool.get("semantic", header, height, width, "mono8")
        return Job(self, header, received, rgb, camera_info, wanted, depth_msg, depth, labels_msg, labels)

    def _decode(self, msg: Any) -> np.ndarray:
        """H x W x 3 RGB of a camera frame; ImageConversionError if unusable."""
        limits = {"max_pixels": self.p["max_input_pixels"], "expected_size": self.expected_size()}
        if isinstance(msg, CompressedImage):
            return compressed_msg_to_rgb(msg, **limits)
        return image_msg_to_rgb(msg, **limits)

    def publish(self, job: Job, palette_lut: np.ndarray, inference_ms: float) -> None:
        """Every wanted output of `job` (its depth and labels filled by the model), with the frame's header.

        Compressed forms are encoded here, on the inference worker, and only when subscribed.
        """
        outputs, p, pool, header, wanted = self.outputs, self.p, self.pool, job.header, job.wanted
        depth, labels, rgb = job.depth, job.labels, job.rgb
        height, width = depth.shape
        if wanted["depth"]:
            outputs.publish("depth", job.depth_msg)
        if wanted["depth/compressedDepth"]:
            outputs.publish_compressed("depth/compressedDepth", header, depth, p)
        if wanted["depth/camera_info"]:
            outputs.publish("depth/camera_info", scaled_camera_info(job.camera_info, header, width, height))
        if wanted["semantic"]:
            outputs.publish("semantic", job.labels_msg)
        if wanted["semantic/compressed"]:
            outputs.publish_compressed("semantic/compressed", header, labels, p)
        if job.confidence is not None:
            if wanted["confidence"]:
                confidence_msg, confidence = pool.get("confidence", header, height, width, "mono8")
                confidence[...] = job.confidence
                outputs.publish("confidence", confidence_msg)
            if wanted["confidence/compressed"]:
                outputs.publish_compressed("confidence/compressed", header, job.confidence, p)
        want_color = wanted["semantic_color"] or wanted["semantic_color/compressed"]
        want_overlay = wanted["overlay"] or wanted["overlay/compressed"]
        image = rgb
        if (height, width) != rgb.shape[:2] and (want_overlay or wanted["points"]):
            image = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        if want_color or want_overlay:
            color_msg, color = pool.get("semantic_color", header, height, width, "rgb8")
            cv2.applyColorMap(labels, palette_lut, dst=color)
            if wanted["semantic_color"]:
                outputs.publish("semantic_color", color_msg)
            if wanted["semantic_color/compressed"]:
                outputs.publish_compressed("semantic_color/compressed", header, color, p)
            if want_overlay:
                alpha = float(p["overlay_alpha"])
                overlay_msg, overlay = pool.get("overlay", header, height, width, "rgb8")
                cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0, dst=overlay)
                if wanted["overlay"]:
                    outputs.publish("overlay", overlay_msg)
                if wanted["overlay/compressed"]:
                    outputs.publish_compressed("overlay/compressed", header, overlay, p)
        if wanted["points"]:
            try:
                cloud = self.clouds.build(header, depth, image, labels, job.camera_info, p["points_stride"],
                                          p["points_organized"])
            except ValueError as exc:
                self.warn("camera_info.points", f"{self.prefix}points skipped: {exc}")
            else:
                outputs.publish("points", cloud)
        self._record(job, inference_ms)

    def _record(self, job: Job, inference_ms: float) -> None:
        processing_ms = (time.monotonic() - job.received) * 1e3
        latency_ms: Optional[float] = (self.node.get_clock().now().nanoseconds - stamp_ns(job.header.stamp)) / 1e6
        if not (_PLAUSIBLE_LATENCY_MS[0] <= latency_ms <= _PLAUSIBLE_LATENCY_MS[1]):
            latency_ms = None
        self.stats.on_published(inference_ms, processing_ms, latency_ms)

    # ------------------------------------------------------------------ diagnostics

    def diagnostic_status(self, node_name: str, *, device: str, precision: str, inactive: Optional[str],
                          extra: dict[str, str]) -> DiagnosticStatus:
        """This camera's status: `<node>: perception` for the single camera, `<node>: perception <name>` else."""
        problem = self.monitor.problem() if self.monitor is not None else None
        if problem is not None:
            self._log_new_problem(problem)
        name = f"{node_name}: perception" + (f" {self.name}" if self.name else "")
        return diagnostic_status(
            name, self.stats.snapshot(), device=device, precision=precision,
            input_topic=self.image_sub.topic_name if self.image_sub is not None else "",
            warning=problem.text if problem is not None else None,
            inactive=inactive,
            extra={
                "camera": self.name,
                **extra,
                "input_reliability": qos.reliability_word(self.image_sub.reliability) if self.image_sub else "",
                "camera_info_received": str(self.camera_info is not None).lower(),
            },
        )
