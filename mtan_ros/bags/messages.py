"""CDR bytes of the camera messages in our bags, built and read without rclpy.

Why without rclpy: bags are written by `mtan-make-bag` on machines that may have
no ROS at all, and the bag tools live outside `mtan_ros/ros/` where rclpy is
not imported. The `rosbags` type store (ROS 2 Kilted definitions) serialises
the same CDR bytes that rclpy does, so the ROS nodes can publish them as they
are (`publisher.publish(raw_bytes)`) or deserialise them with
`rclpy.serialization.deserialize_message`.

The topic names, frame id and rate below are the defaults of every bag tool
(writer, player, evaluator, launch file, demo), kept in one place.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

# Default topics: the perception node runs in namespace /camera, so its relative
# `image_raw` and `camera_info` inputs and its `depth` / `semantic` outputs live here too.
IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
DEPTH_GT_TOPIC = "/camera/depth_gt"
SEMANTIC_GT_TOPIC = "/camera/semantic_gt"
PREDICTION_DEPTH_TOPIC = "/camera/depth"
PREDICTION_SEMANTIC_TOPIC = "/camera/semantic"
# REP 103/105: images are expressed in the camera's optical frame (z forward, x right, y down).
FRAME_ID = "camera_optical_frame"
# The Cityscapes camera records at 17 Hz.
DEFAULT_RATE_HZ = 17.0
VOID_LABEL = 255

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"

# Image encodings and their (dtype, channels).
_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1), "32FC1": (np.float32, 1),
              "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4)}


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """The rosbags type store with the ROS 2 Kilted message definitions (built once)."""
    try:
        from rosbags.typesys import Stores, get_typestore  # optional: pip install .[bags]
    except ImportError as exc:
        raise ImportError(f"writing and reading bags needs the 'rosbags' package ({exc}); "
                          "install it with `pip install rosbags` or `pip install -e .[bags]`") from None
    return get_typestore(Stores.ROS2_KILTED)


def split_ns(stamp_ns: int) -> tuple[int, int]:
    """Nanoseconds since the epoch -> (sec, nanosec) as in builtin_interfaces/Time."""
    stamp_ns = int(stamp_ns)
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = split_ns(stamp_ns)
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def _serialize(msg: Any) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def image_cdr(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = FRAME_ID) -> bytes:
    """A sensor_msgs/Image (little-endian, no row padding) holding `pixels` (H x W or H x W x C)."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; use one of {sorted(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[encoding]
    pixels = np.asarray(pixels)
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim == 3 and channels == 1 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        raise ValueError(f"{encoding} needs an array of {'H x W' if channels == 1 else f'H x W x {channels}'}, "
                         f"got shape {pixels.shape}")
    if pixels.dtype != dtype:
        raise ValueError(f"{encoding} needs {np.dtype(dtype).name} pixels, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels, dtype=np.dtype(dtype).newbyteorder("<")).view(np.uint8).reshape(-1)
    msg = typestore().types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * channels * np.dtype(dtype).itemsize, data=data)
    return _serialize(msg)


