"""sensor_msgs image encodings: memory layout of each name, and which ones a camera image may have.

ROS-free on purpose (numpy and OpenCV only), so that the raw-message converter and
the cv_bridge self-check share one table without importing each other. Encoding
names come from whoever publishes the image: every message quotes them through
`quote` so that a 100 KB name makes a short log line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from mtan_ros.errors import ImageConversionError
from mtan_ros.imaging.limits import quote

# Encodings the network accepts as camera input (converted to RGB).
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")

_NAMED_LAYOUTS: dict[str, tuple[str, int]] = {
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "rgba16": ("u2", 4),
    "bgra16": ("u2", 4),
}
_GENERIC = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)C([1-4])")
_GENERIC_DTYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}
_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}


@dataclass(frozen=True)
class Layout:
    """How one encoding lays out a pixel: numpy dtype (little-endian form) and channel count."""

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        return self.dtype.itemsize * self.channels

    def shape(self, height: int, width: int) -> tuple[int, ...]:
        return (height, width) if self.channels == 1 else (height, width, self.channels)


def encoding_layout(encoding: str) -> Layout:
    """Layout of a sensor_msgs encoding name; raises ImageConversionError (encoding.unknown) for others."""
    if encoding in _NAMED_LAYOUTS:
        code, channels = _NAMED_LAYOUTS[encoding]
        return Layout(np.dtype("<" + code if code != "u1" else code), channels)
    match = _GENERIC.fullmatch(encoding)
    if match:
        code = _GENERIC_DTYPES[match.group(1)]
        return Layout(np.dtype(code if code in ("u1", "i1") else "<" + code), int(match.group(2)))
    raise ImageConversionError(
        f"unknown image encoding {quote(encoding)}; supported camera encodings are {', '.join(COLOR_ENCODINGS)}",
        kind="encoding.unknown",
    )


def check_camera_encoding(encoding: str) -> None:
    """Raise ImageConversionError, with the specific kind, unless `encoding` is a camera colour encoding.

    16-bit, float, raw Bayer/YUV and channel-only encodings are refused with the reason
    and what to remap, because they usually mean the wrong topic is wired to the node.
    """
    if encoding in COLOR_ENCODINGS:
        return
    shown = quote(encoding)
    expected = f"the network needs an 8-bit camera image ({', '.join(COLOR_ENCODINGS)})"
    if encoding in ("mono16", "16UC1", "16SC1") or encoding.endswith("16"):
        message, kind = (f"encoding {shown} is a 16-bit image (usually depth or infrared); {expected}: "
                         "remap image_raw to the camera's colour topic"), "encoding.16bit"
    elif encoding.startswith(("32F", "64F")):
        message, kind = f"encoding {shown} is a floating-point image (usually depth); {expected}", "encoding.float"
    elif encoding.startswith(("bayer", "yuv", "uyvy", "yuyv", "nv")):
        message, kind = (f"encoding {shown} is raw sensor data; {expected}: debayer/convert it first (image_proc)",
                         "encoding.raw_sensor")
    elif _GENERIC.fullmatch(encoding):
        message, kind = f"encoding {shown} has no colour order; {expected}", "encoding.no_color_order"
    else:
        message, kind = f"unknown image encoding {shown}; {expected}", "encoding.unknown"
    raise ImageConversionError(message, kind=kind)


def color_to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """A camera-encoded H x W (x C) uint8 array as a new C-contiguous H x W x 3 RGB array."""
    code = _TO_RGB[encoding]
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels, code)
