"""The QoS profiles of the perception pipeline, in one place so that every node agrees.

Why these choices (see the design notes on real-time perception):
- camera input is best effort, keep-last 1: a late frame is worth less than the
  next one, and a deeper queue only builds a backlog of stale images;
- outputs are reliable, keep-last 1: RViz, `ros2 topic echo` and `ros2 bag record`
  subscribe reliable by default and receive nothing from a best-effort publisher,
  while a history of 1 keeps a slow subscriber from holding several full-size images;
- camera_info is read best effort so that it matches drivers that publish it either way.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def image_input_qos() -> QoSProfile:
    """Camera images in: best effort, keep last 1, volatile (matches reliable publishers too)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def camera_info_qos() -> QoSProfile:
    """camera_info in: best effort keep last 1, so reliable and best-effort drivers both match."""
    return image_input_qos()


def output_qos(depth: int = 1) -> QoSProfile:
    """Results out: reliable so that default subscribers (RViz, rosbag2) receive them."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def image_output_qos_for_subscribers() -> QoSProfile:
    """What a subscriber to our outputs should use: reliable, keep last 5 (RViz's default)."""
    return output_qos(depth=5)


def diagnostics_qos() -> QoSProfile:
    """/diagnostics: reliable, keep last 10, like diagnostic_updater publishes it."""
    return output_qos(depth=10)
