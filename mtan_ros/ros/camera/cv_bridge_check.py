"""Whether this process may convert camera images with cv_bridge: import it, then check it once.

Why: a ROS installation's cv_bridge is fast and well known, but the unrelated PyPI
package of the same name imports fine and then converts every colour encoding
wrongly on current numpy/OpenCV. So cv_bridge is used only after it has converted a
small padded image of every camera encoding exactly as the numpy path does; the
result (and why) is cached for the life of the process and shown in diagnostics.
"""
from __future__ import annotations

import array
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from mtan_ros.imaging.image_encodings import COLOR_ENCODINGS, color_to_rgb, encoding_layout

_BRIDGE: Any = None
_BRIDGE_STATUS: tuple[str, str] | None = None


def bridge_status() -> tuple[str, str]:
    """("cv_bridge" | "numpy", why) — which path converts incoming images in this process."""
    get_bridge()
    assert _BRIDGE_STATUS is not None
    return _BRIDGE_STATUS


def get_bridge() -> Any:
    """cv_bridge.CvBridge if importable and it passes `check_bridge`, else None (decided once per process)."""
    global _BRIDGE, _BRIDGE_STATUS
    if _BRIDGE_STATUS is not None:
        return _BRIDGE
    try:
        from cv_bridge import CvBridge  # provided by a ROS 2 installation, not by PyPI
    except Exception as exc:  # ImportError, or a broken extension module
        _BRIDGE_STATUS = ("numpy", f"cv_bridge not importable ({type(exc).__name__}: {exc})")
        return None
    try:
        bridge = CvBridge()
        check_bridge(bridge)
    except Exception as exc:
        _BRIDGE_STATUS = ("numpy", f"cv_bridge present but unusable ({type(exc).__name__}: {exc})")
        return None
    _BRIDGE = bridge
    _BRIDGE_STATUS = ("cv_bridge", "cv_bridge from the ROS installation")
    return bridge


def check_bridge(bridge: Any) -> None:
    """Raise ValueError unless `bridge.imgmsg_to_cv2` turns every camera encoding into the numpy path's RGB."""
    rng = np.random.default_rng(0)
    for encoding in COLOR_ENCODINGS:
        layout = encoding_layout(encoding)
        pixels = rng.integers(0, 256, layout.shape(3, 5), dtype=np.uint8)
        msg = padded_image_msg(pixels, encoding, padding=2 * layout.pixel_bytes)
        got = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        if not np.array_equal(np.asarray(got), color_to_rgb(pixels, encoding)):
            raise ValueError(f"{encoding} converts differently from the numpy path")


def padded_image_msg(pixels: np.ndarray, encoding: str, padding: int = 0) -> Image:
    """An 8-bit Image of `pixels` whose rows carry `padding` extra bytes (what a padded camera sends)."""
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    padded = np.zeros((height, row.shape[1] + padding), np.uint8)
    padded[:, : row.shape[1]] = row
    msg = Image(height=height, width=width, encoding=encoding, step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg
