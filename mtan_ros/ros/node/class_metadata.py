"""What a consumer needs to read `semantic`: the loaded model's class names and colours.

Two forms: parameters that refuse every change (`class_names`, `class_colors`
as "#rrggbb"), there from configure to cleanup (not rclpy read-only ones: those
can never be undeclared, and the next model may have other classes), and
vision_msgs/LabelInfo on a latched (transient local) `semantic/label_info` topic
where vision_msgs is installed (a ROS installation has it; PyPI does not), the
form Nav2's semantic segmentation layer reads.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

PARAMETERS = ("class_names", "class_colors")
LABEL_INFO_TOPIC = "semantic/label_info"


def label_info_type() -> Optional[Any]:
    """vision_msgs/LabelInfo, or None where vision_msgs is not installed."""
    try:
        from vision_msgs.msg import LabelInfo  # optional: only on a ROS installation
    except ImportError:
        return None
    return LabelInfo


class ClassMetadata:
    """Declares the class parameters and latches LabelInfo for one loaded model; `release` undoes both."""

    def __init__(self, node: LifecycleNode, names: Sequence[str], colors: Sequence[Sequence[int]]) -> None:
        self._node = node
        hex_colors = ["#{:02x}{:02x}{:02x}".format(*(int(c) for c in color[:3])) for color in colors]
        self._declaring = True
        try:
            node.declare_parameter("class_names", list(names), ParameterDescriptor(
                description="Class names of the loaded model (read-only); semantic holds their indices."))
            node.declare_parameter("class_colors", hex_colors, ParameterDescriptor(
                description="Colour of each class in semantic_color and overlay, as #rrggbb (read-only)."))
        finally:
            self._declaring = False
        self._publisher = None
        label_info = label_info_type()
        if label_info is not None:
            from vision_msgs.msg import VisionClass  # optional, as above (label_info_type)

            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self._publisher = node.create_publisher(label_info, LABEL_INFO_TOPIC, latched)
            msg = label_info()
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(names)]
            self._publisher.publish(msg)

    def refusal(self, name: str) -> Optional[str]:
        """Why a set of parameter `name` is refused (None when it is not one of ours, or while declaring)."""
        if name not in PARAMETERS or self._declaring:
            return None
        return f"{name} is read-only: it describes the loaded model (model_path)"

    def release(self) -> None:
        for name in PARAMETERS:
            if self._node.has_parameter(name):
                self._node.undeclare_parameter(name)
        if self._publisher is not None:
            self._node.destroy_publisher(self._publisher)
            self._publisher = None
