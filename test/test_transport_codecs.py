"""Transport codecs, checked with a decoder written here from the plugins' wire format, not the module's code.

The decoder follows what image_transport's subscribers do: the encoding is the text
before ";"; a compressedDepth payload is a 12-byte little-endian header (int32 0 =
inverse depth, float32 A, float32 B) and a 16-bit PNG of u, with d = A / (u - B) and
u = 0 meaning no depth; a compressed image is decoded by OpenCV (BGR for colour) and
turned back into RGB when the format says "compressed bgr".
"""
from __future__ import annotations


import cv2
import numpy as np
from plugin_decoders import decode, png_header, psnr
import pytest

from mtan_ros.data.classes import cityscapes_19
from mtan_ros.data.synthetic import generate_scene, scene_rng
from mtan_ros.imaging import transport_codecs as codecs

SIZE = (270, 480)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Lowest PSNR measured at jpeg_quality 90 on synthetic scenes 0-3 (val, seed 0): at 270x480 camera
# image 34.0 dB, semantic_color 32.8, overlay 35.0, grey 39.9; at 1920x1080 35.0 / 38.6 / 39.1 / 40.4.
# A channel swap or a wrong quality drops far below these bounds.
COLOUR_PSNR_DB = 30.0
GREY_PSNR_DB = 36.0


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(scene_rng(0, "val", index), size=SIZE) for index in range(2)]


# --- labels, confidence and colour images --------------------------------------------------------
@pytest.mark.parametrize("level", [0, 1, 3, 9])
def test_semantic_png_decodes_to_the_exact_class_ids(scenes, level):
    for scene in scenes:
        payload = codecs.encode_mono8_png(scene.labels, png_level=level)
        assert payload.format == "mono8; png compressed "
        assert isinstance(payload.data, bytes)
        assert png_header(payload.data) == (SIZE[1], SIZE[0], 8, 0)
        encoding, labels, _ = decode(payload.format, payload.data)
        assert encoding == "mono8" and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, scene.labels)


def test_png_level_trades_size(scenes):
    sizes = [len(codecs.encode_mono8_png(scenes[0].labels, png_level=level).data) for level in (0, 9)]
    assert sizes[1] < sizes[0] / 5
    assert sizes[0] > SIZE[0] * SIZE[1]  # level 0 stores


def test_confidence_png_and_jpeg(scenes):
    grey = cv2.cvtColor(scenes[0].image, cv2.COLOR_RGB2GRAY)
    payload = codecs.encode_mono8_png(grey)
    assert payload.format == "mono8; png compressed "
    np.testing.assert_array_equal(decode(payload.format, payload.data)[1], grey)
    payload = codecs.encode_mono8_jpeg(grey)
    assert payload.format == "mono8; jpeg compressed mono8"
    encoding, decoded, _ = decode(payload.format, payload.data)
    assert encoding == "mono8" and decoded.shape == grey.shape and decoded.dtype == np.uint8
    assert psnr(decoded, grey) >= GREY_PSNR_DB


def _colour_images(scene):
    colour = cityscapes_19().colorize(scene.labels).astype(np.uint8)
    return {"camera": scene.image, "semantic_color": colour,
            "overlay": cv2.addWeighted(scene.image, 0.5, colour, 0.5, 0.0)}


def test_rgb8_jpeg_decodes_to_rgb_within_the_psnr_bound(scenes):
    for scene in scenes:
        for name, image in _colour_images(scene).items():
            payload = codecs.encode_rgb8_jpeg(image)
            assert payload.format == "rgb8; jpeg compressed bgr8"
            encoding, decoded, _ = decode(payload.format, payload.data)
            assert encoding == "rgb8" and decoded.shape == image.shape and decoded.dtype == np.uint8
            assert psnr(decoded, image) >= COLOUR_PSNR_DB, name


def test_rgb8_jpeg_keeps_red_red():
    """The file holds ordinary colours, so the subscriber's swap on "compressed bgr" gives RGB back."""
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, :32, 0] = 255  # red
    image[:, 64:, 2] = 255  # blue
    _, decoded, _ = decode(*codecs.encode_rgb8_jpeg(image))
    assert decoded[:, :24, 0].min() > 230 and decoded[:, :24, 2].max() < 25
    assert decoded[:, 72:, 2].min() > 230 and decoded[:, 72:, 0].max() < 25
    # What any JPEG reader that returns RGB sees: red on the left.
    direct = cv2.imdecode(np.frombuffer(codecs.encode_rgb8_jpeg(image).data, np.uint8), cv2.IMREAD_COLOR)
    assert direct[:, :24, 2].min() > 230  # OpenCV's BGR: channel 2 is red


