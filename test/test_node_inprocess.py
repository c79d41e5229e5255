"""The perception node built inside the test process, with a fake predictor: its logic without DDS processes.

Why in-process: frame handling, parameters and lifecycle transitions are node logic;
a subprocess with a real model makes each such check cost seconds. Here the node gets
a FakeFactory through its `predictor_factory` argument (known depth and labels at
once, a gate to hold it busy), its own rclpy Context on a domain of its own
(ros_helpers.RosSession), and every test spins one executor until a condition.
What needs separate processes (QoS between processes, signals, launch, the real
model) stays in the test_ros_* modules.
"""
from __future__ import annotations

import array
import itertools
import threading
from typing import Any, Optional

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import (  # noqa: E402
    Collector,
    DiagnosticsWatch,
    RosSession,
    image_to_array,
    make_image_msg,
    publish_until,
    stamp_key,
    synthetic_street,
)
from sensor_msgs.msg import Image  # noqa: E402

from mtan_ros.errors import CheckpointError  # noqa: E402
from mtan_ros.inference.predictor import Prediction  # noqa: E402
from mtan_ros.ros.node.outputs import OutputPublishers  # noqa: E402
from mtan_ros.ros.node.perception_node import PerceptionNode  # noqa: E402

pytestmark = pytest.mark.timeout(60)

SUCCESS = TransitionCallbackReturn.SUCCESS
HEIGHT, WIDTH = 24, 40  # not the fake's input size: outputs must come back at the camera's size
IMAGE_OUTPUTS = ("depth", "semantic", "semantic_color", "overlay")
PALETTE = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], np.uint8)
_namespaces = itertools.count()


def expected_depth(height: int, width: int) -> np.ndarray:
    """The fake's depth in metres: 0.5 m in the first column, 0.25 m more per column."""
    return np.broadcast_to(0.5 + 0.25 * np.arange(width, dtype=np.float32), (height, width))


