"""The perception node as a real process with a real model, talked to over DDS from this test process.

Checks what users see end to end: camera images (raw with padding, and compressed)
give depth (32FC1 metres), semantic (mono8), semantic_color and overlay (rgb8) and
points, with the input's header and size; depth equals the Predictor's own output
scaled by the checkpoint's depth encoding; Ctrl-C and SIGTERM end the node cleanly.
The node's own logic (bad frames, parameters, /diagnostics, outputs nobody listens
to, transitions) is tested in-process with a fake predictor (test_node_inprocess.py);
every encoding's conversion by the converters' unit tests; over DDS two kinds suffice.
Each test stands alone: it makes its own subscriptions and counts only its own frames.
"""
from __future__ import annotations

import array
import signal
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")
pytest.importorskip("torch", reason="needs torch for the Predictor")

from plugin_decoders import decode, psnr  # noqa: E402
from ros_helpers import (  # noqa: E402
    Collector,
    NodeProcess,
    RosSession,
    camera_info_msg,
    image_to_array,
    make_checkpoint_variant,
    make_image_msg,
    publish_until,
    stamp_key,
    synthetic_street,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402

from mtan_ros.ros.camera.image_messages import rgb_to_compressed_msg  # noqa: E402
from mtan_ros.ros.node.pointcloud import cloud_to_array  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

# The node's checkpoint is the tiny one with its depth unit changed: metres = raw * SCALE.
SCALE = 1.0e7
HEIGHT, WIDTH = 96, 160  # not the model's 64 x 128 input: outputs must come back at this size
IMAGE_OUTPUTS = {"depth": Image, "semantic": Image, "semantic_color": Image, "overlay": Image}
NODE_ARGS = ["-p", "device:=cpu", "-p", "precision:=fp32", "-p", "warning_period:=0.0"]


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint, tmp_path_factory):
    from mtan_ros.depth_encoding import DepthEncoding

    scaled = make_checkpoint_variant(tiny_checkpoint, tmp_path_factory.mktemp("node") / "scaled.pt",
                                     depth=DepthEncoding("metric", SCALE))
    return str(tiny_checkpoint), scaled


