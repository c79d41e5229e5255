"""The node's image_transport-compatible outputs, confidence and class metadata, in-process with a fake predictor.

Each compressed output is read with test/plugin_decoders.py, written from the plugins'
format description, and compared with the raw output of the same frame: semantic and
confidence exactly, depth within one quantisation step, JPEG within a PSNR bound.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from plugin_decoders import decode, psnr  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import (  # noqa: E402
    Collector,
    image_to_array,
    make_image_msg,
    publish_until,
    stamp_key,
    synthetic_street,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
import test_node_inprocess as inprocess  # noqa: E402
from test_node_inprocess import (  # noqa: E402
    FakeFactory,
    HEIGHT,
    PALETTE,
    WIDTH,
    active_node,
    expected_confidence,
    expected_depth,
    expected_labels,
    topic,
)

from mtan_ros.ros.node.outputs import OUTPUTS  # noqa: E402

pytestmark = pytest.mark.timeout(60)
# The in-process node fixtures: a RosSession and make_node(factory, **parameters).
ros = inprocess.ros
make_node = inprocess.make_node

RAW = {"depth": Image, "semantic": Image, "semantic_color": Image, "overlay": Image, "confidence": Image}
COMPRESSED = {"depth/compressedDepth": CompressedImage, "semantic/compressed": CompressedImage,
              "semantic_color/compressed": CompressedImage, "overlay/compressed": CompressedImage,
              "confidence/compressed": CompressedImage}
# The same bound as the codec tests: the lowest PSNR measured at jpeg_quality 90 was 32.8 dB.
COLOUR_PSNR_DB = 30.0


def _answered(ros, node, names: dict, frame_id: str = "cam_optical_frame", seed: int = 3):
    """Publish one camera frame until every output in `names` has arrived for it; (frame, {name: msg})."""
    pub = ros.node.create_publisher(Image, topic(node, "image_raw"), 10)
    collector = Collector(ros, {topic(node, name): kind for name, kind in names.items()})
    try:
        ros.wait_for(lambda: pub.get_subscription_count() > 0 and collector.connected(), 10, "the node's topics")
        rgb = synthetic_street(HEIGHT, WIDTH, seed=seed)
        msg = make_image_msg(rgb, "rgb8", stamp=ros.stamp(2000.0 + seed), frame_id=frame_id)
        wanted = [topic(node, name) for name in names]
        publish_until(ros, lambda: pub.publish(msg), lambda: collector.has(msg.header.stamp, wanted), timeout=10,
                      resend_every=1.0, what=f"{len(wanted)} outputs for {stamp_key(msg.header.stamp)}")
        return rgb, msg, {name: collector.get(topic(node, name), msg.header.stamp) for name in names}
    finally:
        collector.destroy()
        ros.node.destroy_publisher(pub)


def test_every_compressed_output_decodes_like_its_raw_output(ros, make_node):
    node = active_node(make_node, FakeFactory(), max_depth=8.0, depth_max=6.0, depth_quantization=100.0)
    rgb, msg, out = _answered(ros, node, {**RAW, **COMPRESSED}, frame_id="left_optical_frame")

    for name, result in out.items():
        assert stamp_key(result.header.stamp) == stamp_key(msg.header.stamp), name
        assert result.header.frame_id == "left_optical_frame", name
    assert out["semantic/compressed"].format.startswith("mono8; png compressed")
    assert out["confidence/compressed"].format.startswith("mono8; png compressed")
    assert out["semantic_color/compressed"].format == "rgb8; jpeg compressed bgr8"
    assert out["overlay/compressed"].format == "rgb8; jpeg compressed bgr8"
    assert out["depth/compressedDepth"].format == "32FC1; compressedDepth png"

    labels = image_to_array(out["semantic"])
    np.testing.assert_array_equal(labels, expected_labels(HEIGHT, WIDTH))
    encoding, decoded, _ = decode(out["semantic/compressed"].format, bytes(out["semantic/compressed"].data))
    assert encoding == "mono8"
    np.testing.assert_array_equal(decoded, labels)

    confidence = image_to_array(out["confidence"])
    assert out["confidence"].encoding == "mono8" and confidence.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(confidence, expected_confidence(HEIGHT, WIDTH))
    _, decoded, _ = decode(out["confidence/compressed"].format, bytes(out["confidence/compressed"].data))
    np.testing.assert_array_equal(decoded, confidence)

    for name in ("semantic_color", "overlay"):
        raw = image_to_array(out[name])
        encoding, decoded, _ = decode(out[f"{name}/compressed"].format, bytes(out[f"{name}/compressed"].data))
        assert encoding == "rgb8" and decoded.shape == raw.shape
        assert psnr(decoded, raw) >= COLOUR_PSNR_DB, name
    np.testing.assert_array_equal(image_to_array(out["semantic_color"]), PALETTE[labels])

    raw_depth = image_to_array(out["depth"])
    np.testing.assert_array_equal(raw_depth, expected_depth(HEIGHT, WIDTH))  # 0.5 .. 10.25 m
    encoding, depth, (quant_a, quant_b) = decode(out["depth/compressedDepth"].format,
                                                 bytes(out["depth/compressedDepth"].data))
    assert encoding == "32FC1" and depth.shape == (HEIGHT, WIDTH)
    assert quant_a == pytest.approx(100.0 * 101.0) and quant_b == pytest.approx(1.0 - quant_a / 6.0)
    near = raw_depth < 6.0 * (1 - 1e-5)
    step = raw_depth[near].astype(np.float64) ** 2 / (quant_a - raw_depth[near])
    error = depth[near] - raw_depth[near]
    assert np.isfinite(depth[near]).all()
    assert (error >= -1e-4).all() and (error <= step + 1e-4).all()
    assert np.isnan(depth[~near]).all()  # beyond depth_max: no reading, as the plugin sends it


def test_compressed_outputs_follow_their_parameters(ros, make_node):
    node = active_node(make_node, FakeFactory(), jpeg_quality=20, png_level=9)
    _, _, low = _answered(ros, node, {"semantic_color/compressed": CompressedImage}, seed=5)
    node.set_parameters([Parameter("jpeg_quality", value=100)])
    _, _, high = _answered(ros, node, {"semantic_color/compressed": CompressedImage}, seed=5)
    assert len(high["semantic_color/compressed"].data) > len(low["semantic_color/compressed"].data)


def test_confidence_is_computed_only_when_subscribed(ros, make_node):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    _answered(ros, node, {"depth": Image})
    assert factory.made[0].calls[-1]["confidence"] is False
    _answered(ros, node, {"confidence/compressed": CompressedImage}, seed=4)
    assert factory.made[0].calls[-1]["confidence"] is True


def test_class_names_are_a_read_only_parameter_while_configured(make_node):
    node = make_node(FakeFactory())
    assert not node.has_parameter("class_names")
    node.trigger_configure()
    assert node.get_parameter("class_names").value == ["road", "car", "sky"]
    result = node.set_parameters([Parameter("class_names", value=["x", "y", "z"])])[0]
    assert not result.successful
    node.trigger_cleanup()
    assert not node.has_parameter("class_names")


def test_every_image_output_has_its_transport_forms():
    images = [name for name, (kind, _) in OUTPUTS.items() if kind is Image]
    assert sorted(images) == ["confidence", "depth", "overlay", "semantic", "semantic_color"]
    for name in images:
        suffix = "compressedDepth" if name == "depth" else "compressed"
        assert f"{name}/{suffix}" in OUTPUTS and OUTPUTS[f"{name}/{suffix}"][1] == OUTPUTS[name][1]


def test_label_info_is_latched_where_vision_msgs_exists(ros, make_node):
    vision = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not on PyPI; a ROS installation has it")
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    node = make_node(FakeFactory())
    node.trigger_configure()
    got = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = ros.node.create_subscription(vision.LabelInfo, topic(node, "semantic/label_info"), got.append, latched)
    try:
        ros.wait_for(lambda: got, 10, "the latched LabelInfo")  # subscribed after it was published
    finally:
        ros.node.destroy_subscription(sub)
    assert [(c.class_id, c.class_name) for c in got[0].class_map] == [(0, "road"), (1, "car"), (2, "sky")]