def expected_labels(height: int, width: int) -> np.ndarray:
    """The fake's classes: three horizontal bands, 0 at the top."""
    rows = (np.arange(height) * len(PALETTE) // height).astype(np.uint8)
    return np.broadcast_to(rows[:, None], (height, width))


def expected_confidence(height: int, width: int) -> np.ndarray:
    """The fake's confidence: 100 + 7 per column, so that a transposed or shifted image shows."""
    return np.broadcast_to((100 + 7 * np.arange(width) % 156).astype(np.uint8), (height, width))


class FakePredictor:
    """What the node uses of a Predictor, with known outputs; `gate` cleared holds it busy in a call."""

    input_size = (8, 12)
    class_names = ["road", "car", "sky"]
    class_colors = PALETTE
    device = "fake"
    precision = "fp32"

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        self.path = path
        self.options = options
        self.calls: list[dict[str, Any]] = []  # the warm-up inference of configure is the first
        self.busy = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.closed = False

    def __call__(self, image: np.ndarray, *, output_size: Optional[tuple[int, int]] = None,
                 max_depth: Optional[float] = None, out: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 confidence: bool = False) -> Prediction:
        self.calls.append({"image": image.copy(), "output_size": output_size, "max_depth": max_depth,
                           "confidence": confidence})
        self.busy.set()
        assert self.gate.wait(10.0), "the test never released the fake predictor"
        size = output_size or image.shape[:2]
        labels, depth = out if out is not None else (np.empty(size, np.uint8), np.empty(size, np.float32))
        labels[:] = expected_labels(*labels.shape)
        depth[:] = expected_depth(*depth.shape)
        return Prediction(labels, depth, expected_confidence(*labels.shape).copy() if confidence else None)

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """A PredictorFactory: a new FakePredictor per configure, or `error` raised as a checkpoint would."""

    def __init__(self, error: Optional[Exception] = None) -> None:
        self.error = error
        self.made: list[FakePredictor] = []

    def __call__(self, path: str, *, device: str, precision: str, compile: bool, backend: str,
                 threads: int) -> FakePredictor:
        if self.error is not None:
            raise self.error
        predictor = FakePredictor(path, {"device": device, "precision": precision, "compile": compile,
                                         "backend": backend, "threads": threads})
        self.made.append(predictor)
        return predictor


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_node_inprocess") as session:
        yield session


@pytest.fixture
def make_node(ros):
    """make_node(factory, **parameters): a PerceptionNode in a namespace of its own, spun by ros.executor."""
    nodes = []

    def make(factory: FakeFactory, **parameters: Any) -> PerceptionNode:
        values = {"model_path": "/models/fake.pt", "input_reliability": "reliable", "diagnostics_period": 0.1,
                  "warning_period": 0.0, **parameters}
        node = PerceptionNode(factory, context=ros.context, namespace=f"{ros.namespace}/n{next(_namespaces)}",
                              parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        ros.executor.add_node(node)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        ros.executor.remove_node(node)
        node.close()


def topic(node: PerceptionNode, name: str) -> str:
    return f"{node.get_namespace()}/{name}"


def depth_msg(seconds: int) -> Image:
    """A tiny depth image stamped `seconds`, to tell messages apart."""
    return make_image_msg(np.zeros((2, 2), np.float32), "32FC1", stamp=Time(sec=seconds))


class Camera:
    """This test's camera publisher and its subscriptions to the node's outputs."""

    def __init__(self, ros: RosSession, node: PerceptionNode, outputs: tuple[str, ...] = IMAGE_OUTPUTS) -> None:
        self.ros, self.node = ros, node
        self.pub = ros.node.create_publisher(Image, topic(node, "image_raw"), 10)
        self.collector = Collector(ros, {topic(node, name): Image for name in outputs})
        self.seq = itertools.count(1)

    def connected(self) -> None:
        self.ros.wait_for(lambda: self.pub.get_subscription_count() > 0 and self.collector.connected(), 10,
                          "the node's camera subscription and outputs")

    def frame(self, rgb: Optional[np.ndarray] = None, frame_id: str = "cam_optical_frame") -> Any:
        rgb = synthetic_street(HEIGHT, WIDTH, seed=1) if rgb is None else rgb
        return make_image_msg(rgb, "rgb8", stamp=self.ros.stamp(1000.0 + next(self.seq)), frame_id=frame_id)

    def answered(self, msg: Any, names: tuple[str, ...] = ("depth",)) -> dict[str, Any]:
        """Publish `msg` until `names` arrive for it (again each second: an output may not be matched yet)."""
        publish_until(self.ros, lambda: self.pub.publish(msg),
                      lambda: self.collector.has(msg.header.stamp, [topic(self.node, n) for n in names]),
                      timeout=10, resend_every=1.0, what=f"{', '.join(names)} for {stamp_key(msg.header.stamp)}")
        return {name: self.collector.get(topic(self.node, name), msg.header.stamp) for name in names}

    def got(self, msg: Any, name: str) -> bool:
        return self.collector.has(msg.header.stamp, [topic(self.node, name)])

    def destroy(self) -> None:
        self.collector.destroy()
        self.ros.node.destroy_publisher(self.pub)


@pytest.fixture
def camera(ros):
    """camera(node, outputs=...): a Camera destroyed after the test."""
    made = []

    def make(node: PerceptionNode, outputs: tuple[str, ...] = IMAGE_OUTPUTS) -> Camera:
        made.append(Camera(ros, node, outputs))
        return made[-1]

    yield make
    for cam in made:
        cam.destroy()


def active_node(make_node, factory: FakeFactory, **parameters: Any) -> PerceptionNode:
    node = make_node(factory, **parameters)
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    return node


# ---------------------------------------------------------------- frames


def test_outputs_carry_the_predictors_metres_and_labels_with_the_input_header_and_size(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    cam = camera(node)
    cam.connected()
    rgb = synthetic_street(HEIGHT, WIDTH, seed=4)
    msg = cam.frame(rgb, frame_id="left_optical_frame")
    out = cam.answered(msg, IMAGE_OUTPUTS)

    for name, result in out.items():
        assert stamp_key(result.header.stamp) == stamp_key(msg.header.stamp), name
        assert result.header.frame_id == "left_optical_frame", name
        assert (result.height, result.width) == (HEIGHT, WIDTH), name
    assert out["depth"].encoding == "32FC1" and out["semantic"].encoding == "mono8"
    np.testing.assert_array_equal(image_to_array(out["depth"]), expected_depth(HEIGHT, WIDTH))
    labels = image_to_array(out["semantic"])
    np.testing.assert_array_equal(labels, expected_labels(HEIGHT, WIDTH))
    np.testing.assert_array_equal(image_to_array(out["semantic_color"]), PALETTE[labels])
    (predictor,) = factory.made
    np.testing.assert_array_equal(predictor.calls[-1]["image"], rgb)
    assert predictor.calls[-1]["output_size"] == (HEIGHT, WIDTH)


def test_the_newest_frame_wins_while_the_predictor_is_busy(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    (predictor,) = factory.made
    cam = camera(node, ("depth",))
    cam.connected()
    cam.answered(cam.frame())  # both directions matched: every frame from here on is answered or dropped
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name())
    counters = ("frames_received", "frames_processed", "frames_dropped")
    try:
        # Settled: every frame so far answered (the one above may have been sent more than once).
        settled = watch.wait(lambda v: int(v["frames_received"]) == int(v["frames_processed"]), 10, "settling")
        base = {key: int(settled[key]) for key in counters}
        predictor.gate.clear()
        predictor.busy.clear()
        first = cam.frame(synthetic_street(HEIGHT, WIDTH, seed=10))
        cam.pub.publish(first)
        ros.wait_for(predictor.busy.is_set, 10, "the predictor to take the first frame")
        waiting = [cam.frame(synthetic_street(HEIGHT, WIDTH, seed=11 + i)) for i in range(3)]
        for n, msg in enumerate(waiting, start=2):
            cam.pub.publish(msg)
            watch.wait(lambda v, n=n: int(v["frames_received"]) == base["frames_received"] + n, 10, f"frame {n}")
        predictor.gate.set()
        ros.wait_for(lambda: cam.got(waiting[-1], "depth"), 10, "the newest frame's depth")
        values = watch.wait(lambda v: int(v["frames_processed"]) >= base["frames_processed"] + 2, 10, "the counts")
    finally:
        predictor.gate.set()
        watch.destroy()
    assert cam.got(first, "depth")
    assert not cam.got(waiting[0], "depth") and not cam.got(waiting[1], "depth")
    np.testing.assert_array_equal(predictor.calls[-1]["image"], synthetic_street(HEIGHT, WIDTH, seed=13))
    assert {key: int(values[key]) - base[key] for key in counters} == {
        "frames_received": 4, "frames_processed": 2, "frames_dropped": 2}


def bad_frames(cam: Camera) -> list[tuple[Any, str]]:
    """(frame, words of its rejection): each a different way a camera message can be unusable."""
    short = cam.frame()
    short.data = short.data[:-10]
    narrow = cam.frame()
    narrow.step = WIDTH
    cases = [
        (Image(height=4, width=4, encoding="weird8", step=16, data=array.array("B", bytes(64))),
         "unknown image encoding 'weird8'"),
        (make_image_msg(np.zeros((4, 4), np.uint16), "mono16"), "'mono16' is a 16-bit image"),
        (short, "the message is truncated"),
        (narrow, f"step {WIDTH} is smaller"),
        (Image(height=0, width=0, encoding="rgb8", step=0), "zero-sized image (0x0)"),
        (Image(height=20000, width=20000, encoding="rgb8", step=60000, data=array.array("B", bytes(1000))),
         "20000x20000 = 400 Mpx"),
        (cam.frame(synthetic_street(HEIGHT // 2, WIDTH // 2)),  # lock_input_size: not the first frame's size
         f"declares {WIDTH // 2}x{HEIGHT // 2} but this topic delivers {WIDTH}x{HEIGHT}"),
    ]
    for msg, _ in cases:
        msg.header.stamp = cam.frame().header.stamp
    return cases


def test_each_bad_frame_is_counted_and_the_next_good_one_answered(ros, make_node, camera, capfd):
    node = active_node(make_node, FakeFactory(), lock_input_size=True)
    cam = camera(node, ("depth",))
    cam.connected()
    cam.answered(cam.frame())  # locks the size at HEIGHT x WIDTH
    cases = bad_frames(cam)
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name())
    try:
        for count, (bad, words) in enumerate(cases, start=1):
            cam.pub.publish(bad)
            values = watch.wait(lambda v, count=count: int(v["frames_rejected"]) == count, 10, words)
            assert words in values["last_problem"] and topic(node, "image_raw") in values["last_problem"]
        good = cam.frame(synthetic_street(HEIGHT, WIDTH, seed=7))
        out = cam.answered(good)
    finally:
        watch.destroy()
    np.testing.assert_array_equal(image_to_array(out["depth"]), expected_depth(HEIGHT, WIDTH))
    assert not any(cam.got(bad, "depth") for bad, _ in cases)
    assert "Traceback" not in capfd.readouterr().err


def test_nothing_is_computed_for_outputs_nobody_subscribes_to(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory, publish_semantic=False)
    (predictor,) = factory.made
    unwanted = camera(node, ("semantic",))  # listened to, but switched off
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name())
    try:
        unwanted.connected()
        unwanted.pub.publish(unwanted.frame())
        values = watch.wait(lambda v: int(v["frames_skipped_no_subscriber"]) == 1, 10, "a skipped frame")
        assert int(values["frames_processed"]) == 0
        assert len(predictor.calls) == 1  # the warm-up of configure only
    finally:
        watch.destroy()
    cam = camera(node, ("depth",))
    cam.connected()
    cam.answered(cam.frame())
    assert len(predictor.calls) >= 2


def test_diagnostics_report_the_pipeline(ros, make_node, camera):
    node = active_node(make_node, FakeFactory())
    cam = camera(node, ("depth",))
    cam.connected()
    msg = cam.frame()
    msg.header.stamp = ros.stamp()  # now, on the node's clock: a measurable latency
    cam.answered(msg)
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name())
    try:
        values = watch.wait(lambda v: int(v["frames_processed"]) >= 1, 10, "a processed frame")
    finally:
        watch.destroy()
    received, processed = int(values["frames_received"]), int(values["frames_processed"])
    assert received == processed + int(values["frames_dropped"]) and values["frames_rejected"] == "0"
    assert values["lifecycle_state"] == "active" and values["frames_lost_in_transport"] == "0"
    assert values["device"] == "fake" and values["precision"] == "fp32" and watch.status.hardware_id == "fake"
    assert values["model_path"] == "/models/fake.pt" and values["input_topic"] == topic(node, "image_raw")
    assert values["input_reliability"] == "reliable" and values["camera_info_received"] == "false"
    assert 0 < float(values["inference_ms_p50"]) <= float(values["inference_ms_p95"])
    assert float(values["latency_ms_p50"]) > 0 and float(values["processing_ms_p50"]) > 0
    assert watch.status.level == DiagnosticStatus.OK and "Hz out of" in watch.status.message


# ---------------------------------------------------------------- parameters


def test_a_runtime_parameter_applies_to_the_next_frame(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    cam = camera(node, ("depth", "semantic", "overlay"))
    cam.connected()
    results = node.set_parameters([Parameter("overlay_alpha", value=0.0), Parameter("max_depth", value=2.0),
                                   Parameter("publish_semantic", value=False)])
    assert all(r.successful for r in results), [r.reason for r in results]
    rgb = synthetic_street(HEIGHT, WIDTH, seed=8)
    first = cam.frame(rgb)
    out = cam.answered(first, ("depth", "overlay"))
    np.testing.assert_array_equal(image_to_array(out["overlay"]), rgb)  # alpha 0: the camera image alone
    assert factory.made[0].calls[-1]["max_depth"] == 2.0

    (back,) = node.set_parameters([Parameter("publish_semantic", value=True)])
    assert back.successful
    second = cam.frame(rgb)
    cam.answered(second, ("semantic",))
    assert not cam.got(first, "semantic")  # outputs arrive in order: had it been published, it would be here


def test_values_out_of_range_or_of_the_wrong_type_are_refused_and_change_nothing(make_node):
    node = active_node(make_node, FakeFactory())
    (too_large,) = node.set_parameters([Parameter("overlay_alpha", value=1.5)])
    assert not too_large.successful and "overlay_alpha" in too_large.reason
    (wrong_type,) = node.set_parameters([Parameter("points_stride", value="two")])
    assert not wrong_type.successful and "type" in wrong_type.reason  # rclpy's own check, before the node's
    assert node.get_parameter("overlay_alpha").value == 0.5 and node.get_parameter("points_stride").value == 4


def test_a_configure_parameter_waits_for_cleanup_and_the_next_configure_uses_it(make_node):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    (refused,) = node.set_parameters([Parameter("model_path", value="/models/other.pt")])
    assert not refused.successful and "cleanup" in refused.reason
    assert node.trigger_deactivate() == SUCCESS
    (still,) = node.set_parameters([Parameter("compressed_input", value=True)])
    assert not still.successful and "configured" in still.reason
    assert node.trigger_cleanup() == SUCCESS
    results = node.set_parameters([Parameter("model_path", value="/models/other.pt"),
                                   Parameter("inference_threads", value=3)])
    assert all(r.successful for r in results), [r.reason for r in results]
    assert node.trigger_configure() == SUCCESS
    assert [p.path for p in factory.made] == ["/models/fake.pt", "/models/other.pt"]
    assert factory.made[1].options["threads"] == 3


# ---------------------------------------------------------------- lifecycle


def test_deactivate_stops_the_outputs_and_activate_resumes_them(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    cam = camera(node, ("depth",))
    cam.connected()
    cam.answered(cam.frame())
    calls = len(factory.made[0].calls)

    assert node.trigger_deactivate() == SUCCESS
    assert node.lifecycle_state == "inactive"
    ros.wait_for(lambda: cam.pub.get_subscription_count() == 0, 10, "the camera subscription to go away")
    assert cam.collector.connected()  # the outputs stay advertised while inactive
    ignored = cam.frame()
    cam.pub.publish(ignored)  # nobody takes it: the camera subscription is gone
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name())
    try:
        values = watch.wait(lambda v: v["lifecycle_state"] == "inactive", 10, "an inactive report")
    finally:
        watch.destroy()
    assert watch.status.message == "inactive: not taking frames"
    assert len(factory.made[0].calls) == calls and not factory.made[0].closed
    assert values["input_topic"] == ""

    assert node.trigger_activate() == SUCCESS
    assert node.lifecycle_state == "active"
    cam.connected()
    resumed = cam.frame()
    cam.answered(resumed)
    assert not cam.got(ignored, "depth")
    assert len(factory.made) == 1  # the model stayed loaded


def test_cleanup_releases_the_predictor_and_configure_loads_a_new_one(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory)
    cam = camera(node, ("depth",))
    cam.connected()
    assert node.trigger_deactivate() == SUCCESS
    assert node.trigger_cleanup() == SUCCESS
    assert node.lifecycle_state == "unconfigured"
    assert factory.made[0].closed and node.predictor is None
    ros.wait_for(lambda: not cam.collector.connected(), 10, "the outputs to go away with the model")

    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert len(factory.made) == 2 and not factory.made[1].closed
    cam.connected()
    out = cam.answered(cam.frame())
    np.testing.assert_array_equal(image_to_array(out["depth"]), expected_depth(HEIGHT, WIDTH))
    assert len(factory.made[1].calls) >= 2


def test_start_activates_and_shutdown_finalizes(make_node):
    factory = FakeFactory()
    node = make_node(factory)
    assert node.start()
    assert node.lifecycle_state == "active"
    assert node.trigger_shutdown() == SUCCESS
    assert node.lifecycle_state == "finalized"
    assert factory.made[0].closed and node.predictor is None


def test_output_publishers_publish_only_while_their_node_is_active(ros):
    """The outputs are lifecycle publishers: the base class's transitions switch them."""
    node = LifecycleNode("outputs_owner", context=ros.context, namespace=f"{ros.namespace}/n{next(_namespaces)}")
    ros.executor.add_node(node)
    collector = Collector(ros, {topic(node, "depth"): Image})
    try:
        assert node.trigger_configure() == SUCCESS
        outputs = OutputPublishers(node)
        ros.wait_for(collector.connected, 10, "the depth output")
        depth = outputs.publishers["depth"]
        assert not depth.is_activated
        inactive = depth_msg(1)
        outputs.publish("depth", inactive)
        assert node.trigger_activate() == SUCCESS and depth.is_activated
        active = depth_msg(2)
        outputs.publish("depth", active)
        ros.wait_for(lambda: collector.has(active.header.stamp), 10, "the message published while active")
        assert not collector.has(inactive.header.stamp)  # delivered in order: it was never sent
        assert node.trigger_deactivate() == SUCCESS and not depth.is_activated
        outputs.destroy()
        ros.wait_for(lambda: not collector.connected(), 10, "the output to go away")
    finally:
        collector.destroy()
        ros.executor.remove_node(node)
        node.destroy_node()


@pytest.mark.parametrize("error,words", [
    (CheckpointError("/models/fake.pt: file not found"), "cannot load model_path '/models/fake.pt'"),
    (ValueError("unknown device 'tpu'"), "cannot start the model from '/models/fake.pt' on device="),
], ids=["checkpoint", "device"])
def test_a_refused_model_leaves_the_node_unconfigured_and_reporting(ros, make_node, capfd, error, words):
    node = make_node(FakeFactory(error))
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name())
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state == "unconfigured" and node.predictor is None
        values = watch.wait(lambda v: True, 10, "diagnostics while unconfigured")
    finally:
        watch.destroy()
    assert values["lifecycle_state"] == "unconfigured" and values["device"] == "none"
    errors = [line for line in capfd.readouterr().err.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and words in errors[0] and str(error) in errors[0]
    assert ros.node.count_publishers(topic(node, "depth")) == 0


def test_an_empty_model_path_is_refused_without_calling_the_factory(make_node, capfd):
    factory = FakeFactory()
    node = make_node(factory, model_path="")
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.lifecycle_state == "unconfigured" and factory.made == []
    assert "parameter model_path is empty" in capfd.readouterr().err
