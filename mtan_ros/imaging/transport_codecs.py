"""The `format` and `data` of a sensor_msgs/CompressedImage, as image_transport's plugins write them.

Why: a node that publishes `<topic>/compressed` and `<topic>/compressedDepth` itself
(Python has no image_transport) must produce bytes that the C++ subscriber plugins,
RViz2 and `republish` decode without knowing who wrote them. What they expect, read
from ros-perception/image_transport_plugins:

- compressed_image_transport: `format` is "<encoding>; jpeg compressed bgr8" for a
  colour image and "<encoding>; jpeg compressed mono8" for a grey one; for PNG,
  "<encoding>; png compressed bgr8" (colour) and "<encoding>; png compressed " (grey:
  nothing after the space). The subscriber decodes with OpenCV, which returns BGR, and
  turns it back into RGB when the encoding is rgb8 and it finds "compressed bgr": so
  the file holds an ordinary colour image, written from BGR-ordered pixels.
- compressed_depth_image_transport, 32FC1 metres: `format` "32FC1; compressedDepth png";
  `data` = a 12-byte little-endian header (int32 0 = inverse depth, float32 A,
  float32 B) and a 16-bit grey PNG of u = trunc(A / d + B), where A = q (q + 1) and
  B = 1 - A / depth_max; u = 0 means no depth. The subscriber gives d = A / (u - B).
  A step of u is about d^2 / A metres at depth d (q = depth_quantization is the depth at
  which it is 1 m: A ~ q^2); u must stay below 65536, so depths down to (not including)
  A / (65536 - B) can be sent.

Encoding goes through cv2.imencode with the plugins' parameters (jpeg_quality,
png_level), as the plugins do, and the inverse-depth quantisation is vectorised numpy
in float32, the plugin's arithmetic. Depths the plugin would leave to undefined
float-to-integer conversions (zero, negative, too close to fit 16 bits) become u = 0
here, "no depth", like NaN and d >= depth_max.

Every function is pure (arrays in, bytes out), thread-safe, and releases the GIL
in OpenCV, so a publishing thread can encode while the next frame is inferred.
Cost per 1920x1080 frame at the defaults, one thread on a shared 2-core machine
(`python -m mtan_ros.benchmarks.bandwidth`; the times vary up to 2x with the load):
compressedDepth 17-39 ms (about 5 ms of it the quantisation), semantic PNG 5-11 ms,
rgb8 JPEG 4-15 ms.
"""
from __future__ import annotations

import math
import struct
from typing import NamedTuple

import cv2
import numpy as np

# The plugins' parameter ranges (as declared by their publishers).
JPEG_QUALITY_RANGE = (1, 100)
PNG_LEVEL_RANGE = (0, 9)

# Defaults for street scenes, from `python -m mtan_ros.benchmarks.bandwidth --sweep`: 1920x1080, three
# synthetic scenes, depth NaN beyond the node's max_depth (100 m); bytes per frame.
# - depth_max 100 m: the node's max_depth (and the plugin's upper limit; its default is 10 m).
# - depth_quantization 150 (the plugin's upper limit; its default is 100): a step d^2 / A is 0.44 m
#   at 100 m, 11 cm at 50 m, 4 mm at 10 m. Measured error mean 2.4 cm, max 43 cm, 115 kB; at 100:
#   5.9 cm, 91 cm, 93 kB; at 50: 23.5 cm, 3.7 m, 58 kB. All are about 1 % of the raw 8.3 MB, so the
#   bytes go to accuracy. The price: nothing closer than A / (65536 - B) = 0.34 m can be sent (0.15 m
#   at 100); a street camera rarely sees anything that close.
# - png_level 1 (the plugin's default is 3): level 3 saved 10 % of the depth bytes and 2 % of the
#   label bytes for about 30 % more time, level 6 saved 40-50 % for twice the time; at level 1 the
#   labels are 20.6 kB (1 % of raw), depth + labels 1.3 % of raw.
# - jpeg_quality 90 (the plugin's default is 95): overlay 190 kB at a PSNR of 39.1 dB, against
#   328 kB / 39.5 dB at 95 and 141 kB / 38.8 dB at 85; semantic_color 73 kB / 38.7 dB. PSNR hardly
#   grows with quality here because OpenCV's JPEG halves the chroma resolution (4:2:0) at every
#   quality, which blurs colour edges.
DEFAULT_JPEG_QUALITY = 90
DEFAULT_PNG_LEVEL = 1
DEFAULT_DEPTH_MAX = 100.0
DEFAULT_DEPTH_QUANTIZATION = 150.0

