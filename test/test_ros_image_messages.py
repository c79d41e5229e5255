"""sensor_msgs/Image <-> numpy: every encoding, padding, byte order, refusals with their kinds, outgoing buffers.

Compared against rosbags-image (an independent implementation on PyPI). The CompressedImage
message tests here cover the message types; decoding itself is tested in test_compressed_images.
"""
from __future__ import annotations

import array
import struct

import cv2
import image_corpus as corpus
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from ros_helpers import make_image_msg  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from mtan_ros.errors import ImageConversionError  # noqa: E402
from mtan_ros.ros.camera import image_messages as im  # noqa: E402
from mtan_ros.imaging.compressed import compressed_msg_to_rgb  # noqa: E402
from mtan_ros.imaging.image_encodings import encoding_layout  # noqa: E402
from mtan_ros.imaging.limits import REFUSAL_KINDS  # noqa: E402

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
    layout = encoding_layout(encoding)
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
    rgb = im.image_msg_to_rgb(msg, backend="numpy")
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
    ours = im.image_msg_to_array(msg)
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
    np.testing.assert_array_equal(im.image_msg_to_rgb(msg, backend="numpy"), expected)


def test_padded_16_bit_big_endian_view():
    pixels = pixels_for("16UC1", 4, 6)
    msg = make_image_msg(pixels, "16UC1", padding=4, bigendian=True)
    assert msg.step == 6 * 2 + 4
    np.testing.assert_array_equal(im.image_msg_to_array(msg), pixels)


def test_view_shares_the_message_buffer():
    """rgb8 without padding is not copied on the way in."""
    pixels = pixels_for("rgb8")
    msg = make_image_msg(pixels, "rgb8")
    view = im.image_msg_to_array(msg)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    assert view[0, 0, 0] == msg.data[0]


def test_backend_name_is_checked():
    with pytest.raises(ValueError, match="backend"):
        im.image_msg_to_rgb(make_image_msg(pixels_for("rgb8"), "rgb8"), backend="fast")


# ---------------------------------------------------------------- refusals


def refusal(msg: Image, **kw) -> ImageConversionError:
    with pytest.raises(ImageConversionError) as info:
        im.image_msg_to_rgb(msg, **kw)
    assert info.value.kind in REFUSAL_KINDS
    return info.value


@pytest.mark.parametrize("encoding,words,kind", [
    ("mono16", "16-bit", "encoding.16bit"), ("16UC1", "16-bit", "encoding.16bit"),
    ("32FC1", "floating-point", "encoding.float"), ("bayer_rggb8", "debayer", "encoding.raw_sensor"),
    ("yuv422", "raw sensor", "encoding.raw_sensor"), ("8UC3", "no colour order", "encoding.no_color_order"),
    ("fancy", "unknown image encoding", "encoding.unknown"),
])
def test_refused_encodings_say_why(encoding, words, kind):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=array.array("B", bytes(16)))
    err = refusal(msg)
    assert words in str(err) and encoding in str(err)
    assert err.kind == kind


def test_huge_encoding_name_makes_a_short_message():
    for name in ("x" * 100_000, "bayer" + "y" * 100_000, "mono16".rjust(100_000, "z")):
        msg = Image(height=2, width=2, encoding=name, step=8, data=array.array("B", bytes(16)))
        err = refusal(msg)
        assert len(str(err)) < 300 and "100" in str(err)
        with pytest.raises(ImageConversionError) as info:
            im.image_msg_to_array(msg)
        assert len(str(info.value)) < 300 and info.value.kind == "encoding.unknown"


def test_truncated_data():
    msg = make_image_msg(pixels_for("rgb8", 10, 10), "rgb8")
    msg.data = msg.data[:-1]
    err = refusal(msg)
    assert "truncated" in str(err) and "299" in str(err) and "300" in str(err)
    assert err.kind == "layout.truncated"


def test_step_smaller_than_row():
    msg = make_image_msg(pixels_for("rgb8", 4, 4), "rgb8")
    msg.step = 10
    err = refusal(msg)
    assert "step 10 is smaller" in str(err) and err.kind == "layout.step_too_small"


def test_step_not_a_multiple_of_the_element():
    msg = make_image_msg(pixels_for("16UC1", 4, 4), "16UC1", padding=1)
    with pytest.raises(ImageConversionError) as info:
        im.image_msg_to_array(msg)
    assert info.value.kind == "layout.step_misaligned"


@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (0, 0)])
def test_zero_size(width, height):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    err = refusal(msg)
    assert "zero-sized" in str(err) and err.kind == "size.zero"


@pytest.mark.parametrize("width,height", [(20000, 20000), (4097, 3072), (2**32 - 1, 2**32 - 1), (1, 2**32 - 1)])
def test_huge_declared_raw_sizes_are_refused_before_allocating(width, height):
    step = min(width * 3, 2**32 - 1)
    msg = Image(height=height, width=width, encoding="bgr8", step=step, data=array.array("B", bytes(100)))
    err = refusal(msg)
    assert err.kind == "size.too_large" and "max_input_pixels" in str(err)
    assert "Mpx" in str(refusal(make_image_msg(pixels_for("rgb8", 10, 10), "rgb8"), max_pixels=50))


