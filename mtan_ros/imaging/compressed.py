"""JPEG and PNG camera frames: the size from the header first, then a bounded, strict decode to RGB.

Why: a compressed frame's header can declare any size (a 7 KB JPEG can say
7000x7000), and decoders fill what they cannot read with grey and carry on. So the
declared size is checked before a byte is decoded, and anything the decoder warns
about refuses the frame (jpeg.corrupt, png.corrupt) instead of publishing a damaged
image. JPEG goes through simplejpeg (libjpeg-turbo, strict, straight to RGB, silent)
where it is installed, else through OpenCV with fd 2 captured, because OpenCV's
libjpeg prints its warnings there. PNG is checked chunk by chunk (order, CRCs,
IHDR) and decoded by OpenCV with fd 2 captured. ROS-free: a message is read through
its `format` and `data` fields only.
"""
from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import cv2
import numpy as np

from mtan_ros.errors import ImageConversionError
from mtan_ros.imaging.limits import DEFAULT_MAX_PIXELS, check_frame_size, quote
from mtan_ros.common.stderr_capture import call_claiming_stderr

try:  # libjpeg-turbo with warnings as errors; the OpenCV path below stands in where it is missing
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

JPEG_DECODERS = ("simplejpeg", "opencv")
# Progressive JPEGs have about 10 scans; thousands of tiny scans make libjpeg loop for seconds.
MAX_JPEG_SCANS = 100
# libpng writes 8 KB IDAT chunks, so 64 Ki chunks cover 500 MB; more only slows the chunk walk down.
MAX_PNG_CHUNKS = 65536

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Baseline, extended and progressive, Huffman or arithmetic: what libjpeg decodes to 8-bit RGB.
_JPEG_SOF_DECODABLE = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
_JPEG_SOF_PROGRESSIVE = {0xC2, 0xCA}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# What libjpeg (its warning table), libpng and OpenCV's image codecs print about damaged data.
_DECODER_LINE = re.compile(
    r"Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|Inconsistent progression sequence"
    r"|Unknown Adobe color transform|Warning: unknown JFIF|Application transferred too many"
    r"|libpng (warning|error)|\[ ?(WARN|ERROR):.*(grfmt_|imgcodecs|loadsave)"
)
# libpng warnings about ancillary chunks (lower-case first letter: iCCP, sRGB, tIME...) leave the pixels intact.
_HARMLESS_LINE = re.compile(r"libpng warning: ([a-z][A-Za-z]{3}: |Ignoring invalid time value)")
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11 decodes straight to RGB
# EXIF orientation would rotate the frame away from the size its header declares.
_IMREAD_FLAGS = (cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB) | cv2.IMREAD_IGNORE_ORIENTATION


def jpeg_decoder_name() -> str:
    """The JPEG decoder "auto" uses in this process: "simplejpeg", or "opencv" where it is not installed."""
    return "opencv" if simplejpeg is None else "simplejpeg"


def _jpeg_corrupt(reason: str) -> ImageConversionError:
    return ImageConversionError(f"corrupt JPEG: {reason}; frame skipped", kind="jpeg.corrupt")


def _png_corrupt(reason: str) -> ImageConversionError:
    return ImageConversionError(f"corrupt PNG: {reason}; frame skipped", kind="png.corrupt")


def _jpeg_frame_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(SOF marker, sample precision, height, width, component count) of the first frame header."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise _jpeg_corrupt(f"no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # a second SOI, EOI or a scan before any frame header
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise _jpeg_corrupt(f"segment length {length} at byte {pos}")
        if marker in _JPEG_SOF:
            if length < 8 or pos + 10 > len(data):
                break
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            return marker, precision, height, width, components
        pos += 2 + length
    raise _jpeg_corrupt("no frame header before the image data")