INVERSE_DEPTH = 0  # the compression format in the compressedDepth header
DEPTH_HEADER = struct.Struct("<iff")  # format, depthQuantA, depthQuantB
DEPTH_FORMAT = "32FC1; compressedDepth png"
_U16_LIMIT = np.float32(65536.0)


class CompressedPayload(NamedTuple):
    """The two fields of a sensor_msgs/CompressedImage that carry the picture."""

    format: str
    data: bytes


def _check_level(png_level: int) -> int:
    if isinstance(png_level, bool) or not isinstance(png_level, (int, np.integer)) \
            or not PNG_LEVEL_RANGE[0] <= png_level <= PNG_LEVEL_RANGE[1]:
        raise ValueError(f"png_level must be an integer in {PNG_LEVEL_RANGE[0]}..{PNG_LEVEL_RANGE[1]}, "
                         f"got {png_level!r}")
    return int(png_level)


def _check_quality(jpeg_quality: int) -> int:
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, (int, np.integer)) \
            or not JPEG_QUALITY_RANGE[0] <= jpeg_quality <= JPEG_QUALITY_RANGE[1]:
        raise ValueError(f"jpeg_quality must be an integer in {JPEG_QUALITY_RANGE[0]}..{JPEG_QUALITY_RANGE[1]}, "
                         f"got {jpeg_quality!r}")
    return int(jpeg_quality)


def _check_image(image: object, channels: int, what: str) -> np.ndarray:
    shape = "H x W" if channels == 1 else "H x W x 3"
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = f"dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be a uint8 numpy array, got {got}")
    ok = image.ndim == 2 if channels == 1 else (image.ndim == 3 and image.shape[2] == 3)
    if not ok or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty {shape} array, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _png_params(png_level: int, row_filter: str = "up") -> list[int]:
    """cv2.imencode parameters: zlib level `png_level` and one row filter ("up" or "sub"), where OpenCV sets one.

    The plugins leave the filter to libpng, which tries every filter on every row:
    on 1920x1080 street scenes at level 1 that took 2-3x longer than "up" alone
    (labels 26 vs 11 ms, inverse depth 65 vs 30 ms, measured side by side), for the
    same label size and 6 % more depth bytes. The filter changes the bytes, not the
    pixels: any PNG decoder reads the result. Depth predicted by the network is a
    smooth surface, bilinearly upsampled: there "sub" gave 28 % fewer bytes than "up"
    (1,367 vs 1,892 kB at 1920x1080, level 1, demo checkpoint; 11 % more on exact
    synthetic depth), so depth uses "sub" and labels "up" (15 vs 33 kB predicted).
    """
    params = [cv2.IMWRITE_PNG_COMPRESSION, _check_level(png_level)]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.10
        chosen = cv2.IMWRITE_PNG_FILTER_SUB if row_filter == "sub" else cv2.IMWRITE_PNG_FILTER_UP
        params += [cv2.IMWRITE_PNG_FILTER, chosen]
    return params


def _imencode(extension: str, image: np.ndarray, params: list[int]) -> bytes:
    ok, buffer = cv2.imencode(extension, image, params)
    if not ok:  # pragma: no cover - OpenCV refuses only what the checks above already refuse
        raise ValueError(f"cv2.imencode({extension}) failed on a {image.dtype} {image.shape} image")
    return buffer.tobytes()


def encode_mono8_png(image: np.ndarray, *, png_level: int = DEFAULT_PNG_LEVEL) -> CompressedPayload:
    """A mono8 image (class ids, confidence) as lossless PNG: format "mono8; png compressed "."""
    image = _check_image(image, 1, "a mono8 image")
    return CompressedPayload("mono8; png compressed ",
                             _imencode(".png", image, _png_params(png_level)))


