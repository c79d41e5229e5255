"""Decoders of the image_transport plugins' wire formats, written from the formats' description.

Independent of mtan_ros.imaging.transport_codecs on purpose: the tests judge the
node's compressed outputs by what a subscriber that knows only the formats reads.
compressed: `format` "<encoding>; <jpeg|png> compressed <pixel format>", data a JPEG or
PNG file, BGR pixel order when the format says "compressed bgr". compressedDepth:
`format` "32FC1; compressedDepth png", data = int32 format (0 = inverse depth),
float32 depthQuantA, float32 depthQuantB (little-endian), then a 16-bit PNG of
u = A / d + B; depth = A / (u - B) where u != 0, no reading where u == 0.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header(data):
    """(width, height, bit depth, colour type) from a PNG's IHDR."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    return width, height, bit_depth, colour_type


def decode(message_format, data):
    """(encoding, numpy image) as image_transport's subscriber plugins would produce them."""
    encoding, separator, rest = message_format.partition(";")
    assert separator, f"no ';' in {message_format!r}"
    encoding = encoding.strip()
    if "compressedDepth" in rest:
        assert rest.strip() in ("compressedDepth png", "compressedDepth")
        kind, quant_a, quant_b = struct.unpack("<iff", data[:12])
        assert kind == 0
        assert png_header(data[12:])[2:] == (16, 0)  # 16-bit grey
        code = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
        assert code.dtype == np.uint16 and code.ndim == 2
        depth = np.full(code.shape, np.nan, np.float32)
        valid = code != 0
        depth[valid] = np.float32(quant_a) / (code[valid].astype(np.float32) - np.float32(quant_b))
        return encoding, depth, (quant_a, quant_b)
    words = rest.split()
    assert words[0] in ("jpeg", "png") and words[1] == "compressed"
    if words[0] == "png":
        assert data[:8] == PNG_SIGNATURE
    else:
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    if encoding in ("rgb8", "rgba8") and "compressed bgr" in rest:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return encoding, image, None


def psnr(decoded, original):
    mse = np.mean((decoded.astype(np.float64) - original.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
