"""sensor_msgs Image / CompressedImage <-> numpy, fast and strict.

Why this module exists: camera images arrive as flat byte arrays whose layout
(encoding, row step with padding, byte order) is described by the message, and a
node that trusts those fields blindly either crashes or silently produces garbage.
Every check here raises `ImageConversionError` with a sentence a user can act on,
and the node turns that into a throttled warning instead of dying.

Incoming images are read as numpy views over the message buffer (no per-pixel
Python, no copy for rgb8). Where a ROS installation provides a working
`cv_bridge`, colour conversion of incoming images goes through it (it is checked
once against the numpy path before use, because the unrelated PyPI package of the
same name is broken on current numpy/OpenCV). Outgoing images are allocated as the
message's own buffer and filled in place (`new_image_msg`), which saves the two
copies that `array.array(img.tobytes())` or cv_bridge's `cv2_to_imgmsg` make.
"""
from __future__ import annotations

import array
import re
import struct
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from mtan_ros.errors import ImageConversionError  # noqa: F401 (re-exported)

# Encodings the network accepts as camera input (converted to RGB).
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
# 20000 x 20000 and the like are refused before anything is allocated.
DEFAULT_MAX_PIXELS = 50_000_000

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
    """Layout of a sensor_msgs encoding name; raises for names we cannot lay out."""
    if encoding in _NAMED_LAYOUTS:
        code, channels = _NAMED_LAYOUTS[encoding]
        return Layout(np.dtype("<" + code if code != "u1" else code), channels)
    match = _GENERIC.fullmatch(encoding)
    if match:
        code = _GENERIC_DTYPES[match.group(1)]
        return Layout(np.dtype(code if code in ("u1", "i1") else "<" + code), int(match.group(2)))
    raise ImageConversionError(
        f"unknown image encoding {encoding!r}; supported camera encodings are {', '.join(COLOR_ENCODINGS)}",
        kind="encoding",
    )


def _check_size(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"zero-sized {what} ({width}x{height}): nothing to process", kind="size")
    if width * height > max_pixels:
        raise ImageConversionError(
            f"{what} declares {width}x{height} = {width * height / 1e6:.0f} Mpx, more than the "
            f"{max_pixels / 1e6:.0f} Mpx limit (parameter max_input_pixels); refusing to allocate it",
            kind="size",
        )