def compressed_cdr(rgb: np.ndarray, stamp_ns: int, frame_id: str = FRAME_ID, fmt: str = "jpeg",
                   quality: int = 95) -> bytes:
    """A sensor_msgs/CompressedImage as image_transport's compressed plugin writes it."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png",
                               cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {np.shape(rgb)} image as {fmt}")
    msg = typestore().types[COMPRESSED_TYPE](header=_header(stamp_ns, frame_id),
                                             format=f"rgb8; {fmt} compressed bgr8",
                                             data=np.asarray(encoded, dtype=np.uint8).reshape(-1))
    return _serialize(msg)


def camera_info_cdr(camera: Any, stamp_ns: int, frame_id: str = FRAME_ID) -> bytes:
    """sensor_msgs/CameraInfo of a rectified pinhole camera (a `CityscapesCamera`: fx, fy, u0, v0, size).

    Cityscapes images are rectified, so D is zero (plumb_bob), R is the identity and P = [K | 0].
    """
    types = typestore().types
    fx, fy, cx, cy = float(camera.fx), float(camera.fy), float(camera.u0), float(camera.v0)
    msg = types[CAMERA_INFO_TYPE](
        header=_header(stamp_ns, frame_id), height=int(camera.height), width=int(camera.width),
        distortion_model="plumb_bob", d=np.zeros(5, np.float64),
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64),
        binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))
    return _serialize(msg)


# ------------------------------------------------------------------------------------ reading

def header_stamp_ns(cdr: bytes | memoryview) -> int:
    """The header stamp (ns) of a CDR message whose first field is std_msgs/Header.

    Image, CompressedImage and CameraInfo all start with the header, so the stamp
    sits right after the 4-byte encapsulation; reading it this way costs nothing
    even for a full-resolution image.
    """
    head = bytes(cdr[:12])
    if len(head) < 12 or head[0] != 0 or head[1] not in (0, 1):
        raise ValueError("not a plain CDR message (bad encapsulation header)")
    sec, nanosec = struct.unpack("<iI" if head[1] == 1 else ">iI", head[4:12])
    return sec * 1_000_000_000 + nanosec


def stamp_ns(stamp: Any) -> int:
    """A builtin_interfaces/Time (rclpy or rosbags object: anything with sec and nanosec) in nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def deserialize(cdr: bytes | memoryview, msgtype: str) -> Any:
    """A rosbags message object from CDR bytes."""
    return typestore().deserialize_cdr(bytes(cdr), msgtype)


@dataclass
class DecodedImage:
    stamp_ns: int
    frame_id: str
    encoding: str
    pixels: np.ndarray  # H x W or H x W x C, native byte order


def decode_image(cdr: bytes | memoryview, msgtype: str = IMAGE_TYPE) -> DecodedImage:
    """Image or CompressedImage CDR -> pixels (compressed images decode to RGB)."""
    msg = deserialize(cdr, msgtype)
    stamp = stamp_ns(msg.header.stamp)
    if msgtype == COMPRESSED_TYPE:
        bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("compressed image data could not be decoded")
        return DecodedImage(stamp, msg.header.frame_id, "rgb8", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"unsupported encoding {msg.encoding!r}")
    dtype, channels = _ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dtype.itemsize
    rows = np.asarray(msg.data, np.uint8)[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return DecodedImage(stamp, msg.header.frame_id, msg.encoding, pixels.reshape(shape))


def labels_to_mono8(labels: np.ndarray, num_classes: Optional[int] = None) -> np.ndarray:
    """Class ids (-1 or anything outside [0, num_classes) = void) -> uint8 with 255 = void."""
    labels = np.asarray(labels).astype(np.int64)
    upper = VOID_LABEL if num_classes is None else min(int(num_classes), VOID_LABEL)
    return np.where((labels >= 0) & (labels < upper), labels, VOID_LABEL).astype(np.uint8)


def cdr_problem(cdr: bytes | memoryview, msgtype: str) -> Optional[str]:
    """Why `cdr` cannot be an intact `msgtype` message, or None when nothing shows.

    Why: sqlite3 rows and the messages of a cut-off mcap chunk carry no checksum,
    so the only evidence of damage is the message itself. This catches a bad
    encapsulation header, fields that do not parse, strings that are not text, a
    length that does not match the message's end, and an Image whose data size
    disagrees with its height and step. It cannot see altered pixel bytes.
    Types outside the type store are only checked for their CDR header.
    """
    head = bytes(cdr[:4])
    if len(head) < 4 or head[0] != 0 or head[1] not in (0, 1):
        return "its CDR encapsulation header is invalid"
    store = typestore()
    if msgtype not in store.types:
        return None
    try:
        msg = store.deserialize_cdr(bytes(cdr), msgtype)
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the bytes are not this message
        return f"it does not parse as {msgtype} ({' '.join(str(exc).split())})"
    if msgtype == IMAGE_TYPE:
        size = len(msg.data)
        if size != msg.step * msg.height:
            return f"its {size} data bytes do not match height {msg.height} x step {msg.step}"
        if msg.encoding in _ENCODINGS:
            dtype, channels = _ENCODINGS[msg.encoding]
            if msg.step < msg.width * channels * np.dtype(dtype).itemsize:
                return f"its step {msg.step} is shorter than a row of {msg.width} {msg.encoding} pixels"
    elif msgtype == COMPRESSED_TYPE and len(msg.data) == 0:
        return "it holds no compressed data"
    return None
