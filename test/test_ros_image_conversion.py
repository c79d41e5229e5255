"""Image message <-> numpy conversion: every encoding, padding, byte order, refusals, compressed data.

Compared against rosbags-image (an independent implementation on PyPI) and against
cv_bridge where a ROS installation provides a working one.
"""
from __future__ import annotations

import array
import struct
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from ros_helpers import make_image_msg  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from mtan_ros.ros import image_conversion as ic  # noqa: E402

NO_ROSBAGS_IMAGE = "rosbags-image not installed (pip install rosbags-image)"
RNG = np.random.default_rng(7)
COLOR_CASES = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


def pixels_for(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    layout = ic.encoding_layout(encoding)
    dtype = layout.dtype.newbyteorder("=")
    if dtype.kind == "f":
        values = RNG.normal(10, 5, layout.shape(height, width)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        values = RNG.integers(info.min, info.max, layout.shape(height, width), dtype=dtype, endpoint=True)
    return values


def expected_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    code = COLOR_CASES[encoding][1]
    return pixels if code is None else cv2.cvtColor(pixels, code)


@pytest.mark.parametrize("encoding", list(COLOR_CASES))
@pytest.mark.parametrize("padding", [0, 5])
def test_color_encodings_to_rgb(encoding, padding):
    pixels = pixels_for(encoding)
    msg = make_image_msg(pixels, encoding, padding=padding)
    rgb = ic.image_msg_to_rgb(msg, backend="numpy")
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected_rgb(pixels, encoding))


@pytest.mark.parametrize(
    "encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1", "8UC3", "rgb16", "64FC1"]
)
@pytest.mark.parametrize("bigendian", [False, True])
def test_array_view_matches_rosbags_image(encoding, bigendian):
    """Our view of every layout equals rosbags-image's message_to_cvimage (unpadded, both byte orders)."""
    rosbags_image = pytest.importorskip("rosbags.image", reason=NO_ROSBAGS_IMAGE)
    pixels = pixels_for(encoding)
    msg = make_image_msg(pixels, encoding, bigendian=bigendian)
    ours = ic.image_msg_to_array(msg)
    theirs = rosbags_image.message_to_cvimage(msg)
    assert ours.dtype.isnative
    np.testing.assert_array_equal(ours, pixels)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("encoding", list(COLOR_CASES))
def test_rgb_matches_rosbags_image(encoding):
    rosbags_image = pytest.importorskip("rosbags.image", reason=NO_ROSBAGS_IMAGE)
    pixels = pixels_for(encoding, 16, 24)
    msg = make_image_msg(pixels, encoding)
    expected = rosbags_image.message_to_cvimage(msg, "rgb8")
    np.testing.assert_array_equal(ic.image_msg_to_rgb(msg, backend="numpy"), expected)


def test_padded_16_bit_big_endian_view():
    pixels = pixels_for("16UC1", 4, 6)
    msg = make_image_msg(pixels, "16UC1", padding=4, bigendian=True)
    assert msg.step == 6 * 2 + 4
    np.testing.assert_array_equal(ic.image_msg_to_array(msg), pixels)


def test_view_shares_the_message_buffer():
    """rgb8 without padding is not copied on the way in."""
    pixels = pixels_for("rgb8")
    msg = make_image_msg(pixels, "rgb8")
    view = ic.image_msg_to_array(msg)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    assert view[0, 0, 0] == msg.data[0]


@pytest.mark.parametrize("encoding", list(COLOR_CASES))
def test_cv_bridge_agrees_with_numpy_path(encoding):
    backend, why = ic.bridge_status()
    if backend != "cv_bridge":
        pytest.skip(f"no usable cv_bridge here: {why}")
    pixels = pixels_for(encoding, 6, 8)
    for padding in (0, 2 * ic.encoding_layout(encoding).pixel_bytes):
        msg = make_image_msg(pixels, encoding, padding=padding)
        np.testing.assert_array_equal(
            ic.image_msg_to_rgb(msg, backend="cv_bridge"), ic.image_msg_to_rgb(msg, backend="numpy")
        )