def test_jpeg_quality_trades_size(scenes):
    image = scenes[0].image
    low, high = (codecs.encode_rgb8_jpeg(image, jpeg_quality=q) for q in (30, 95))
    assert len(low.data) < len(high.data) / 2
    assert psnr(decode(*low)[1], image) < psnr(decode(*high)[1], image) - 2.0


def test_odd_sizes_and_non_contiguous_images():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 106, 3), dtype=np.uint8)[:, ::2]  # 37 x 53, strided
    _, decoded, _ = decode(*codecs.encode_rgb8_jpeg(image))
    assert decoded.shape == (37, 53, 3)
    labels = rng.integers(0, 19, (53, 37), dtype=np.uint8).T  # Fortran order
    np.testing.assert_array_equal(decode(*codecs.encode_mono8_png(labels))[1], labels)
    depth = rng.uniform(1, 50, (1, 1)).astype(np.float32)
    assert decode(*codecs.encode_compressed_depth(depth))[1].shape == (1, 1)


# --- compressedDepth ------------------------------------------------------------------------------
def _step(depth, quant_a):
    """The most a truncated code moves a depth: from d to A / (A / d - 1) = d + d^2 / (A - d)."""
    return depth ** 2 / (quant_a - depth)


def _check_depth(raw, decoded, quant_a, quant_b, depth_max):
    assert decoded.shape == raw.shape and decoded.dtype == np.float32
    closest = quant_a / (65536.0 - quant_b)
    with np.errstate(invalid="ignore"):
        sendable = (raw > closest * (1 + 1e-5)) & (raw < depth_max * (1 - 1e-5))
        unsendable = ~((raw > closest * (1 - 1e-5)) & (raw < depth_max))
    assert np.isfinite(decoded[sendable]).all()
    assert np.isnan(decoded[unsendable]).all()
    both = np.isfinite(raw) & np.isfinite(decoded)
    d = raw[both].astype(np.float64)
    error = decoded[both] - d
    # Truncation only moves depths away; float32 arithmetic adds a few ulps of the code either way.
    slack = 1e-2 * _step(d, quant_a) + 1e-6 * d
    assert (error >= -slack).all()
    assert (error <= _step(d, quant_a) + slack).all()
    return error


@pytest.mark.parametrize("depth_max, quantization", [(100.0, codecs.DEFAULT_DEPTH_QUANTIZATION), (10.0, 100.0),
                                                     (100.0, 50.0), (60.0, 150.0)])
def test_compressed_depth_within_one_step_and_nan_outside_the_range(scenes, depth_max, quantization):
    for scene in scenes:
        raw = scene.depth.copy()
        raw[raw > 100.0] = np.nan  # the node's max_depth
        payload = codecs.encode_compressed_depth(raw, depth_max=depth_max, depth_quantization=quantization)
        assert payload.format == "32FC1; compressedDepth png"
        assert len(payload.data) > 12 and payload.data[12:20] == PNG_SIGNATURE
        assert png_header(payload.data[12:]) == (SIZE[1], SIZE[0], 16, 0)
        encoding, decoded, (quant_a, quant_b) = decode(payload.format, payload.data)
        assert encoding == "32FC1"
        q = np.float32(quantization)
        assert quant_a == q * (q + np.float32(1))
        assert quant_b == np.float32(1) - np.float32(quant_a) / np.float32(depth_max)
        assert np.isnan(decoded[np.isnan(raw)]).all()
        assert np.isnan(decoded[raw >= depth_max]).all()
        assert _check_depth(raw, decoded, quant_a, quant_b, depth_max).size > 1000


def test_compressed_depth_edge_values():
    depth_max, quantization = 100.0, 150.0
    quant_a = 150.0 * 151.0
    quant_b = 1.0 - quant_a / depth_max
    closest = quant_a / (65536.0 - quant_b)
    values = [np.nan, np.inf, -np.inf, 0.0, -0.0, -5.0, 1e-42, 1e-3, closest * 0.999, closest * 1.001, 0.5, 1.0,
              7.25, 42.0, 99.99, 100.0, 100.01, 1e6, np.float32(np.finfo(np.float32).max)]
    raw = np.array(values, np.float32).reshape(1, -1)
    _, decoded, (a, b) = decode(*codecs.encode_compressed_depth(raw, depth_max=depth_max,
                                                                depth_quantization=quantization))
    assert np.isclose(a, quant_a) and np.isclose(b, quant_b)
    nan_expected = [True, True, True, True, True, True, True, True, True, False, False, False,
                    False, False, False, True, True, True, True]
    np.testing.assert_array_equal(np.isnan(decoded[0]), nan_expected)
    _check_depth(raw, decoded, a, b, depth_max)