def _png_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from IHDR, checked against the PNG rules."""
    if len(data) < 33:
        raise ImageConversionError(f"truncated PNG: {len(data)} bytes end inside the header", kind="png.truncated")
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise _png_corrupt("the first chunk is not a 13-byte IHDR")
    width, height, depth, color, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth not in _PNG_DEPTHS.get(color, ()):
        raise _png_corrupt(f"bit depth {depth} with colour type {color} is not a valid combination")
    if compression or filtering or interlace > 1:
        raise _png_corrupt(f"unknown compression/filter/interlace method {compression}/{filtering}/{interlace}")
    return width, height, depth, color, interlace


def _read_header(data: bytes) -> tuple[str, int, int, tuple[int, ...]]:
    """(format, width, height, details): JPEG details (SOF marker, precision, components), PNG (colour type,)."""
    if data.startswith(_PNG_MAGIC):
        width, height, _, color, _ = _png_header(data)
        return "png", width, height, (color,)
    if data.startswith(_JPEG_SOI):
        marker, precision, height, width, components = _jpeg_frame_header(data)
        return "jpeg", width, height, (marker, precision, components)
    raise ImageConversionError(
        f"compressed data is neither JPEG nor PNG (first bytes {bytes(data[:8]).hex(' ')}); "
        "use the jpeg or png image_transport",
        kind="compressed.unknown_format",
    )


def compressed_declared_size(data: bytes) -> tuple[str, int, int]:
    """("jpeg" | "png", width, height) read from the header without decoding anything."""
    fmt, width, height, _ = _read_header(data)
    return fmt, width, height


def _check_jpeg_structure(data: bytes, marker: int, precision: int, components: int) -> None:
    if marker not in _JPEG_SOF_DECODABLE:
        raise ImageConversionError(
            f"JPEG with frame type SOF{marker - 0xC0} (lossless or hierarchical) is not a camera image this "
            "node decodes; send baseline or progressive JPEG", kind="jpeg.unsupported")
    if precision != 8 or components not in (1, 3):
        raise ImageConversionError(
            f"JPEG with {precision}-bit samples and {components} components is not an 8-bit grey or colour "
            "image; send 8-bit YCbCr or greyscale JPEG", kind="jpeg.unsupported")
    if _JPEG_EOI not in data[-64:]:
        raise ImageConversionError(
            f"truncated JPEG: {len(data)} bytes without an end-of-image marker; frame skipped", kind="jpeg.truncated")
    if marker not in _JPEG_SOF_PROGRESSIVE:
        return  # a sequential JPEG has one scan per component at most, and libjpeg warns about more
    scans = data.count(_JPEG_SOS)  # markers cannot hide in entropy-coded data (0xFF is stuffed there)
    if scans > MAX_JPEG_SCANS:
        raise ImageConversionError(
            f"JPEG with {scans} scans (more than {MAX_JPEG_SCANS}); no encoder writes that many, refusing to "
            "decode it", kind="jpeg.too_many_scans")


def _check_png_chunks(data: bytes, color: int) -> None:
    """Walk every chunk: lengths inside the data, CRCs, IHDR first, IDATs together, PLTE where needed, IEND."""
    view = memoryview(data)
    pos, chunks, seen = 8, 0, set()
    idat_ended = False
    while True:
        if pos + 12 > len(data):
            raise ImageConversionError(
                f"truncated PNG: {len(data)} bytes end before the IEND chunk; frame skipped", kind="png.truncated")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise ImageConversionError(
                f"truncated PNG: a {length}-byte chunk at byte {pos} runs past the end ({len(data)} bytes); "
                "frame skipped", kind="png.truncated")
        name = ctype.decode("latin-1")
        if not ctype.isalpha():
            raise _png_corrupt(f"invalid chunk type {quote(name)} at byte {pos}")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4:end - 4]) != crc:
            raise _png_corrupt(f"CRC error in the {name} chunk at byte {pos}")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _png_corrupt(f"more than {MAX_PNG_CHUNKS} chunks")
        if ctype == b"IHDR" and pos != 8:
            raise _png_corrupt(f"a second IHDR chunk at byte {pos}")
        if ctype == b"IDAT" and idat_ended:
            raise _png_corrupt(f"IDAT chunks are not consecutive (another one at byte {pos})")
        idat_ended = idat_ended or (b"IDAT" in seen and ctype != b"IDAT")
        seen.add(ctype)
        if ctype == b"IEND":
            break
        pos = end
    if b"IDAT" not in seen:
        raise _png_corrupt("no IDAT chunk (no image data)")
    if color == 3 and b"PLTE" not in seen:
        raise _png_corrupt("a palette image without a PLTE chunk")


def _opencv_decode(data: bytes, corrupt: Any) -> np.ndarray:
    """cv2.imdecode to RGB with fd 2 captured: a codec warning about the image data refuses the frame."""
    def decode() -> Any:
        try:
            return cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
        except cv2.error as exc:  # returned, not raised, so that the captured lines are still claimed
            return exc

    image, claimed = call_claiming_stderr(decode, _DECODER_LINE)
    lines = [line for line in claimed if not _HARMLESS_LINE.match(line)]
    if lines:
        more = f" (and {len(lines) - 1} more decoder messages)" if len(lines) > 1 else ""
        raise corrupt(f"{lines[0][:160]}{more}")
    if image is None or isinstance(image, cv2.error):
        raise corrupt(f"{len(data)} bytes could not be decoded")
    return image if _IMREAD_RGB is not None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_jpeg(data: bytes, decoder: str) -> np.ndarray:
    if decoder == "auto":
        decoder = jpeg_decoder_name()
    if decoder not in JPEG_DECODERS:
        raise ValueError(f"jpeg_decoder must be 'auto' or one of {JPEG_DECODERS}, got {decoder!r}")
    if decoder == "opencv":
        return _opencv_decode(data, _jpeg_corrupt)
    if simplejpeg is None:
        raise ValueError("jpeg_decoder 'simplejpeg' requested but it is not installed (pip install simplejpeg)")
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as exc:
        raise _jpeg_corrupt(str(exc)) from None


def decode_compressed(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      expected_size: tuple[int, int] | None = None, jpeg_decoder: str = "auto") -> np.ndarray:
    """JPEG or PNG bytes as a C-contiguous H x W x 3 uint8 RGB array; refusals raise ImageConversionError.

    The header's size is checked (max_pixels, expected_size as (height, width)) and the
    structure validated before decoding; a decoder warning refuses the frame.
    jpeg_decoder: "auto" (simplejpeg where installed), "simplejpeg" or "opencv".
    """
    fmt, width, height, details = _read_header(data)
    check_frame_size(width, height, max_pixels=max_pixels, expected_size=expected_size, what=f"{fmt.upper()} image")
    if fmt == "jpeg":
        _check_jpeg_structure(data, *details)
        rgb = _decode_jpeg(data, jpeg_decoder)
    else:
        _check_png_chunks(data, *details)
        rgb = _opencv_decode(data, _png_corrupt)
    if rgb.shape != (height, width, 3):
        corrupt = _jpeg_corrupt if fmt == "jpeg" else _png_corrupt
        raise corrupt(f"decoded to {rgb.shape}, but the header declares {height}x{width}x3")
    return rgb


def _message_bytes(msg: Any) -> bytes:
    """A CompressedImage's data, after refusing what no decoder should see (depth formats, nothing)."""
    fmt = msg.format or ""
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(
            f"format {quote(fmt)} is a compressed depth image; the network needs a colour camera image",
            kind="compressed.depth",
        )
    data = msg.data if isinstance(msg.data, bytes) else bytes(msg.data)
    if not data:
        raise ImageConversionError("compressed image has no data", kind="compressed.empty")
    return data


def check_compressed_msg(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                         expected_size: tuple[int, int] | None = None) -> None:
    """Refuse a CompressedImage on what its header declares, without decoding anything (microseconds)."""
    fmt, width, height, _ = _read_header(_message_bytes(msg))
    check_frame_size(width, height, max_pixels=max_pixels, expected_size=expected_size, what=f"{fmt.upper()} image")


def compressed_msg_to_rgb(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                          expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """A sensor_msgs CompressedImage (JPEG or PNG) as H x W x 3 uint8 RGB; refusals raise ImageConversionError.

    expected_size: (height, width) the frame must have, or None for any size up to max_pixels.
    """
    return decode_compressed(_message_bytes(msg), max_pixels=max_pixels, expected_size=expected_size)