def test_400_mpx_message():
    msg = Image(height=20000, width=20000, encoding="rgb8", step=60000, data=array.array("B", bytes(100)))
    assert "400 Mpx" in str(refusal(msg))


def test_expected_size():
    msg = make_image_msg(pixels_for("bgr8", 6, 8), "bgr8")
    assert im.image_msg_to_rgb(msg, expected_size=(6, 8)).shape == (6, 8, 3)
    err = refusal(msg, expected_size=(8, 6))
    assert err.kind == "size.unexpected" and "8x6" in str(err) and "6x8" in str(err)
    with pytest.raises(ImageConversionError, match="delivers"):
        im.image_msg_to_array(msg, expected_size=(5, 8))


def test_fuzzed_raw_messages_only_raise_image_conversion_error():
    """400 seeded raw messages with random sizes, steps, lengths, byte orders and encodings."""
    rng = np.random.default_rng(4242)
    encodings = list(COLOR_CASES) + ["mono16", "32FC1", "8UC3", "bayer_rggb8", "", "rgb8" * 5000, "\x00\xff"]
    outcomes = {"converted": 0}
    for _ in range(400):
        height, width = (int(v) for v in rng.choice([0, 1, 7, 64, 4096, 70000, 2**31, 2**32 - 1], 2))
        encoding = str(rng.choice(encodings))
        step = int(rng.choice([0, 1, width, width * 3, width * 4 + 1, 2**32 - 1])) % 2**32
        length = int(rng.choice([0, 1, 100, 3 * 7 * 64, 4096]))
        msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=bool(rng.integers(0, 2)),
                    data=array.array("B", rng.integers(0, 256, length, dtype=np.uint8).tobytes()))
        try:
            rgb = im.image_msg_to_rgb(msg, backend="numpy", max_pixels=int(rng.choice([1000, 12_582_912])))
            assert rgb.shape == (height, width, 3)
            outcomes["converted"] += 1
        except ImageConversionError as exc:
            assert exc.kind in REFUSAL_KINDS and len(str(exc)) < 400
            outcomes[exc.kind] = outcomes.get(exc.kind, 0) + 1
    assert sum(outcomes.values()) == 400
    assert {"size.too_large", "size.zero", "layout.truncated", "encoding.unknown"} <= set(outcomes), outcomes


# ---------------------------------------------------------------- compressed messages


def test_png_message_round_trip_is_exact_and_matches_rosbags():
    rgb = pixels_for("rgb8", 12, 20)
    msg = im.rgb_to_compressed_msg(rgb, "png")
    assert msg.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_msg_to_rgb(msg), rgb)
    rosbags_image = pytest.importorskip("rosbags.image", reason=NO_ROSBAGS_IMAGE)
    np.testing.assert_array_equal(rosbags_image.message_to_cvimage(msg, "rgb8"), rgb)


def test_jpeg_message_decodes_close_to_source_and_equal_to_rosbags():
    rgb = corpus.smooth_rgb(48, 64, noise=0)
    msg = im.rgb_to_compressed_msg(rgb, "jpeg")
    out = compressed_msg_to_rgb(msg, expected_size=(48, 64))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    rosbags_image = pytest.importorskip("rosbags.image", reason=NO_ROSBAGS_IMAGE)
    np.testing.assert_array_equal(rosbags_image.message_to_cvimage(msg, "rgb8"), out)


def test_compressed_message_refusals():
    msg = CompressedImage(format="16UC1; compressedDepth png", data=array.array("B", b"\x00" * 20))
    with pytest.raises(ImageConversionError, match="compressed depth"):
        compressed_msg_to_rgb(msg)
    bomb = CompressedImage(format="jpeg", data=array.array("B", corpus.jpeg_bomb()))
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(bomb)
    assert info.value.kind == "size.too_large"


# ---------------------------------------------------------------- outgoing


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "32FC1", "16UC1"])
def test_new_image_msg_round_trip(encoding):
    pixels = pixels_for(encoding, 6, 9)
    header = make_image_msg(pixels_for("mono8", 1, 1), "mono8").header
    header.frame_id = "cam"
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg, view = im.new_image_msg(header, 6, 9, encoding)
    np.copyto(view, pixels)
    assert (msg.height, msg.width, msg.encoding) == (6, 9, encoding)
    assert msg.step == 9 * encoding_layout(encoding).pixel_bytes
    assert len(msg.data) == msg.step * 6
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 34
    np.testing.assert_array_equal(im.image_msg_to_array(msg), pixels)
    # and it survives serialisation (what a subscriber gets)
    from rclpy.serialization import deserialize_message, serialize_message

    again = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(im.image_msg_to_array(again), pixels)


def test_array_to_image_msg_checks_dtype_and_shape():
    with pytest.raises(ValueError, match="32FC1 needs"):
        im.array_to_image_msg(np.zeros((4, 4), np.float64), "32FC1")
    with pytest.raises(ValueError, match="rgb8 needs"):
        im.array_to_image_msg(np.zeros((4, 4), np.uint8), "rgb8")
    msg = im.array_to_image_msg(np.arange(12, dtype=np.float32).reshape(3, 4), "32FC1")
    assert msg.is_bigendian is False or msg.is_bigendian == 0
    assert struct.unpack("<f", bytes(msg.data[4:8]))[0] == 1.0