def test_compressed_depth_is_accurate_near_and_far():
    """Every depth from the closest sendable one to depth_max, at its own step."""
    raw = np.geomspace(0.35, 99.9, 200_000).astype(np.float32).reshape(400, 500)
    _, decoded, (a, b) = decode(*codecs.encode_compressed_depth(raw))
    assert np.isfinite(decoded).all()
    error = _check_depth(raw, decoded, a, b, codecs.DEFAULT_DEPTH_MAX)
    # At the defaults: under 0.5 m at 100 m, under 2 cm at 20 m, under 1 mm at 4 m.
    for depth, bound in ((99.9, 0.5), (20.0, 0.02), (4.0, 1e-3)):
        assert error[raw.ravel() <= depth].max() < bound


def test_all_nan_depth():
    raw = np.full((20, 30), np.nan, np.float32)
    assert np.isnan(decode(*codecs.encode_compressed_depth(raw))[1]).all()


# --- arguments ------------------------------------------------------------------------------------
def test_defaults_are_within_the_plugins_ranges():
    assert 1 <= codecs.DEFAULT_JPEG_QUALITY <= 100 and 0 <= codecs.DEFAULT_PNG_LEVEL <= 9
    assert 1.0 <= codecs.DEFAULT_DEPTH_MAX <= 100.0 and 1.0 <= codecs.DEFAULT_DEPTH_QUANTIZATION <= 150.0


@pytest.mark.parametrize("call, message", [
    (lambda: codecs.encode_mono8_png(np.zeros((4, 4), np.uint8), png_level=10), "png_level"),
    (lambda: codecs.encode_mono8_png(np.zeros((4, 4), np.uint8), png_level=True), "png_level"),
    (lambda: codecs.encode_mono8_png(np.zeros((4, 4), np.uint8), png_level=1.5), "png_level"),
    (lambda: codecs.encode_mono8_jpeg(np.zeros((4, 4), np.uint8), jpeg_quality=0), "jpeg_quality"),
    (lambda: codecs.encode_rgb8_jpeg(np.zeros((4, 4, 3), np.uint8), jpeg_quality=101), "jpeg_quality"),
    (lambda: codecs.encode_mono8_png(np.zeros((4, 4), np.uint16)), "uint8"),
    (lambda: codecs.encode_mono8_png(np.zeros((4, 4, 3), np.uint8)), "H x W"),
    (lambda: codecs.encode_mono8_png(np.zeros((0, 4), np.uint8)), "non-empty"),
    (lambda: codecs.encode_rgb8_jpeg(np.zeros((4, 4), np.uint8)), "H x W x 3"),
    (lambda: codecs.encode_rgb8_jpeg([[1, 2, 3]]), "numpy"),
    (lambda: codecs.encode_compressed_depth(np.zeros((4, 4), np.uint16)), "float"),
    (lambda: codecs.encode_compressed_depth(np.zeros((4, 4, 1), np.float32)), "H x W"),
    (lambda: codecs.encode_compressed_depth(np.ones((4, 4), np.float32), depth_max=0.0), "depth_max"),
    (lambda: codecs.encode_compressed_depth(np.ones((4, 4), np.float32), depth_max=np.nan), "depth_max"),
    (lambda: codecs.encode_compressed_depth(np.ones((4, 4), np.float32), depth_quantization=-1), "quantization"),
    (lambda: codecs.encode_compressed_depth(np.ones((4, 4), np.float32), png_level=-1), "png_level"),
    (lambda: codecs.encode_compressed_depth(np.ones((4, 4), np.float32), depth_max=0.001,
                                            depth_quantization=150.0), "fits 16 bits"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_float64_depth_is_sent_as_float32():
    raw = np.linspace(1.0, 90.0, 600).reshape(20, 30)
    _, decoded, (a, b) = decode(*codecs.encode_compressed_depth(raw))
    _check_depth(raw.astype(np.float32), decoded, a, b, codecs.DEFAULT_DEPTH_MAX)


def test_bandwidth_script_prints_its_table(capsys):
    from mtan_ros.benchmarks import bandwidth

    bandwidth.main(["--scenes", "1", "--size", "60x100", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines[2:]]
    assert names == ["depth", "semantic", "semantic_color", "overlay", "depth+semantic", "rgb8", "extra"]
    assert lines[-1].startswith("extra encode time per frame with every compressed output subscribed: ")
    assert "6,000" in lines[3] and "24,000" in lines[2]  # raw mono8 and 32FC1 bytes at 60x100
    with pytest.raises(SystemExit):
        bandwidth.main(["--size", "big"])