def encode_mono8_jpeg(image: np.ndarray, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> CompressedPayload:
    """A mono8 image as grey JPEG: format "mono8; jpeg compressed mono8" (lossy: not for class ids)."""
    image = _check_image(image, 1, "a mono8 image")
    return CompressedPayload("mono8; jpeg compressed mono8",
                             _imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _check_quality(jpeg_quality)]))


def encode_rgb8_jpeg(image: np.ndarray, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> CompressedPayload:
    """An rgb8 image as colour JPEG: format "rgb8; jpeg compressed bgr8".

    Written from BGR-ordered pixels as the plugin does, so a subscriber that decodes
    with OpenCV (BGR) and swaps on "compressed bgr" gets RGB back.
    """
    image = _check_image(image, 3, "an rgb8 image")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return CompressedPayload("rgb8; jpeg compressed bgr8",
                             _imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _check_quality(jpeg_quality)]))


def depth_quantization_params(depth_max: float = DEFAULT_DEPTH_MAX,
                              depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION) -> tuple[float, float]:
    """(A, B) of the inverse-depth code, rounded to float32 as the plugin computes and sends them."""
    for name, value in (("depth_max", depth_max), ("depth_quantization", depth_quantization)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    q = np.float32(depth_quantization)
    a = q * (q + np.float32(1.0))
    b = np.float32(1.0) - a / np.float32(depth_max)
    if not (math.isfinite(a) and a / np.float32(depth_max) < 65534):
        raise ValueError(f"depth_quantization {depth_quantization} with depth_max {depth_max} leaves no depth "
                         f"that fits 16 bits")
    return float(a), float(b)


def quantize_inverse_depth(depth: np.ndarray, depth_max: float = DEFAULT_DEPTH_MAX,
                           depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION) -> np.ndarray:
    """H x W uint16 u = trunc(A / d + B) of float32 metres; 0 where d is not in (A / (65536 - B), depth_max)."""
    a, b = (np.float32(v) for v in depth_quantization_params(depth_max, depth_quantization))
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype.kind != "f" or 0 in depth.shape:
        got = f"{depth.dtype} {depth.shape}" if isinstance(depth, np.ndarray) else type(depth).__name__
        raise ValueError(f"depth must be a non-empty H x W float array of metres, got {got}")
    depth = depth.astype(np.float32, copy=False)
    code = np.empty(depth.shape, np.float32)
    keep = np.empty(depth.shape, bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(a, depth, out=code)
        code += b
        # NaN compares false, so NaN depths fail the first two tests.
        np.greater(depth, 0, out=keep)
        keep &= depth < np.float32(depth_max)
        keep &= code < _U16_LIMIT  # too close (and subnormal depths, whose A / d is infinite)
    np.logical_not(keep, out=keep)
    np.copyto(code, 0, where=keep)
    return code.astype(np.uint16)  # truncation towards zero, as C++ converts float to unsigned short


def encode_compressed_depth(depth: np.ndarray, *, depth_max: float = DEFAULT_DEPTH_MAX,
                            depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION,
                            png_level: int = DEFAULT_PNG_LEVEL) -> CompressedPayload:
    """32FC1 metres (NaN = none) as compressedDepth: format "32FC1; compressedDepth png"."""
    params = _png_params(png_level, "sub")
    a, b = depth_quantization_params(depth_max, depth_quantization)
    code = quantize_inverse_depth(depth, depth_max, depth_quantization)
    header = DEPTH_HEADER.pack(INVERSE_DEPTH, a, b)
    return CompressedPayload(DEPTH_FORMAT, header + _imencode(".png", code, params))


__all__ = ["CompressedPayload", "DEFAULT_DEPTH_MAX", "DEFAULT_DEPTH_QUANTIZATION", "DEFAULT_JPEG_QUALITY",
           "DEFAULT_PNG_LEVEL", "DEPTH_FORMAT", "DEPTH_HEADER", "INVERSE_DEPTH", "JPEG_QUALITY_RANGE",
           "PNG_LEVEL_RANGE", "depth_quantization_params", "encode_compressed_depth", "encode_mono8_jpeg",
           "encode_mono8_png", "encode_rgb8_jpeg", "quantize_inverse_depth"]