@pytest.fixture(scope="module")
def reference(checkpoints):
    """The Predictor in this process, on the unscaled checkpoint."""
    from mtan_ros.inference import Predictor

    return Predictor.from_checkpoint(checkpoints[0], device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_node") as session:
        yield session


@pytest.fixture(scope="module")
def node(ros, checkpoints):
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={checkpoints[1]}", *NODE_ARGS]) as proc:
        proc.wait_until_state("active")
        yield proc


class CountingPublisher:
    """A publisher that counts what it sends, so that a test can account for every frame."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.sent = 0

    def publish(self, msg):
        self.sent += 1
        self.publisher.publish(msg)

    def __getattr__(self, name):
        return getattr(self.publisher, name)


@pytest.fixture(scope="module")
def publishers(ros, node):
    """The only publishers of the node's camera topics in this module (the node counts its frames from them)."""
    pub = CountingPublisher(ros.node.create_publisher(Image, node.topic("image_raw"), 10))
    info_pub = ros.node.create_publisher(CameraInfo, node.topic("camera_info"), 10)
    ros.wait_for(lambda: pub.get_subscription_count() > 0, 60, "discovery of the node")
    return pub, info_pub


@pytest.fixture
def io(ros, node, publishers):
    """This test's own subscriptions to every output (destroyed after the test)."""
    outputs = dict(IMAGE_OUTPUTS, points=PointCloud2)
    outputs["depth/camera_info"] = CameraInfo
    collector = Collector(ros, {node.topic(name): kind for name, kind in outputs.items()})
    ros.wait_for(collector.connected, 60, "the node's outputs")
    yield publishers[0], publishers[1], collector
    collector.destroy()


def topics(node, names):
    return [node.topic(name) for name in names]


def send(ros, node, io, msg, names=tuple(IMAGE_OUTPUTS), with_info=None):
    pub, info_pub, collector = io

    def publish():
        if with_info is not None:
            info_pub.publish(with_info)
        pub.publish(msg)

    publish_until(ros, publish, lambda: collector.has(msg.header.stamp, topics(node, names)), timeout=60,
                  what=f"{', '.join(names)} for stamp {stamp_key(msg.header.stamp)}")
    return {name: collector.get(node.topic(name), msg.header.stamp) for name in names}


def as_encoding(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels in `encoding`, the RGB image the node should see)."""
    codes = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
             "mono8": cv2.COLOR_RGB2GRAY}
    pixels = rgb if codes[encoding] is None else cv2.cvtColor(rgb, codes[encoding])
    seen = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if encoding == "mono8" else rgb
    return pixels, seen


def check_outputs(out, stamp, frame_id, seen_rgb, reference, max_depth=100.0, alpha=0.5):
    for name, msg in out.items():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == stamp_key(stamp), name
        assert msg.header.frame_id == frame_id, name
        assert (msg.height, msg.width) == (HEIGHT, WIDTH), name
    assert out["depth"].encoding == "32FC1" and out["semantic"].encoding == "mono8"
    assert out["semantic_color"].encoding == "rgb8" and out["overlay"].encoding == "rgb8"

    expected = reference(seen_rgb)
    depth = image_to_array(out["depth"])
    want = expected.depth * np.float32(SCALE)
    want[want > max_depth] = np.nan
    assert np.array_equal(np.isfinite(depth), np.isfinite(want))
    assert np.isfinite(depth).mean() > 0.5 and (depth[np.isfinite(depth)] > 0).all()
    np.testing.assert_allclose(depth, want, rtol=2e-3, equal_nan=True)

    labels = image_to_array(out["semantic"])
    assert labels.max() < len(reference.class_names)
    assert (labels == expected.labels).mean() > 0.99
    color = image_to_array(out["semantic_color"])
    np.testing.assert_array_equal(color, reference.class_colors[labels])
    overlay = image_to_array(out["overlay"]).astype(int)
    blend = (1 - alpha) * seen_rgb.astype(float) + alpha * color.astype(float)
    assert np.abs(overlay - blend).max() <= 1.0
    return depth, labels


@pytest.mark.parametrize("encoding,padding", [("rgb8", 0), ("bgra8", 4)])
def test_every_encoding_gives_all_outputs_in_metres(ros, node, io, reference, encoding, padding):
    rgb = synthetic_street(HEIGHT, WIDTH, seed=len(encoding) + padding)
    pixels, seen = as_encoding(rgb, encoding)
    frame_id = f"cam_{encoding}_optical_frame"
    msg = make_image_msg(pixels, encoding, stamp=ros.stamp(), frame_id=frame_id, padding=padding)
    out = send(ros, node, io, msg)
    check_outputs(out, msg.header.stamp, frame_id, seen, reference)


def test_points_and_depth_camera_info(ros, node, io, reference):
    rgb = synthetic_street(HEIGHT, WIDTH, seed=3)
    stamp = ros.stamp()
    msg = make_image_msg(rgb, "rgb8", stamp=stamp, frame_id="cam_optical_frame")
    info = camera_info_msg(WIDTH * 2, HEIGHT * 2, fx=300.0, frame_id="cam_optical_frame")  # calibrated at 2x
    out = send(ros, node, io, msg, names=("depth", "points", "depth/camera_info"), with_info=info)

    depth_info = out["depth/camera_info"]
    assert stamp_key(depth_info.header.stamp) == stamp_key(stamp)
    assert (depth_info.width, depth_info.height) == (WIDTH, HEIGHT)
    fx, cx, cy = depth_info.k[0], depth_info.k[2], depth_info.k[5]
    assert fx == pytest.approx(150.0) and cx == pytest.approx((WIDTH - 1) / 2) and cy == pytest.approx((HEIGHT - 1) / 2)

    cloud = out["points"]
    assert cloud.header.frame_id == "cam_optical_frame" and stamp_key(cloud.header.stamp) == stamp_key(stamp)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "label"]
    stride = 4  # config/perception.yaml
    depth = image_to_array(out["depth"])
    sampled = depth[::stride, ::stride]
    valid = np.isfinite(sampled)
    assert cloud.width * cloud.height == np.count_nonzero(valid) > 0
    points = cloud_to_array(cloud)
    np.testing.assert_array_equal(points["z"], sampled[valid])
    vs, us = np.nonzero(valid)
    us, vs = us * stride, vs * stride
    np.testing.assert_allclose(points["x"], (us - cx) / fx * points["z"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(points["y"], (vs - cy) / fx * points["z"], rtol=1e-4, atol=1e-6)
    colours = rgb[vs, us].astype(np.uint32)
    np.testing.assert_array_equal(points["rgb"], (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2])
    assert points["label"].max() < len(reference.class_names)


def test_a_subscriber_knowing_only_the_plugin_formats_decodes_every_compressed_output(ros, node, publishers):
    """A separate node process, read as image_transport's compressed / compressedDepth subscribers would."""
    raw = {"depth": Image, "semantic": Image, "semantic_color": Image, "overlay": Image, "confidence": Image}
    packed = {f"{name}/{'compressedDepth' if name == 'depth' else 'compressed'}": CompressedImage for name in raw}
    collector = Collector(ros, {node.topic(name): kind for name, kind in {**raw, **packed}.items()})
    try:
        ros.wait_for(collector.connected, 60, "the node's raw and compressed outputs")
        msg = make_image_msg(synthetic_street(HEIGHT, WIDTH, seed=9), "rgb8", stamp=ros.stamp(), frame_id="cam_c")
        names = [node.topic(name) for name in {**raw, **packed}]
        publish_until(ros, lambda: publishers[0].publish(msg), lambda: collector.has(msg.header.stamp, names),
                      timeout=60, what="every raw and compressed output")
        out = {name: collector.get(node.topic(name), msg.header.stamp) for name in {**raw, **packed}}
    finally:
        collector.destroy()
    for name, result in out.items():
        assert result.header.frame_id == "cam_c" and stamp_key(result.header.stamp) == stamp_key(msg.header.stamp)
    for name in ("semantic", "confidence"):
        encoding, decoded, _ = decode(out[f"{name}/compressed"].format, bytes(out[f"{name}/compressed"].data))
        assert encoding == "mono8"
        np.testing.assert_array_equal(decoded, image_to_array(out[name]))
    for name in ("semantic_color", "overlay"):
        encoding, decoded, _ = decode(out[f"{name}/compressed"].format, bytes(out[f"{name}/compressed"].data))
        image = image_to_array(out[name])
        # Random weights give pixel-sized label noise that JPEG's chroma subsampling cannot keep (about 18 dB):
        # judge against a JPEG of the raw image at the same quality, which a channel swap would fall far below.
        ok, reference = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        expected = psnr(cv2.cvtColor(cv2.imdecode(reference, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), image)
        assert encoding == "rgb8" and decoded.shape == image.shape
        assert psnr(decoded, image) >= expected - 0.5, name
    encoding, depth, (quant_a, quant_b) = decode(out["depth/compressedDepth"].format,
                                                 bytes(out["depth/compressedDepth"].data))
    raw_depth = image_to_array(out["depth"]).astype(np.float64)
    assert encoding == "32FC1" and depth.shape == raw_depth.shape == (HEIGHT, WIDTH)
    depth_max = 100.0  # config/perception.yaml: depth_max
    closest = quant_a / (65535.0 - quant_b)
    with np.errstate(invalid="ignore"):
        sendable = (raw_depth > closest * 1.0001) & (raw_depth < depth_max * 0.9999)
        unsendable = ~((raw_depth >= closest) & (raw_depth < depth_max))
    step = raw_depth[sendable] ** 2 / (quant_a - raw_depth[sendable])
    error = depth[sendable] - raw_depth[sendable]
    assert (error >= -1e-4 * raw_depth[sendable]).all() and (error <= step * 1.01 + 1e-6).all()
    assert np.isnan(depth[unsendable]).all()


def test_ctrl_c_ends_the_node_cleanly(ros, checkpoints):
    """Twice, as under ros2 launch: the terminal's SIGINT, then the one launch forwards."""
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={checkpoints[0]}", *NODE_ARGS],
                     namespace=ros.namespace + "_ctrl_c") as node:
        node.wait_until_state("active")
        node.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        code = node.stop(signal.SIGINT, timeout=30)
        output = node.output()
    assert code == 0, output
    assert "Traceback" not in output and "Exception" not in output


# ---------------------------------------------------------------- compressed input


@pytest.fixture(scope="module")
def compressed_node(ros, checkpoints):
    proc = NodeProcess(ros, ["--ros-args", "-p", f"model_path:={checkpoints[1]}", "-p", "compressed_input:=true",
                             *NODE_ARGS], namespace=ros.namespace + "_compressed")
    with proc:
        proc.wait_until_state("active")
        yield proc


def test_compressed_jpeg_and_png_and_corrupt_bytes(ros, compressed_node, reference):
    node = compressed_node
    pub = ros.node.create_publisher(CompressedImage, node.topic("image_raw/compressed"), 10)
    collector = Collector(ros, {node.topic(name): kind for name, kind in IMAGE_OUTPUTS.items()})
    ros.wait_for(lambda: pub.get_subscription_count() > 0 and collector.connected(), 60, "discovery")
    io = (pub, None, collector)
    rgb = synthetic_street(HEIGHT, WIDTH, seed=9)

    png = rgb_to_compressed_msg(rgb, "png")
    png.header.stamp, png.header.frame_id = ros.stamp(), "png_frame"
    check_outputs(send(ros, node, io, png), png.header.stamp, "png_frame", rgb, reference)

    jpeg = rgb_to_compressed_msg(rgb, "jpeg")
    jpeg.header.stamp, jpeg.header.frame_id = ros.stamp(), "jpeg_frame"
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    check_outputs(send(ros, node, io, jpeg), jpeg.header.stamp, "jpeg_frame", decoded, reference)

    data = bytes(jpeg.data)
    corrupt = [
        (data[: len(data) // 2], "truncated JPEG"),
        (bytes(200), "neither JPEG nor PNG"),
        (b"", "compressed image has no data"),
    ]
    for index, (payload, words) in enumerate(corrupt):
        bad = CompressedImage(format="jpeg", data=array.array("B", payload))
        bad.header.stamp = ros.stamp(2000.0 + index)
        publish_until(ros, lambda: pub.publish(bad), lambda: words in node.output(), timeout=30, what=words)
    assert node.alive()
    again = rgb_to_compressed_msg(rgb, "png")
    again.header.stamp, again.header.frame_id = ros.stamp(), "png_again"
    check_outputs(send(ros, node, io, again), again.header.stamp, "png_again", rgb, reference)

    code = node.stop(signal.SIGTERM, timeout=30)
    assert code == 0, node.output()
    assert "Traceback" not in node.output()
