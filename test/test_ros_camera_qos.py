"""Real cameras: a driver with ROS 2 defaults and no Fast DDS profile, started after or before the node.

Each camera is `mtan_ros.ros.replay.synthetic_camera` in its own process, publishing the way
drivers do (rclpy's default QoS: reliable keep-last 10; or the sensor-data profile:
best effort) with whatever Fast DDS configuration its environment has — none here,
unless a test gives it the package's profile. The test process receives the outputs
with a default participant (no profile), as RViz or `ros2 bag record` would. Counts,
never timings: frame i carries stamp base + i / rate, so the answered frames are known
exactly.
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")
pytest.importorskip("torch", reason="needs torch for the Predictor")

from ros_helpers import DiagnosticsWatch, NodeProcess, RosSession, stamp_key  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtan_ros.benchmarks.cameras import CameraCounts, sent_stamps  # noqa: E402
from mtan_ros.ros.camera.qos import image_output_qos_for_subscribers  # noqa: E402
from mtan_ros.ros.camera.transport import profile_path  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

RATE = 10.0
FRAMES = 80  # 8 s: Fast DDS may take ~3.5 s to discover a new camera process
# As a user who configured nothing: no Fast DDS variable at all (None removes it from the environment).
NO_PROFILE = {"FASTDDS_DEFAULT_PROFILES_FILE": None, "FASTDDS_BUILTIN_TRANSPORTS": None}
NODE_ARGS = ["-p", "device:=cpu", "-p", "precision:=fp32", "-p", "no_input_warning_after:=2.0",
             "-p", "publish_overlay:=false", "-p", "publish_semantic_color:=false"]


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_camera_qos") as session:
        yield session


@pytest.fixture
def node(ros, tiny_checkpoint):
    """A node of each test's own: what one camera leaves behind (the reliability it chose, the warnings it
    gave) must not decide another test, whatever their order."""
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={tiny_checkpoint}", *NODE_ARGS],
                     extra_env=NO_PROFILE) as proc:
        proc.wait_until_state("active")
        yield proc


class Answers:
    """Stamps of the depth images the node published, as a default subscriber (RViz-like) sees them."""

    def __init__(self, ros, node):
        self.stamps = set()
        self.sizes = set()
        self.sub = ros.node.create_subscription(Image, node.topic("depth"), self._on_depth,
                                                image_output_qos_for_subscribers())
        ros.wait_for(lambda: self.sub.get_publisher_count() > 0, 60, "the node's depth publisher")

    def _on_depth(self, msg):
        self.stamps.add(stamp_key(msg.header.stamp))
        self.sizes.add((msg.height, msg.width))


def camera(ros, node, width, height, *, reliability="reliable", frames=FRAMES, base=1000.0, profile=False):
    """A camera process, started once the previous test's camera has left the graph.

    The node follows the cameras it sees: a best-effort camera still listed would (rightly)
    keep it reading best effort, and each test must see only its own camera.
    """
    ros.wait_for(lambda: ros.node.count_publishers(node.topic("image_raw")) == 0, 60,
                 "earlier cameras to leave the graph")
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path())} if profile else NO_PROFILE
    args = ["--ros-args", "-p", f"width:={width}", "-p", f"height:={height}", "-p", f"rate:={RATE}",
            "-p", f"frames:={frames}", "-p", f"reliability:={reliability}", "-p", f"stamp_base:={base}"]
    return NodeProcess(ros, args, module="mtan_ros.ros.replay.synthetic_camera", namespace=node.namespace,
                       extra_env=env)


def run_camera_and_count(ros, node, answers, watch, width, height, base, **options):
    before = dict(watch.wait(lambda v: True))
    with camera(ros, node, width, height, base=base, **options) as cam:
        ros.wait_for(lambda: not cam.alive(), 120, "the camera to finish")
        assert cam.wait_exit() == 0, cam.output()
    ros.spin_for(2.5)  # the last answers, and /diagnostics (1 Hz) counting them
    counts = CameraCounts.of(sent_stamps(base, FRAMES, RATE), answers.stamps, before, dict(watch.values))
    print(f"\n{width}x{height} {options}: {counts}")
    return counts


def assert_served(counts):
    """Frames reach the node once it matched the camera, and everything it processed reaches us."""
    assert counts.first_answered is not None and counts.after_match >= 30, f"matched too late: {counts}"
    assert counts.received >= 0.8 * counts.after_match, f"frames lost between camera and node: {counts}"
    assert counts.answered >= 0.95 * counts.processed > 0, f"outputs lost between node and subscriber: {counts}"
    # When the node had time (nothing dropped as stale), nearly every frame after the match is answered.
    if counts.dropped == 0:
        assert counts.answered >= 0.8 * counts.after_match, str(counts)


@pytest.fixture
def answers(ros, node):
    answers = Answers(ros, node)
    yield answers
    ros.node.destroy_subscription(answers.sub)


@pytest.fixture
def watch(ros, node):
    watch = DiagnosticsWatch(ros, node.fqn)
    yield watch
    ros.node.destroy_subscription(watch.sub)


@pytest.mark.parametrize("width,height,base", [(640, 480, 1000.0), (1280, 720, 2000.0)])
def test_default_camera_without_profile_started_after_the_node(ros, node, answers, watch, width, height, base):
    assert_served(run_camera_and_count(ros, node, answers, watch, width, height, base))
    assert (height, width) in answers.sizes


def test_best_effort_camera_started_after_a_reliable_one_is_matched_and_answered(ros, node, answers, watch):
    """The subscription is reliable for a first camera; a sensor-data camera after it must still be matched."""
    with camera(ros, node, 320, 240, frames=20, base=2500.0) as first:
        ros.wait_for(lambda: not first.alive(), 120, "the reliable camera to finish")
    assert_served(run_camera_and_count(ros, node, answers, watch, 320, 240, 3000.0, reliability="best_effort"))


def test_large_best_effort_camera_without_profile_gets_the_warning_with_its_fix(ros, node, watch):
    """1920x1080 best effort without a profile: few or no frames survive, and the node says why."""
    with camera(ros, node, 1920, 1080, reliability="best_effort", frames=0, base=4000.0):
        values = watch.wait(lambda v: "FASTDDS_DEFAULT_PROFILES_FILE" in watch.status.message, 60,
                            "the warning about the best-effort camera")
        assert watch.status.level == watch.status.WARN
        assert "best effort" in watch.status.message and "reliable" in watch.status.message
        assert int(values["frames_lost_in_transport"]) > 0 or "no complete frame" in watch.status.message
    # /diagnostics and the log line come from different callbacks: wait for the line, then count it.
    output = node.wait_for_output("FASTDDS_DEFAULT_PROFILES_FILE", timeout=30)
    warnings = [line for line in output.splitlines() if "FASTDDS_DEFAULT_PROFILES_FILE" in line]
    assert len(warnings) == 1, output  # once, not per check


def test_best_effort_camera_with_the_package_profile_at_2048x1024(ros, node, answers, watch):
    assert_served(run_camera_and_count(ros, node, answers, watch, 2048, 1024, 5000.0, reliability="best_effort",
                                       profile=True))
    assert (1024, 2048) in answers.sizes


def test_camera_started_before_the_node(ros, tiny_checkpoint):
    """A default camera already streaming when the node starts (its reader is created after the writer)."""
    namespace, base = ros.namespace + "_before", 7000.0
    with NodeProcess(ros, ["--ros-args", "-p", f"stamp_base:={base}"], module="mtan_ros.ros.replay.synthetic_camera",
                     namespace=namespace, extra_env=NO_PROFILE) as cam:
        late = NodeProcess(ros, ["--ros-args", "-p", f"model_path:={tiny_checkpoint}", *NODE_ARGS],
                           namespace=namespace, extra_env=NO_PROFILE)
        with late:
            late.wait_until_state("active")
            answers = Answers(ros, late)
            index = {key: i for i, key in enumerate(sent_stamps(base, 100_000, RATE))}
            ros.wait_for(lambda: answers.stamps, 60, "a first answer")
            first = min(index[key] for key in answers.stamps)
            ros.wait_for(lambda: max(index[key] for key in answers.stamps) >= first + FRAMES, 120,
                         f"answers to {FRAMES} more frames")
            assert cam.alive()
            window = range(first, first + FRAMES + 1)
            answered = sum(1 for key in answers.stamps if index[key] in window)
            assert answered >= 0.8 * len(window), (answered, late.output())


def test_pinned_reliable_reader_says_why_a_best_effort_camera_is_not_matched(ros, node, watch):
    from ros_helpers import set_parameters

    (result,) = set_parameters(ros, node.fqn, {"input_reliability": "reliable"})
    assert result.successful, result.reason
    try:
        with camera(ros, node, 320, 240, reliability="best_effort", frames=0, base=6000.0):
            watch.wait(lambda v: "did not match" in watch.status.message, 60, "the incompatible-QoS warning")
            assert "input_reliability" in watch.status.message and watch.status.level == watch.status.WARN
    finally:
        (result,) = set_parameters(ros, node.fqn, {"input_reliability": "auto"})
        assert result.successful


def test_subscriber_an_output_cannot_match_is_named_in_the_log(ros, node):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = ros.node.create_subscription(Image, node.topic("semantic"), lambda msg: None, latched)
    try:
        out = node.wait_for_output("asks for a durability policy", 60)
        line = next(text for text in out.splitlines() if "asks for a durability policy" in text)
        assert node.topic("semantic") in line and "volatile durability" in line
    finally:
        ros.node.destroy_subscription(sub)


def test_frames_published_past_the_node_count_as_lost_by_their_sequence_numbers(ros):
    """The middleware's own sequence numbers reach the monitor: frames a reliable camera published while no
    subscription of ours was matched (as when its writer overwrote them) are counted lost once the next one
    arrives, although nothing was reported lost."""
    import numpy as np
    from ros_helpers import make_image_msg

    from mtan_ros.ros.camera.camera_input import CameraSubscription
    from mtan_ros.pipeline.input_monitor import InputMonitor

    topic = f"{ros.namespace}/sequence_cam/image_raw"
    monitor = InputMonitor(topic, warn_after_s=2.0)
    received = []
    camera_pub = ros.node.create_publisher(Image, topic, 10)

    def subscribed():
        sub = CameraSubscription(ros.node, Image, topic, received.append, requested=lambda: "reliable",
                                 monitor=monitor)
        ros.wait_for(lambda: sub.matched and camera_pub.get_subscription_count() == 1, 30, "the subscription")
        return sub

    def publish(i):
        camera_pub.publish(make_image_msg(np.full((4, 6, 3), i, np.uint8), "rgb8", stamp=ros.stamp(1000.0 + i)))

    try:
        sub = subscribed()
        for i in (0, 1):
            publish(i)
            ros.wait_for(lambda: len(received) == i + 1, 10, f"frame {i}")
        sub.destroy()
        ros.wait_for(lambda: camera_pub.get_subscription_count() == 0, 30, "the subscription to go")
        for i in (2, 3, 4):
            publish(i)
        sub = subscribed()
        publish(5)
        ros.wait_for(lambda: len(received) == 3, 10, "frame 5")
        sub.destroy()
    finally:
        ros.node.destroy_publisher(camera_pub)
    assert [msg.data[0] for msg in received] == [0, 1, 5]
    assert (monitor.frames, monitor.reported_lost, monitor.skipped_in_sequence, monitor.lost) == (3, 0, 3, 3)


def test_profile_is_not_forced_when_the_user_configured_fast_dds():
    from mtan_ros.ros.camera.transport import large_image_env

    assert large_image_env({"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}) == {}
    assert os.path.isfile(large_image_env({})["FASTDDS_DEFAULT_PROFILES_FILE"])
