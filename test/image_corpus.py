"""Hostile and damaged image data for the converter tests, generated (no files), ROS-free.

Also imported by the child processes those tests start (RSS and fd 2 checks, the fuzz),
so everything here is plain bytes and numpy.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smooth_rgb(height: int, width: int, seed: int = 0, noise: int = 24) -> np.ndarray:
    """A gradient with some noise: compresses like a camera frame, not like a flat colour."""
    x = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)
    y = (np.arange(height) * 255 // max(height - 1, 1)).astype(np.uint8)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = x
    rgb[..., 1] = y[:, None]
    np.add(x[None, :], y[:, None], out=rgb[..., 2])  # wraps around: a few hard edges
    if noise:
        rgb = np.minimum(rgb.astype(np.uint16) + np.random.default_rng(seed).integers(0, noise + 1, rgb.shape,
                                                                                      dtype=np.uint16), 255)
    return rgb.astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray, quality: int = 90, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else [])
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, params)
    assert ok
    return data.tobytes()


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of an RGB (H x W x 3), RGBA (H x W x 4) or grey (H x W, uint8 or uint16) array."""
    codes = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}
    image = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, codes[pixels.shape[2]])
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def interlaced_png(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced PNG of an RGB array (OpenCV only writes non-interlaced ones)."""
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b"".join(b"\0" + row.tobytes() for y0, x0, dy, dx in passes for row in rgb[y0::dy, x0::dx] if row.size)
    ihdr = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 8, 2, 0, 0, 1)
    return png_from_chunks([(b"IHDR", ihdr), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")])


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, body length) of each chunk of a well-formed PNG."""
    pos, out = 8, []
    while pos < len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        out.append((ctype, pos, length))
        pos += 12 + length
    return out


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return PNG_MAGIC + b"".join(png_chunk(ctype, body) for ctype, body in chunks)


def png_parts(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(ctype, data[pos + 8:pos + 8 + length]) for ctype, pos, length in png_chunks(data)]


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header declaring another size (nothing else changes)."""
    pos = jpeg_sof_offset(data)
    return data[:pos + 5] + struct.pack(">HH", height, width) + data[pos + 9:]


def jpeg_sof_offset(data: bytes) -> int:
    pos = 2
    while True:
        marker = data[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return pos
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]


def jpeg_bomb() -> bytes:
    """A few-KB JPEG whose frame header says 7000 x 7000 (49 Mpx)."""
    return with_jpeg_size(jpeg_bytes(smooth_rgb(48, 64)), 7000, 7000)


def png_bomb(side: int = 7000) -> bytes:
    """A valid PNG of side x side black RGB pixels: ~143 KB for 49 Mpx, 147 MB once decoded."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte 0 and a row of zeros
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png_from_chunks([(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")])


def scan_offset(data: bytes) -> int:
    """Where a JPEG's entropy-coded data starts (after the first SOS header)."""
    pos = data.index(b"\xff\xda")
    return pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]


def random_bytes_in_scan(data: bytes, seed: int, count: int = 600) -> bytes:
    """`count` random bytes written over the middle of a JPEG's scan."""
    rng = np.random.default_rng(seed)
    start = scan_offset(data)
    pos = start + int(rng.integers(0, max(1, len(data) - start - count - 16)))
    return data[:pos] + rng.integers(0, 256, count, dtype=np.uint8).tobytes() + data[pos + count:]


def truncated_with_eoi(data: bytes, fraction: float = 0.6) -> bytes:
    """A JPEG cut inside its scan with the end-of-image marker put back."""
    return data[:int(len(data) * fraction)] + b"\xff\xd9"


def mutations(data: bytes, rng: np.random.Generator, count: int) -> Iterator[bytes]:
    """Seeded damage: bit flips, random runs, cuts (with or without the trailer put back), inserts, header fields."""
    for _ in range(count):
        buf = bytearray(data)
        how = int(rng.integers(0, 7))
        pos = int(rng.integers(0, len(buf)))
        if how == 0:
            for _ in range(int(rng.integers(1, 8))):
                buf[int(rng.integers(0, len(buf)))] ^= 1 << int(rng.integers(0, 8))
        elif how == 1:
            run = int(rng.integers(1, 600))
            buf[pos:pos + run] = rng.integers(0, 256, run, dtype=np.uint8).tobytes()
        elif how == 2:
            del buf[pos:]
        elif how == 3:
            buf = buf[:pos] + bytearray(data[-12:] if data.startswith(PNG_MAGIC) else b"\xff\xd9")
        elif how == 4:
            buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif how == 5:  # the header area, where sizes, lengths and table ids live
            for _ in range(int(rng.integers(1, 4))):
                buf[int(rng.integers(0, min(len(buf), 200)))] = int(rng.integers(0, 256))
        else:
            del buf[pos:pos + int(rng.integers(1, 200))]
        yield bytes(buf)


def run_child(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` (sys.argv[1:] = args) in a fresh Python with this checkout and test/ importable; output captured."""
    paths = [str(REPO), str(REPO / "test"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout)


def memory_kb(field: str) -> int:
    """VmRSS, VmHWM, ... of this process from /proc/self/status, in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)
