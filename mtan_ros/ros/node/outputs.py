"""The perception node's outputs: their publishers, who wants what, and reused message buffers.

Why reuse: at 2 Mpx every output image is several MB; allocating (and page-faulting)
a fresh buffer per frame and output costs milliseconds. rclpy serialises a message
while `publish` runs, so once it returns the same message and buffer can be filled
with the next frame.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mtan_ros.imaging import transport_codecs as codecs
from mtan_ros.ros.camera import qos
from mtan_ros.ros.camera.image_messages import new_image_msg

# name -> (message type, parameter that switches it on)
OUTPUTS: dict[str, tuple[Any, str]] = {
    "depth": (Image, "publish_depth"),
    "depth/camera_info": (CameraInfo, "publish_depth"),
    "semantic": (Image, "publish_semantic"),
    "semantic_color": (Image, "publish_semantic_color"),
    "overlay": (Image, "publish_overlay"),
    "points": (PointCloud2, "publish_points"),
    "confidence": (Image, "publish_confidence"),
    # The image_transport forms of the images above, in the plugins' wire formats, so that RViz,
    # rqt_image_view and C++ subscribers read them as `compressed` / `compressedDepth` transports.
    "semantic/compressed": (CompressedImage, "publish_semantic"),
    "semantic_color/compressed": (CompressedImage, "publish_semantic_color"),
    "overlay/compressed": (CompressedImage, "publish_overlay"),
    "confidence/compressed": (CompressedImage, "publish_confidence"),
    "depth/compressedDepth": (CompressedImage, "publish_depth"),
}
# Outputs that need camera_info besides their switch and a subscriber.
NEEDS_CAMERA_INFO = ("depth/camera_info", "points")


class MessagePool:
    """Reusable Images per output: the last `sizes_per_output` sizes are kept (a camera switching
    between two modes, or outputs at camera and model size in turn, allocate nothing per frame)."""

    def __init__(self, sizes_per_output: int = 2) -> None:
        self._sizes = sizes_per_output
        self._messages: dict[tuple[str, int, int, str], tuple[Image, np.ndarray]] = {}

    def get(self, name: str, header: Any, height: int, width: int, encoding: str) -> tuple[Image, np.ndarray]:
        """(message with `header`, writable numpy view of its pixels) for output `name`."""
        key = (name, height, width, encoding)
        cached = self._messages.pop(key, None)
        if cached is None:
            same_output = [k for k in self._messages if k[0] == name]
            for old in same_output[: max(0, len(same_output) - self._sizes + 1)]:
                del self._messages[old]
            cached = new_image_msg(None, height, width, encoding)
        self._messages[key] = cached  # most recently used last
        msg, view = cached
        msg.header = header
        return msg, view

    def clear(self) -> None:
        self._messages.clear()


class OutputPublishers:
    """The reliable output publishers (created when configured) and which outputs anyone wants.

    They are lifecycle publishers: the node's transitions enable them on activate and
    disable them on deactivate, so nothing is published by a node that is not active.

    ``on_incompatible(topic, policy)`` hears of subscribers that cannot match an
    output (e.g. one asking for transient-local durability): without it they would
    simply never receive anything. ``prefix`` ("front/") puts a camera's outputs under
    its name; the publishers stay keyed by the output's own name.
    """

    def __init__(self, node: LifecycleNode, on_incompatible: Optional[Callable[[str, str], None]] = None,
                 prefix: str = "") -> None:
        self._node = node
        out_qos = qos.output_qos()
        self._on_incompatible = on_incompatible
        self.publishers = {}
        for name, (kind, _) in OUTPUTS.items():
            events = PublisherEventCallbacks(incompatible_qos=lambda event, name=name: self._incompatible(name, event))
            self.publishers[name] = node.create_lifecycle_publisher(kind, prefix + name, out_qos,
                                                                    event_callbacks=events)

    def _incompatible(self, name: str, event: Any) -> None:
        if self._on_incompatible is not None and name in self.publishers:
            self._on_incompatible(self.publishers[name].topic_name, qos.policy_word(event.last_policy_kind))

    def wanted(self, params: dict[str, Any], camera_info_known: bool) -> dict[str, bool]:
        """Outputs that are switched on and have a subscriber (nobody listening costs nothing)."""
        def listened(name: str) -> bool:
            return self.publishers[name].get_subscription_count() > 0

        return {name: bool(params[switch]) and listened(name) and (camera_info_known or name not in NEEDS_CAMERA_INFO)
                for name, (_, switch) in OUTPUTS.items()}

    def publish(self, name: str, msg: Any) -> None:
        self.publishers[name].publish(msg)

    def publish_compressed(self, name: str, header: Any, image: np.ndarray, params: dict[str, Any]) -> None:
        """Encode `image` as output `name`'s image_transport plugin would and publish it.

        Runs on the inference worker, never on the executor thread: a 2 Mpx depth map
        takes 17-39 ms to encode on these CPUs (docs/outputs.md).
        """
        if name == "depth/compressedDepth":
            payload = codecs.encode_compressed_depth(image, depth_max=params["depth_max"],
                                                     depth_quantization=params["depth_quantization"],
                                                     png_level=params["png_level"])
        elif image.ndim == 3:
            payload = codecs.encode_rgb8_jpeg(image, jpeg_quality=params["jpeg_quality"])
        else:
            payload = codecs.encode_mono8_png(image, png_level=params["png_level"])
        msg = CompressedImage(header=header, format=payload.format)
        msg.data = payload.data
        self.publishers[name].publish(msg)

    def destroy(self) -> None:
        for publisher in self.publishers.values():
            self._node.destroy_lifecycle_publisher(publisher)
        self.publishers.clear()
