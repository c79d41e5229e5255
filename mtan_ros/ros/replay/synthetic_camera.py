"""`synthetic_camera`: a camera driver stand-in that publishes street-like frames the way real drivers do.

    python -m mtan_ros.ros.replay.synthetic_camera --ros-args -p width:=1280 -p height:=720 -p rate:=10.0
        [-p reliability:=reliable|best_effort] [-p frames:=0] [-p camera_info:=true]
        [-p wait_for_subscribers:=0]

Why: whether the perception node receives a camera depends on the driver's QoS and
Fast DDS transport, not on the node alone. This publisher uses exactly what drivers
use — rclpy's defaults (reliable, keep last 10, as image_transport publishes) or the
sensor-data profile (best effort, keep last 5) — and whatever Fast DDS configuration
its environment has (none, unless you set one), so checks and benchmarks see what a
user with a USB or GigE camera sees. Frame i is stamped `stamp_base + i / rate`
seconds, so a receiver can tell exactly which frames it got; `frames` > 0 stops
after that many frames (0 = until Ctrl-C). `wait_for_subscribers` holds frame 0
back until that many readers are matched, so that a benchmark's counts do not
depend on how long discovery took.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from mtan_ros.ros.camera.image_messages import new_image_msg
from mtan_ros.ros.node_main import run_node
from mtan_ros.ros.params import ParamSpec, declare_parameters

NODE_NAME = "synthetic_camera"
SPECS = (
    ParamSpec("width", int, "Image width in pixels.", default=640, range=(8, 16384), applies="startup"),
    ParamSpec("height", int, "Image height in pixels.", default=480, range=(8, 16384), applies="startup"),
    ParamSpec("rate", float, "Frames per second.", default=10.0, range=(0.1, 1000.0), applies="startup"),
    ParamSpec("frames", int, "Stop after this many frames; 0 = until shut down.", default=0, range=(0, 10**9),
              applies="startup"),
    ParamSpec("reliability", str, "reliable: rclpy's default publisher QoS (keep last 10); best_effort: the "
              "sensor-data profile (keep last 5).", default="reliable", choices=("reliable", "best_effort"),
              applies="startup"),
    ParamSpec("camera_info", bool, "Also publish camera_info (a pinhole model, fx = width).", default=True,
              applies="startup"),
    ParamSpec("stamp_base", float, "Stamp of frame 0 in seconds; 0 = the wall clock at start.", default=0.0,
              range=(0.0, 1e10), applies="startup"),
    ParamSpec("frame_id", str, "frame_id of the images.", default="camera_optical_frame", applies="startup"),
    ParamSpec("wait_for_subscribers", int, "Publish nothing until this many subscriptions are matched to "
              "image_raw; 0 = start at once.", default=0, range=(0, 1000), applies="startup"),
)


def street_frame(height: int, width: int, seed: int) -> np.ndarray:
    """A street-like RGB frame (sky, facades, road, noise); content is irrelevant to transport."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2] = (135, 185, 235)
    image[height // 2:] = (90, 90, 95)
    for x0 in range(0, width, max(1, width // 8)):
        image[height // 6: height // 2, x0: x0 + width // 10] = rng.integers(60, 200, 3)
    image += rng.integers(0, 12, (height, width, 1), dtype=np.uint8)
    return image


def pinhole_info(width: int, height: int, frame_id: str) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    fx, cx, cy = float(width), (width - 1) / 2.0, (height - 1) / 2.0
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def stamp_of(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class SyntheticCamera(Node):
    """Publishes `image_raw` (rgb8) and `camera_info` at `rate` Hz with a driver's QoS."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare_parameters(self, SPECS)
        qos: Any = QoSProfile(depth=10) if self.p["reliability"] == "reliable" else qos_profile_sensor_data
        self.image_pub = self.create_publisher(Image, "image_raw", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos) if self.p["camera_info"] else None
        height, width = self.p["height"], self.p["width"]
        self._frames = []
        for seed in range(4):  # a few different frames, rotated, so successive images differ
            msg, view = new_image_msg(None, height, width, "rgb8")
            view[...] = street_frame(height, width, seed)
            msg.header.frame_id = self.p["frame_id"]
            self._frames.append(msg)
        self._info = pinhole_info(width, height, self.p["frame_id"])
        self._base = self.p["stamp_base"]
        self.sent = 0

    def publish_next(self) -> None:
        stamp = stamp_of(self._base + self.sent / self.p["rate"])
        msg = self._frames[self.sent % len(self._frames)]
        msg.header.stamp = stamp
        if self.info_pub is not None:
            self._info.header.stamp = stamp
            self.info_pub.publish(self._info)
        self.image_pub.publish(msg)
        self.sent += 1

    def run(self) -> None:
        """Publish on a steady schedule (a late frame does not shift the ones after it).

        With stamp_base 0, frame 0 is stamped with the wall clock when it goes out (after any
        wait for subscribers), so stamps tell receivers their end-to-end latency.
        """
        while rclpy.ok(context=self.context) and self.image_pub.get_subscription_count() < \
                self.p["wait_for_subscribers"]:
            rclpy.spin_once(self, timeout_sec=0.05)
        period = 1.0 / self.p["rate"]
        self._base = self._base or time.time()
        start = time.monotonic()
        while rclpy.ok(context=self.context) and (self.p["frames"] == 0 or self.sent < self.p["frames"]):
            delay = start + self.sent * period - time.monotonic()
            if delay > 0:
                rclpy.spin_once(self, timeout_sec=delay)
                continue
            self.publish_next()
        # Let reliable readers fetch the last frames before the writer disappears.
        end = time.monotonic() + 1.0
        while rclpy.ok(context=self.context) and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)


def _stream(node: SyntheticCamera) -> int:
    node.run()
    node.get_logger().info(f"published {node.sent} frames")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(NODE_NAME, SyntheticCamera, _stream, argv)


if __name__ == "__main__":
    sys.exit(main())
