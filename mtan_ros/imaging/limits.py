"""Limits on incoming frames: declared sizes, quoted sender text, refusal kinds, memory handed back.

Why: every size, encoding name and format string in an image message is chosen by
its sender. Sizes are checked before anything is allocated; text is quoted short so
that a hostile name cannot flood the log; each refusal carries a specific `kind`
so that per-kind log throttling keeps different causes apart. ROS-free.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any

from mtan_ros.common.text import quote  # noqa: F401 (re-exported: the converters quote with it)
from mtan_ros.errors import ImageConversionError

# A real camera's largest frame (4096 x 3072, 12.6 Mpx); the node's max_input_pixels overrides it.
DEFAULT_MAX_PIXELS = 4096 * 3072

# Every ImageConversionError.kind the converters raise, with what it means.
REFUSAL_KINDS: dict[str, str] = {
    "size.zero": "the frame declares a zero width or height",
    "size.too_large": "the declared size is above max_pixels",
    "size.unexpected": "the declared size differs from the size the topic has been delivering",
    "encoding.16bit": "a 16-bit image (depth, infrared) on the camera input",
    "encoding.float": "a floating-point image (depth) on the camera input",
    "encoding.raw_sensor": "raw Bayer/YUV data that needs debayering first",
    "encoding.no_color_order": "a generic 8UC3-style encoding without a colour order",
    "encoding.unknown": "an encoding name this package does not know",
    "layout.step_too_small": "row step smaller than width x bytes per pixel",
    "layout.step_misaligned": "row step not a multiple of the element size",
    "layout.truncated": "less data than step x height",
    "compressed.empty": "a CompressedImage without data",
    "compressed.depth": "a compressedDepth image on the camera input",
    "compressed.unknown_format": "compressed data that is neither JPEG nor PNG",
    "jpeg.corrupt": "JPEG data the decoder warns about or cannot decode",
    "jpeg.truncated": "JPEG data without its end-of-image marker",
    "jpeg.unsupported": "a JPEG kind the camera path does not take (CMYK, 12-bit, lossless, hierarchical)",
    "jpeg.too_many_scans": "a progressive JPEG with more scans than any encoder writes (a CPU bomb)",
    "png.corrupt": "PNG data with a bad chunk, CRC, header or image data",
    "png.truncated": "PNG data that ends before its IEND chunk",
}


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} Mpx"


def check_frame_size(width: int, height: int, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                     expected_size: tuple[int, int] | None = None, what: str = "image") -> None:
    """Refuse a declared frame size before anything is allocated for it.

    max_pixels: width x height above this is refused (kind size.too_large).
    expected_size: (height, width) the frame must have (kind size.unexpected); None accepts any size.
    """
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"zero-sized {what} ({width}x{height}): nothing to process", kind="size.zero")
    if width * height > max_pixels:
        raise ImageConversionError(
            f"{what} declares {width}x{height} = {_mpx(width * height)}, more than the {_mpx(max_pixels)} limit "
            "(parameter max_input_pixels); refusing to decode or allocate it",
            kind="size.too_large",
        )
    if expected_size is not None and (height, width) != tuple(expected_size):
        want_h, want_w = expected_size
        raise ImageConversionError(
            f"{what} declares {width}x{height} but this topic delivers {want_w}x{want_h}; frame skipped",
            kind="size.unexpected",
        )


_MALLOC_TRIM: Any = None
_MALLOC_TRIM_LOOKED_UP = False


def _malloc_trim() -> Any:
    global _MALLOC_TRIM, _MALLOC_TRIM_LOOKED_UP
    if not _MALLOC_TRIM_LOOKED_UP:
        _MALLOC_TRIM_LOOKED_UP = True
        if sys.platform.startswith("linux"):
            try:
                _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim  # glibc only: musl has neither
                _MALLOC_TRIM.argtypes, _MALLOC_TRIM.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                _MALLOC_TRIM = None
    return _MALLOC_TRIM


# glibc's mallopt parameters (malloc.h) and the values keep_frame_buffers_mapped sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
FRAME_MMAP_THRESHOLD = 32 * 1024 * 1024   # the largest glibc accepts on 64-bit
FRAME_TRIM_THRESHOLD = 128 * 1024 * 1024


def keep_frame_buffers_mapped() -> bool:
    """Let the memory of one frame be reused by the next instead of handed back to the OS; False without glibc.

    Why: each received frame is allocated anew (the middleware's buffer, the message's
    data). With glibc's adaptive thresholds the node returned those pages after every
    frame and touched fresh ones for the next: about 4,600 page faults and 5-7 ms per
    2 Mpx frame, measured. Fixed thresholds keep blocks up to 32 MB on the heap and up
    to 128 MB of free space at its top, so a steady stream reuses the same pages.
    Memory freed after an oversized frame is still returned by release_freed_memory.
    Process-wide: call it in the process that receives the frames.
    """
    if _malloc_trim() is None:
        return False
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, FRAME_TRIM_THRESHOLD))


def release_freed_memory() -> bool:
    """Hand freed heap memory back to the OS (glibc malloc_trim(0)); False where there is no such call.

    Why: glibc raises its mmap threshold to the largest block freed (up to 32 MB), so
    after a burst of big frames later buffers come from the heap and stay in RSS when
    freed. Call it after a refused or unusually large frame; it costs about a
    millisecond, so not after every ordinary one.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
