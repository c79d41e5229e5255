"""The QoS profiles of the package's nodes, in one place so that every node agrees.

Why these choices:
- camera input is keep-last 1: a late frame is worth less than the next one, and a
  deeper queue only builds a backlog of stale images. Its reliability follows the
  camera (`choose_input_reliability`): a best-effort reader gets no repair of lost
  UDP fragments, so a reliable camera (rclpy's and image_transport's default) read
  best effort delivers almost no frame above VGA, while a reliable reader cannot
  match a best-effort (sensor-data) camera at all;
- outputs are reliable, keep-last 1: RViz, `ros2 topic echo` and `ros2 bag record`
  subscribe reliable by default and receive nothing from a best-effort publisher,
  while a history of 1 keeps a slow subscriber from holding several full-size images;
- bag playback is reliable with a short history, like `ros2 bag play`.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
_REQUESTED = {"reliable": RELIABLE, "best_effort": BEST_EFFORT}


def input_qos(reliability: ReliabilityPolicy = BEST_EFFORT) -> QoSProfile:
    """Camera images and camera_info in: keep last 1, volatile, the given reliability."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def choose_input_reliability(requested: str, offered: Iterable[ReliabilityPolicy],
                             current: ReliabilityPolicy = BEST_EFFORT) -> ReliabilityPolicy:
    """The reliability a camera subscription should have now.

    requested "reliable" / "best_effort" pins it. "auto": best effort as soon as any
    publisher offers best effort (a reliable reader cannot match it), reliable when every
    publisher offers reliable (so lost fragments of large frames are repaired), and
    unchanged while there is no publisher. Publishers reporting a system default count
    as reliable (Fast DDS's default for writers); unknown ones as best effort.
    """
    if requested in _REQUESTED:
        return _REQUESTED[requested]
    offered = list(offered)
    if not offered:
        return current
    if any(policy not in (RELIABLE, ReliabilityPolicy.SYSTEM_DEFAULT) for policy in offered):
        return BEST_EFFORT
    return RELIABLE


def reliability_word(policy: Optional[ReliabilityPolicy]) -> str:
    """'reliable', 'best effort', ... for log lines."""
    if policy is None:
        return "unknown"
    return {RELIABLE: "reliable", BEST_EFFORT: "best effort"}.get(policy, policy.name.lower().replace("_", " "))


def policy_word(kind: Any) -> str:
    """'durability' for an incompatible-QoS event's policy kind (RMW_QOS_POLICY_DURABILITY or an enum member)."""
    name = str(getattr(kind, "name", kind)).rsplit(".", 1)[-1].lower()
    return name[len("rmw_qos_policy_"):] if name.startswith("rmw_qos_policy_") else name


def output_qos(depth: int = 1) -> QoSProfile:
    """Results out: reliable so that default subscribers (RViz, rosbag2) receive them."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def image_output_qos_for_subscribers() -> QoSProfile:
    """What a subscriber to our outputs should use: reliable, keep last 5 (RViz's default)."""
    return output_qos(depth=5)


def diagnostics_qos() -> QoSProfile:
    """/diagnostics: reliable, keep last 10, like diagnostic_updater publishes it."""
    return output_qos(depth=10)


def playback_qos(depth: int = 10) -> QoSProfile:
    """Bag playback: reliable, keep last `depth`, as `ros2 bag play` publishes by default."""
    return output_qos(depth=depth)


def evaluation_qos(reliable: bool, depth: int = 50) -> QoSProfile:
    """The evaluator's subscriptions: deep enough to keep every frame of a replay."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABLE if reliable else BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def clock_qos() -> QoSProfile:
    """/clock: reliable, keep last 1."""
    return output_qos(depth=1)