def test_outgoing_messages_match_cv_bridge():
    backend, why = ic.bridge_status()
    if backend != "cv_bridge":
        pytest.skip(f"no usable cv_bridge here: {why}")
    from cv_bridge import CvBridge

    bridge = CvBridge()
    for encoding, pixels in [("rgb8", pixels_for("rgb8")), ("mono8", pixels_for("mono8")),
                             ("32FC1", pixels_for("32FC1"))]:
        ours = ic.array_to_image_msg(pixels, encoding)
        theirs = bridge.cv2_to_imgmsg(pixels, encoding=encoding)
        assert (ours.height, ours.width, ours.step, ours.encoding) == (theirs.height, theirs.width, theirs.step,
                                                                       theirs.encoding)
        assert bytes(ours.data) == bytes(theirs.data)


# ---------------------------------------------------------------- refusals


def refusal(msg: Image, **kw) -> ic.ImageConversionError:
    with pytest.raises(ic.ImageConversionError) as info:
        ic.image_msg_to_rgb(msg, **kw)
    return info.value


@pytest.mark.parametrize("encoding,words", [("mono16", "16-bit"), ("16UC1", "16-bit"), ("32FC1", "floating-point"),
                                            ("bayer_rggb8", "debayer"), ("yuv422", "raw sensor"),
                                            ("fancy", "unknown image encoding")])
def test_refused_encodings_say_why(encoding, words):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=array.array("B", bytes(16)))
    err = refusal(msg)
    assert words in str(err) and encoding in str(err)
    assert err.kind == "encoding"


def test_truncated_data():
    msg = make_image_msg(pixels_for("rgb8", 10, 10), "rgb8")
    msg.data = msg.data[:-1]
    err = refusal(msg)
    assert "truncated" in str(err) and "299" in str(err) and "300" in str(err)


def test_step_smaller_than_row():
    msg = make_image_msg(pixels_for("rgb8", 4, 4), "rgb8")
    msg.step = 10
    assert "step 10 is smaller" in str(refusal(msg))


@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (0, 0)])
def test_zero_size(width, height):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    assert "zero-sized" in str(refusal(msg))


def test_absurd_declared_size_is_refused_before_allocating():
    msg = Image(height=20000, width=20000, encoding="rgb8", step=60000, data=array.array("B", bytes(100)))
    err = refusal(msg)
    assert "400 Mpx" in str(err) and "max_input_pixels" in str(err)
    small_limit = make_image_msg(pixels_for("rgb8", 10, 10), "rgb8")
    assert "Mpx" in str(refusal(small_limit, max_pixels=50))


# ---------------------------------------------------------------- compressed


def compressed(rgb: np.ndarray, fmt: str) -> CompressedImage:
    return ic.rgb_to_compressed_msg(rgb, fmt)


def test_png_round_trip_is_exact_and_matches_rosbags():
    rgb = pixels_for("rgb8", 12, 20)
    msg = compressed(rgb, "png")
    assert msg.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(ic.compressed_msg_to_rgb(msg), rgb)
    rosbags_image = pytest.importorskip("rosbags.image", reason="rosbags-image not installed")
    np.testing.assert_array_equal(rosbags_image.message_to_cvimage(msg, "rgb8"), rgb)


def test_jpeg_decodes_close_to_source_and_equal_to_rosbags():
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, 255 - xx * 4], axis=-1).astype(np.uint8)  # smooth: JPEG-friendly
    msg = compressed(rgb, "jpeg")
    out = ic.compressed_msg_to_rgb(msg)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    rosbags_image = pytest.importorskip("rosbags.image", reason="rosbags-image not installed")
    np.testing.assert_array_equal(rosbags_image.message_to_cvimage(msg, "rgb8"), out)


