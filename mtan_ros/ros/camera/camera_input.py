"""A camera subscription whose reliability follows the camera, whenever it starts.

ROS 2's BEST_AVAILABLE policy decides once, when the subscription is created: a
node started before a best-effort camera picks reliable and then refuses that
camera for good. This subscription instead looks at the publishers on its topic
(`refresh`, called periodically by the node) and re-creates itself with the
reliability `qos.choose_input_reliability` asks for, keeping keep-last 1 so that
no backlog builds up. A user pins the choice with the node's `input_reliability`
parameter or ROS 2's standard `qos_overrides.<topic>.subscription.reliability`
override (it wins). Frames (with their publisher's sequence number), losses reported
by the middleware and incompatible-QoS events are passed to an InputMonitor, which
explains silence.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy

from mtan_ros.errors import ConfigError
from mtan_ros.ros.camera import qos
from mtan_ros.pipeline.input_monitor import InputMonitor

OVERRIDE_VALUES = ("auto", "reliable", "best_effort", "best_available")
# A replaced subscription is kept until its successor is matched, at most this long.
RETIRE_AFTER_S = 3.0


class CameraSubscription:
    """Keep-last-1 subscription of `msg_type` on `topic`; `refresh()` re-matches it to the publishers."""

    def __init__(self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], *,
                 requested: Callable[[], str], monitor: Optional[InputMonitor] = None) -> None:
        self._node = node
        self._msg_type = msg_type
        self._callback = callback
        self._requested_param = requested
        self._monitor = monitor
        self.topic_name = node.resolve_topic_name(topic)
        self._override = self._declare_override()
        # Publishers already there decide at once (no frame lost to a re-creation).
        self.reliability = qos.choose_input_reliability(self._requested(), self._offered(), qos.BEST_EFFORT)
        self._subscription: Any = None
        # While a re-created subscription is being matched, the previous one keeps delivering
        # (make before break); frames that come through both are passed on once.
        self._retiring: Any = None
        self._retire_by = 0.0
        self._last_key: Optional[tuple] = None  # (stamp, frame_id, subscription generation) of the last frame
        self._generation = 0
        self._create()

    # ---------------------------------------------------------------- public

    def refresh(self) -> None:
        """Re-create the subscription if the publishers now call for another reliability; update the monitor."""
        offered = self._offered()
        wanted = qos.choose_input_reliability(self._requested(), offered, self.reliability)
        if wanted != self.reliability and self._override != "best_available":
            words = " and ".join(sorted({qos.reliability_word(policy) for policy in offered}))
            self._node.get_logger().info(
                f"{self.topic_name}: the camera offers {words}; subscribing {qos.reliability_word(wanted)} "
                f"(was {qos.reliability_word(self.reliability)})")
            self.reliability = wanted
            self._create()
        if self._retiring is not None and (self.matched or time.monotonic() > self._retire_by):
            self._node.destroy_subscription(self._retiring)
            self._retiring = None
        if self._monitor is not None:
            self._monitor.observe_graph([qos.reliability_word(o) for o in offered], self.matched,
                                        qos.reliability_word(self.reliability))

    @property
    def matched(self) -> int:
        """Publishers DDS has matched with this subscription (not just seen in the graph)."""
        return self._subscription.get_publisher_count() if self._subscription is not None else 0

    def destroy(self) -> None:
        for subscription in (self._subscription, self._retiring):
            if subscription is not None:
                self._node.destroy_subscription(subscription)
        self._subscription = self._retiring = None

    # ---------------------------------------------------------------- internals

    def _offered(self) -> list:
        return [info.qos_profile.reliability for info in self._node.get_publishers_info_by_topic(self.topic_name)]

    def _declare_override(self) -> str:
        """ROS 2's standard reliability override for this topic, declared read-only ('auto' = not set)."""
        name = f"qos_overrides.{self.topic_name}.subscription.reliability"
        if not self._node.has_parameter(name):
            self._node.declare_parameter(name, "auto", ParameterDescriptor(
                description=f"Reliability of the subscription to {self.topic_name}: auto (follow the camera), "
                            "reliable, best_effort or best_available; overrides input_reliability.",
                read_only=True))
        value = str(self._node.get_parameter(name).value).strip().lower()
        if value not in OVERRIDE_VALUES:
            raise ConfigError(f"parameter {name} must be one of {', '.join(OVERRIDE_VALUES)}, got {value[:64]!r}")
        return value

    def _requested(self) -> str:
        return self._override if self._override != "auto" else self._requested_param()

    def _create(self) -> None:
        if self._retiring is not None:
            self._node.destroy_subscription(self._retiring)
        self._retiring, self._retire_by = self._subscription, time.monotonic() + RETIRE_AFTER_S
        reliability = self.reliability
        if self._override == "best_available":
            reliability = ReliabilityPolicy.BEST_AVAILABLE
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible, message_lost=self._on_lost)
        self._generation += 1
        generation = self._generation
        self._subscription = self._node.create_subscription(
            self._msg_type, self.topic_name, lambda msg, info: self._on_message(msg, info, generation),
            qos.input_qos(reliability), event_callbacks=events)
        if self._monitor is not None:
            self._monitor.on_new_subscription()

    def _on_message(self, msg: Any, info: Any, generation: int) -> None:
        header = getattr(msg, "header", None)
        if header is not None:
            key = (header.stamp.sec, header.stamp.nanosec, header.frame_id)
            # Only a copy through the other subscription of a make-before-break pair is a duplicate: a camera
            # (or a test) publishing the same frame again gets it processed again.
            duplicate = self._last_key is not None and self._last_key[:3] == key and self._last_key[3] != generation
            self._last_key = (*key, generation)
            if duplicate:
                return
        if self._monitor is not None:
            publisher = (info.get("publisher_gid") or {}).get("data")
            self._monitor.on_frame(bytes(publisher) if publisher is not None else None,
                                   info.get("publication_sequence_number"))
        self._callback(msg)

    def _on_lost(self, event: Any) -> None:
        if self._monitor is not None:
            self._monitor.on_lost(int(event.total_count))

    def _on_incompatible(self, event: Any) -> None:
        if self._monitor is not None:
            self._monitor.on_incompatible(qos.policy_word(event.last_policy_kind))
