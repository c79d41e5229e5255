"""sensor_msgs/Image <-> numpy, strict and without copies, and outgoing message buffers.

Why: camera images arrive as flat byte arrays whose layout (encoding, row step with
padding, byte order) is described by the message, and a node that trusts those
fields blindly either crashes or silently produces garbage. Every check here raises
`ImageConversionError` with a specific `kind` and a sentence a user can act on; the
node turns that into a throttled warning instead of dying.

Incoming images are read as numpy views over the message buffer (no per-pixel
Python, no copy for rgb8). Where a ROS installation provides a cv_bridge that passes
the self-check (cv_bridge_check), colour conversion goes through it. Outgoing images
are allocated as the message's own buffer and filled in place (`new_image_msg`),
which saves the two copies that `array.array(img.tobytes())` or cv_bridge's
`cv2_to_imgmsg` make. Compressed input is handled in `compressed`.
"""
from __future__ import annotations

import array
import sys
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from mtan_ros.errors import ImageConversionError
from mtan_ros.ros.camera.cv_bridge_check import bridge_status, get_bridge
from mtan_ros.imaging.image_encodings import check_camera_encoding, color_to_rgb, encoding_layout
from mtan_ros.imaging.limits import DEFAULT_MAX_PIXELS, check_frame_size

BACKENDS = ("auto", "numpy", "cv_bridge")


def image_msg_to_array(msg: Image, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                       expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Any supported Image as an H x W (x C) array in native byte order.

    A view over `msg.data` when the byte order is native (row padding is kept as
    the view's stride), a copy only when bytes must be swapped. Checks the declared
    size (max_pixels; expected_size as (height, width)), step and data length
    before touching the buffer.
    """
    layout = encoding_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_frame_size(width, height, max_pixels=max_pixels, expected_size=expected_size)
    row_bytes = width * layout.pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width x bytes per pixel = {width} x {layout.pixel_bytes} = "
            f"{row_bytes} for {msg.encoding}",
            kind="layout.step_too_small",
        )
    if step % layout.dtype.itemsize:
        raise ImageConversionError(
            f"step {step} is not a multiple of the {layout.dtype.itemsize}-byte element size of {msg.encoding}",
            kind="layout.step_misaligned",
        )
    available = len(msg.data)
    if available < step * height:
        raise ImageConversionError(
            f"data has {available} bytes but step x height = {step} x {height} = {step * height}; "
            "the message is truncated or its size fields are wrong",
            kind="layout.truncated",
        )
    dtype = layout.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    strides: tuple[int, ...] = (step, layout.pixel_bytes)
    if layout.channels > 1:
        strides += (dtype.itemsize,)
    view = np.ndarray(layout.shape(height, width), dtype=dtype, buffer=msg.data, strides=strides)
    if not dtype.isnative:
        view = view.astype(dtype.newbyteorder("="))
    return view


def image_msg_to_rgb(msg: Image, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                     expected_size: tuple[int, int] | None = None, backend: str = "auto") -> np.ndarray:
    """A camera Image as a C-contiguous H x W x 3 uint8 RGB array (what the Predictor takes).

    backend: "auto" (cv_bridge where it works, else numpy), "numpy" or "cv_bridge".
    Refuses 16-bit, float, raw Bayer/YUV and unknown encodings, sizes above max_pixels
    or other than expected_size ((height, width)), and malformed layouts, with a reason.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_camera_encoding(msg.encoding)
    pixels = image_msg_to_array(msg, max_pixels=max_pixels, expected_size=expected_size)  # size, step, length
    bridge = get_bridge() if backend in ("auto", "cv_bridge") else None
    if backend == "cv_bridge" and bridge is None:
        raise RuntimeError(f"cv_bridge backend requested but unavailable: {bridge_status()[1]}")
    # cv_bridge reshapes rows by step / pixel size, so odd paddings stay on the numpy path.
    if bridge is not None and msg.step % (pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)) == 0:
        return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    return color_to_rgb(pixels, msg.encoding)


# ---------------------------------------------------------------- outgoing images


def new_image_msg(header: Any, height: int, width: int, encoding: str) -> tuple[Image, np.ndarray]:
    """An Image message whose data buffer is allocated once, plus a writable numpy view of it.

    Fill the view (np.copyto, cv2 functions with dst=, np.take with out=) and publish the
    message: the pixels are written straight into the buffer that rclpy serialises.
    """
    layout = encoding_layout(encoding)
    native = layout.dtype.newbyteorder("=")
    step = width * layout.pixel_bytes
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = int(height), int(width), encoding, step
    msg.is_bigendian = layout.dtype.itemsize > 1 and sys.byteorder == "big"
    msg.data = array.array("B", b"\0") * (step * height)
    # Depending on the rosidl version the setter keeps this array or copies it: view what it kept.
    view = np.frombuffer(msg.data, dtype=native).reshape(layout.shape(height, width))
    return msg, view


def array_to_image_msg(pixels: np.ndarray, encoding: str, header: Any = None) -> Image:
    """Copy an array (H x W or H x W x C, dtype matching the encoding) into a new Image message."""
    layout = encoding_layout(encoding)
    if pixels.ndim not in (2, 3):
        raise ValueError(f"expected an H x W (x C) array, got shape {pixels.shape}")
    expected = layout.shape(pixels.shape[0], pixels.shape[1])
    if pixels.shape != expected or pixels.dtype.newbyteorder("=") != layout.dtype.newbyteorder("="):
        raise ValueError(
            f"{encoding} needs shape {expected} dtype {layout.dtype.newbyteorder('=')}, "
            f"got {pixels.shape} {pixels.dtype}"
        )
    msg, view = new_image_msg(header, pixels.shape[0], pixels.shape[1], encoding)
    np.copyto(view, pixels)
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", header: Any = None, quality: int = 95) -> CompressedImage:
    """Encode an RGB array the way image_transport's compressed plugin does (format 'rgb8; jpeg compressed bgr8')."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed bgr8"
    buf = array.array("B")
    buf.frombytes(encoded.data)
    msg.data = buf
    return msg