def test_grayscale_png_becomes_rgb():
    gray = pixels_for("mono8", 8, 8)
    ok, png = cv2.imencode(".png", gray)
    msg = CompressedImage(format="png", data=array.array("B", png.tobytes()))
    np.testing.assert_array_equal(ic.compressed_msg_to_rgb(msg), cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def bad_compressed_cases() -> dict[str, tuple[bytes, str]]:
    rgb = pixels_for("rgb8", 16, 16)
    jpeg = bytes(compressed(rgb, "jpeg").data)
    png = bytes(compressed(rgb, "png").data)
    corrupt_png = bytearray(png)
    corrupt_png[40:60] = bytes(20)
    return {
        "empty": (b"", "no data"),
        "random bytes": (bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)), "neither JPEG nor PNG"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "JPEG"),
        "truncated png": (png[: len(png) // 2], "PNG"),
        "corrupt png body": (bytes(corrupt_png), "png"),
        "jpeg header only": (jpeg[:2] + b"\xff\xd9", "JPEG"),
        "absurd png size": (png_header_only(20000, 20000) + b"IEND", "400 Mpx"),
        "zero png size": (png_header_only(0, 5) + b"IEND", "zero-sized"),
    }


@pytest.mark.parametrize("case", list(bad_compressed_cases()))
def test_corrupt_compressed_is_refused(case):
    data, words = bad_compressed_cases()[case]
    msg = CompressedImage(format="jpeg", data=array.array("B", data))
    with pytest.raises(ic.ImageConversionError) as info:
        ic.compressed_msg_to_rgb(msg)
    assert words.lower() in str(info.value).lower()
    assert info.value.kind in ("compressed", "size")


def test_compressed_depth_is_refused():
    msg = CompressedImage(format="16UC1; compressedDepth png", data=array.array("B", b"\x00" * 20))
    with pytest.raises(ic.ImageConversionError, match="compressed depth"):
        ic.compressed_msg_to_rgb(msg)


def test_declared_size_of_real_jpeg_and_png():
    rgb = pixels_for("rgb8", 30, 50)
    assert ic.compressed_declared_size(bytes(compressed(rgb, "jpeg").data)) == ("jpeg", 50, 30)
    assert ic.compressed_declared_size(bytes(compressed(rgb, "png").data)) == ("png", 50, 30)


# ---------------------------------------------------------------- outgoing


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "32FC1", "16UC1"])
def test_new_image_msg_round_trip(encoding):
    pixels = pixels_for(encoding, 6, 9)
    header = make_image_msg(pixels_for("mono8", 1, 1), "mono8").header
    header.frame_id = "cam"
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg, view = ic.new_image_msg(header, 6, 9, encoding)
    np.copyto(view, pixels)
    assert (msg.height, msg.width, msg.encoding) == (6, 9, encoding)
    assert msg.step == 9 * ic.encoding_layout(encoding).pixel_bytes
    assert len(msg.data) == msg.step * 6
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 34
    np.testing.assert_array_equal(ic.image_msg_to_array(msg), pixels)
    # and it survives serialisation (what a subscriber gets)
    from rclpy.serialization import deserialize_message, serialize_message

    again = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(ic.image_msg_to_array(again), pixels)


def test_array_to_image_msg_checks_dtype_and_shape():
    with pytest.raises(ValueError, match="32FC1 needs"):
        ic.array_to_image_msg(np.zeros((4, 4), np.float64), "32FC1")
    with pytest.raises(ValueError, match="rgb8 needs"):
        ic.array_to_image_msg(np.zeros((4, 4), np.uint8), "rgb8")
    msg = ic.array_to_image_msg(np.arange(12, dtype=np.float32).reshape(3, 4), "32FC1")
    assert msg.is_bigendian is False or msg.is_bigendian == 0
    assert struct.unpack("<f", bytes(msg.data[4:8]))[0] == 1.0
