"""The cv_bridge self-check: a bridge is used only when it converts every camera encoding like the numpy path.

A real cv_bridge comes with a ROS installation; without one, stand-in bridges exercise the check.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from ros_helpers import make_image_msg  # noqa: E402

from mtan_ros.ros.camera import cv_bridge_check  # noqa: E402
from mtan_ros.ros.camera import image_messages as im  # noqa: E402
from mtan_ros.imaging.image_encodings import COLOR_ENCODINGS, color_to_rgb, encoding_layout  # noqa: E402

RNG = np.random.default_rng(3)


class NumpyBridge:
    """Converts like the numpy path (what a good cv_bridge does)."""

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        assert desired_encoding == "rgb8"
        return color_to_rgb(im.image_msg_to_array(msg), msg.encoding)


class SwappedBridge(NumpyBridge):
    """Returns BGR for colour input (the broken PyPI package's kind of mistake)."""

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        return np.ascontiguousarray(super().imgmsg_to_cv2(msg, desired_encoding)[..., ::-1])


def test_check_accepts_a_correct_bridge_and_rejects_a_wrong_one():
    cv_bridge_check.check_bridge(NumpyBridge())
    with pytest.raises(ValueError, match="converts differently"):
        cv_bridge_check.check_bridge(SwappedBridge())


@pytest.mark.parametrize("bridge,backend", [(NumpyBridge, "cv_bridge"), (SwappedBridge, "numpy")])
def test_status_with_a_stand_in_cv_bridge_module(monkeypatch, bridge, backend):
    monkeypatch.setitem(sys.modules, "cv_bridge", types.SimpleNamespace(CvBridge=bridge))
    monkeypatch.setattr(cv_bridge_check, "_BRIDGE", None)
    monkeypatch.setattr(cv_bridge_check, "_BRIDGE_STATUS", None)
    status, why = cv_bridge_check.bridge_status()
    assert status == backend
    assert (cv_bridge_check.get_bridge() is not None) == (backend == "cv_bridge")
    if backend == "numpy":
        assert "present but unusable" in why
    pixels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = make_image_msg(pixels, "bgr8")
    np.testing.assert_array_equal(im.image_msg_to_rgb(msg), pixels[..., ::-1])  # "auto" picks the good path


def test_padded_test_message_has_the_padding():
    pixels = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    msg = cv_bridge_check.padded_image_msg(pixels, "rgba8", padding=8)
    assert msg.step == 5 * 4 + 8 and len(msg.data) == 3 * msg.step
    np.testing.assert_array_equal(im.image_msg_to_array(msg), pixels)


def real_bridge_or_skip() -> None:
    backend, why = cv_bridge_check.bridge_status()
    if backend != "cv_bridge":
        pytest.skip(f"no usable cv_bridge here: {why}")


@pytest.mark.parametrize("encoding", list(COLOR_ENCODINGS))
def test_cv_bridge_agrees_with_numpy_path(encoding):
    real_bridge_or_skip()
    layout = encoding_layout(encoding)
    pixels = RNG.integers(0, 256, layout.shape(6, 8), dtype=np.uint8)
    for padding in (0, 2 * layout.pixel_bytes):
        msg = make_image_msg(pixels, encoding, padding=padding)
        np.testing.assert_array_equal(
            im.image_msg_to_rgb(msg, backend="cv_bridge"), im.image_msg_to_rgb(msg, backend="numpy")
        )


def test_outgoing_messages_match_cv_bridge():
    real_bridge_or_skip()
    from cv_bridge import CvBridge

    bridge = CvBridge()
    cases = [("rgb8", RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
             ("mono8", RNG.integers(0, 256, (5, 7), dtype=np.uint8)),
             ("32FC1", RNG.normal(10, 5, (5, 7)).astype(np.float32))]
    for encoding, pixels in cases:
        ours = im.array_to_image_msg(pixels, encoding)
        theirs = bridge.cv2_to_imgmsg(pixels, encoding=encoding)
        assert (ours.height, ours.width, ours.step, ours.encoding) == (theirs.height, theirs.width, theirs.step,
                                                                       theirs.encoding)
        assert bytes(ours.data) == bytes(theirs.data)