def image_msg_to_array(msg: Image, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any supported Image as an H x W (x C) array in native byte order.

    A view over `msg.data` when the byte order is native (row padding is kept as
    the view's stride), a copy only when bytes must be swapped. Checks the declared
    size, step and data length before touching the buffer.
    """
    layout = encoding_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(width, height, max_pixels)
    row_bytes = width * layout.pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width x bytes per pixel = {width} x {layout.pixel_bytes} = "
            f"{row_bytes} for {msg.encoding}",
            kind="layout",
        )
    if step % layout.dtype.itemsize:
        raise ImageConversionError(
            f"step {step} is not a multiple of the {layout.dtype.itemsize}-byte element size of {msg.encoding}",
            kind="layout",
        )
    available = len(msg.data)
    if available < step * height:
        raise ImageConversionError(
            f"data has {available} bytes but step x height = {step} x {height} = {step * height}; "
            "the message is truncated or its size fields are wrong",
            kind="layout",
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


def _refusal_reason(encoding: str) -> str | None:
    if encoding in COLOR_ENCODINGS:
        return None
    expected = f"the network needs an 8-bit camera image ({', '.join(COLOR_ENCODINGS)})"
    if encoding in ("mono16", "16UC1", "16SC1") or encoding.endswith("16"):
        return (
            f"encoding {encoding!r} is a 16-bit image (usually depth or infrared); {expected}: "
            "remap image_raw to the camera's colour topic"
        )
    if encoding.startswith(("32F", "64F")):
        return f"encoding {encoding!r} is a floating-point image (usually depth); {expected}"
    if encoding.startswith(("bayer", "yuv", "uyvy", "yuyv", "nv")):
        return f"encoding {encoding!r} is raw sensor data; {expected}: debayer/convert it first (image_proc)"
    if _GENERIC.fullmatch(encoding):
        return f"encoding {encoding!r} has no colour order; {expected}"
    return f"unknown image encoding {encoding!r}; {expected}"


def image_msg_to_rgb(msg: Image, *, max_pixels: int = DEFAULT_MAX_PIXELS, backend: str = "auto") -> np.ndarray:
    """A camera Image as a C-contiguous H x W x 3 uint8 RGB array (what the Predictor takes).

    backend: "auto" (cv_bridge where it works, else numpy), "numpy" or "cv_bridge".
    Refuses 16-bit, float, raw Bayer/YUV and unknown encodings with a reason.
    """
    reason = _refusal_reason(msg.encoding)
    if reason:
        raise ImageConversionError(reason, kind="encoding")
    pixels = image_msg_to_array(msg, max_pixels=max_pixels)  # validates size, step, length
    if backend not in ("auto", "numpy", "cv_bridge"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'cv_bridge', got {backend!r}")
    bridge = _bridge() if backend in ("auto", "cv_bridge") else None
    if backend == "cv_bridge" and bridge is None:
        raise RuntimeError(f"cv_bridge backend requested but unavailable: {bridge_status()[1]}")
    # cv_bridge reshapes rows by step / pixel size, so odd paddings stay on the numpy path.
    if bridge is not None and msg.step % (pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)) == 0:
        return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    code = _TO_RGB[msg.encoding]
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels, code)


# ---------------------------------------------------------------- compressed input

_JPEG_SOI = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_declared_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from a JPEG or PNG header without decoding it."""
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageConversionError("corrupt PNG: no IHDR header", kind="compressed")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(_JPEG_SOI):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ImageConversionError(f"corrupt JPEG: no marker at byte {pos}", kind="compressed")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                return "jpeg", width, height
            if marker == 0xDA:  # start of scan before any frame header
                break
            pos += 2 + length
        raise ImageConversionError("corrupt JPEG: no frame header before the image data", kind="compressed")
    head = bytes(data[:8]).hex(" ")
    raise ImageConversionError(
        f"compressed data is neither JPEG nor PNG (first bytes {head}); use the jpeg or png image_transport",
        kind="compressed",
    )


def compressed_msg_to_rgb(msg: CompressedImage, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A JPEG/PNG CompressedImage as H x W x 3 uint8 RGB; corrupt or truncated data raises."""
    fmt = (msg.format or "").lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(
            f"format {msg.format!r} is a compressed depth image; the network needs a colour camera image",
            kind="compressed",
        )
    data = msg.data if isinstance(msg.data, (bytes, bytearray)) else bytes(msg.data)
    if not data:
        raise ImageConversionError("compressed image has no data", kind="compressed")
    kind, width, height = compressed_declared_size(data)
    _check_size(width, height, max_pixels, what=f"{kind} image")
    if kind == "jpeg" and _JPEG_EOI not in data[-64:]:
        raise ImageConversionError(
            f"truncated JPEG: {len(data)} bytes without an end-of-image marker", kind="compressed"
        )
    if kind == "png" and _PNG_IEND not in data[-64:]:
        raise ImageConversionError(f"truncated PNG: {len(data)} bytes without an IEND chunk", kind="compressed")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (height, width):
        raise ImageConversionError(f"corrupt {kind} data: {len(data)} bytes could not be decoded", kind="compressed")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND"


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


# ---------------------------------------------------------------- cv_bridge detection

_BRIDGE: Any = None
_BRIDGE_STATUS: tuple[str, str] | None = None


def bridge_status() -> tuple[str, str]:
    """("cv_bridge" | "numpy", why) — which path converts incoming images in this process."""
    _bridge()
    assert _BRIDGE_STATUS is not None
    return _BRIDGE_STATUS


def _bridge() -> Any:
    """cv_bridge.CvBridge if importable and it agrees with the numpy path on a small test, else None."""
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
        rng = np.random.default_rng(0)
        for encoding in COLOR_ENCODINGS:
            layout = encoding_layout(encoding)
            pixels = rng.integers(0, 256, layout.shape(3, 5), dtype=np.uint8)
            msg = _padded_msg(pixels, encoding, padding=2 * layout.pixel_bytes)
            got = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
            want = cv2.cvtColor(pixels, _TO_RGB[encoding]) if _TO_RGB[encoding] is not None else pixels
            if not np.array_equal(np.asarray(got), want):
                raise ValueError(f"{encoding} converts differently from the numpy path")
    except Exception as exc:
        _BRIDGE_STATUS = ("numpy", f"cv_bridge present but unusable ({type(exc).__name__}: {exc})")
        return None
    _BRIDGE = bridge
    _BRIDGE_STATUS = ("cv_bridge", "cv_bridge from the ROS installation")
    return bridge


def _padded_msg(pixels: np.ndarray, encoding: str, padding: int = 0) -> Image:
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    padded = np.zeros((height, row.shape[1] + padding), np.uint8)
    padded[:, : row.shape[1]] = row
    msg = Image(height=height, width=width, encoding=encoding, step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg
