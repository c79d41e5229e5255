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
    """What the node uses of a Predictor, with known outputs; `gate` cleared holds it busy in a call.

    `calls` has one entry per image (the warm-up of configure first), `batches` the
    images of each predict_batch call.
    """

    input_size = (8, 12)
    class_names = ["road", "car", "sky"]
    class_colors = PALETTE
    device = "fake"
    precision = "fp32"

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        self.path = path
        self.options = options
        self.calls: list[dict[str, Any]] = []
        self.batches: list[list[np.ndarray]] = []
        self.busy = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.closed = False
        self.plans: list[tuple[int, str]] = []
        self.batch_plan = "one_pass: fake"

    def plan_batches(self, batch_size: int, mode: str = "auto") -> str:
        if mode not in ("auto", "one_pass", "parallel"):
            raise ValueError(f"batch_mode {mode!r} is not one of auto, one_pass, parallel")
        self.plans.append((batch_size, mode))
        self.batch_plan = f"{'one_pass' if mode == 'auto' else mode}: fake"
        return self.batch_plan

    def __call__(self, image: np.ndarray, *, output_size: Optional[tuple[int, int]] = None,
                 max_depth: Optional[float] = None, out: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 confidence: bool = False) -> Prediction:
        return self.predict_batch([image], output_size=output_size, max_depth=max_depth, confidence=confidence,
                                  out=[out])[0]

    def predict_batch(self, images: list[np.ndarray], *, output_size: Optional[tuple[int, int]] = None,
                      max_depth: Optional[float] = None, confidence: bool = False,
                      out: Optional[list[Optional[tuple[np.ndarray, np.ndarray]]]] = None) -> list[Prediction]:
        outs = out if out is not None else [None] * len(images)
        results = []
        for image, pair in zip(images, outs):
            size = tuple(output_size or image.shape[:2])
            labels, depth = pair if pair is not None else (np.empty(size, np.uint8), np.empty(size, np.float32))
            assert labels.shape == depth.shape == size, (labels.shape, size)
            self.calls.append({"image": image.copy(), "output_size": size, "max_depth": max_depth,
                               "confidence": confidence})
            results.append((labels, depth))
        self.batches.append([image.copy() for image in images])
        self.busy.set()
        assert self.gate.wait(10.0), "the test never released the fake predictor"
        for labels, depth in results:
            labels[:] = expected_labels(*labels.shape)
            depth[:] = expected_depth(*depth.shape)
        return [Prediction(labels, depth, expected_confidence(*labels.shape).copy() if confidence else None)
                for labels, depth in results]

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
    """This test's camera publisher and its subscriptions to the node's outputs (of camera `name` of `cameras`)."""

    def __init__(self, ros: RosSession, node: PerceptionNode, outputs: tuple[str, ...] = IMAGE_OUTPUTS,
                 name: str = "", size: tuple[int, int] = (HEIGHT, WIDTH), stamps_from: float = 1000.0) -> None:
        self.ros, self.node = ros, node
        self.prefix = f"{name}/" if name else ""
        self.size = size
        self.pub = ros.node.create_publisher(Image, self.topic("image_raw"), 10)
        self.collector = Collector(ros, {self.topic(output): Image for output in outputs})
        self.seq = itertools.count(1)
        self.stamps_from = stamps_from

    def topic(self, name: str) -> str:
        return topic(self.node, self.prefix + name)

    def connected(self) -> None:
        self.ros.wait_for(lambda: self.pub.get_subscription_count() > 0 and self.collector.connected(), 10,
                          "the node's camera subscription and outputs")

    def frame(self, rgb: Optional[np.ndarray] = None, frame_id: str = "cam_optical_frame") -> Any:
        rgb = synthetic_street(*self.size, seed=1) if rgb is None else rgb
        return make_image_msg(rgb, "rgb8", stamp=self.ros.stamp(self.stamps_from + next(self.seq)),
                              frame_id=frame_id)

    def answered(self, msg: Any, names: tuple[str, ...] = ("depth",)) -> dict[str, Any]:
        """Publish `msg` until `names` arrive for it (again each second: an output may not be matched yet)."""
        publish_until(self.ros, lambda: self.pub.publish(msg),
                      lambda: self.collector.has(msg.header.stamp, [self.topic(n) for n in names]),
                      timeout=10, resend_every=1.0, what=f"{', '.join(names)} for {stamp_key(msg.header.stamp)}")
        return {name: self.collector.get(self.topic(name), msg.header.stamp) for name in names}

    def got(self, msg: Any, name: str) -> bool:
        return self.collector.has(msg.header.stamp, [self.topic(name)])

    def destroy(self) -> None:
        self.collector.destroy()
        self.ros.node.destroy_publisher(self.pub)


@pytest.fixture
def camera(ros):
    """camera(node, outputs=...): a Camera destroyed after the test."""
    made = []

    def make(node: PerceptionNode, outputs: tuple[str, ...] = IMAGE_OUTPUTS, **options: Any) -> Camera:
        made.append(Camera(ros, node, outputs, **options))
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


# ---------------------------------------------------------------- several cameras

# name -> ((height, width), frame_id): three sizes, none the fake's input size
THREE = {"front": ((24, 40), "front_optical"), "rear": ((30, 20), "rear_optical"),
         "side": ((16, 48), "side_optical")}


def received(node: PerceptionNode, name: str) -> int:
    (state,) = [c for c in node.cameras if c.name == name]
    return state.stats.snapshot().frames_received


def settled(node: PerceptionNode) -> bool:
    """Every frame received so far answered, dropped, rejected or skipped: nothing in flight."""
    snaps = [c.stats.snapshot() for c in node.cameras]
    return all(s.frames_received == s.frames_processed + s.frames_dropped + s.frames_rejected
               + s.frames_skipped_idle for s in snaps)


def several(make_node, camera, factory: FakeFactory, cameras: dict, outputs=("depth",), **parameters: Any):
    node = active_node(make_node, factory, cameras=list(cameras), **parameters)
    cams = {name: camera(node, outputs, name=name, size=size, stamps_from=1000.0 * (index + 1))
            for index, (name, (size, _)) in enumerate(cameras.items())}
    for cam in cams.values():
        cam.connected()
    return node, cams


class StatusNames:
    """Names of the /diagnostics statuses of one node, from its latest message."""

    def __init__(self, ros: RosSession, node: PerceptionNode) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.ros, self.prefix, self.names = ros, node.get_fully_qualified_name() + ":", None
        self.sub = ros.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg: Any) -> None:
        names = sorted(s.name for s in msg.status if s.name.startswith(self.prefix))
        if names:
            self.names = names

    def wait(self) -> list[str]:
        try:
            return self.ros.wait_for(lambda: self.names, 10, "a /diagnostics message of the node")
        finally:
            self.ros.node.destroy_subscription(self.sub)


def test_three_cameras_share_one_batch_and_each_gets_its_own_header_size_and_results(ros, make_node, camera):
    factory = FakeFactory()
    outputs = ("depth", "semantic", "overlay")
    node, cams = several(make_node, camera, factory, THREE, outputs)
    (predictor,) = factory.made
    assert [image.shape for image in predictor.batches[0]] == [(8, 12, 3)] * 3  # configure's warm-up: a full batch
    for name, cam in cams.items():
        cam.answered(cam.frame(frame_id=THREE[name][1]))
    ros.wait_for(lambda: settled(node), 10, "every frame so far answered")

    predictor.gate.clear()
    predictor.busy.clear()
    try:
        cams["front"].pub.publish(cams["front"].frame(frame_id="front_optical"))
        ros.wait_for(predictor.busy.is_set, 10, "the predictor to take front's frame")
        base = {name: received(node, name) for name in THREE}
        frames = {name: cam.frame(synthetic_street(*cam.size, seed=20 + i), frame_id=THREE[name][1])
                  for i, (name, cam) in enumerate(cams.items())}
        for name, msg in frames.items():
            cams[name].pub.publish(msg)
        ros.wait_for(lambda: all(received(node, name) == base[name] + 1 for name in THREE), 10,
                     "one frame of every camera waiting")
    finally:
        predictor.gate.set()
    ros.wait_for(lambda: all(cams[name].got(msg, out) for name, msg in frames.items() for out in outputs), 10,
                 "every camera's outputs")

    batch = predictor.batches[-1]
    assert sorted(image.shape[:2] for image in batch) == sorted(size for size, _ in THREE.values())
    for name, msg in frames.items():
        (height, width), frame_id = THREE[name]
        assert any(np.array_equal(image, synthetic_street(height, width, seed=20 + list(THREE).index(name)))
                   for image in batch), name
        out = {o: cams[name].collector.get(cams[name].topic(o), msg.header.stamp) for o in outputs}
        for o, result in out.items():
            assert stamp_key(result.header.stamp) == stamp_key(msg.header.stamp), (name, o)
            assert result.header.frame_id == frame_id and (result.height, result.width) == (height, width), (name, o)
        np.testing.assert_array_equal(image_to_array(out["depth"]), expected_depth(height, width))
        np.testing.assert_array_equal(image_to_array(out["semantic"]), expected_labels(height, width))
        # Nothing of another camera on this camera's topics, ever.
        for o in outputs:
            for result in cams[name].collector.messages[cams[name].topic(o)].values():
                assert (result.header.frame_id, result.height, result.width) == (frame_id, height, width), (name, o)
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name(), "rear")
    try:
        values = watch.wait(lambda v: v["batch_size"] == "3", 10, "rear's status with the batch of 3")
    finally:
        watch.destroy()
    assert values["camera"] == "rear" and values["input_topic"] == topic(node, "rear/image_raw")
    assert values["max_batch_size"] == "3" and int(values["batches"]) >= 2
    assert int(values["frames_processed"]) >= 2 and values["frames_rejected"] == "0"
    assert predictor.plans == [(3, "one_pass")]  # configure planned batches of all three cameras, as configured
    assert values["batch_mode"] == "one_pass: fake"
    fqn = node.get_fully_qualified_name()
    assert StatusNames(ros, node).wait() == sorted(f"{fqn}: perception {name}" for name in THREE)


def test_a_camera_that_stops_does_not_hold_up_the_others(ros, make_node, camera):
    factory = FakeFactory()
    node, cams = several(make_node, camera, factory, {"a": ((24, 40), "a"), "b": ((16, 16), "b")})
    cams["b"].answered(cams["b"].frame())  # b delivers once, then falls silent
    ros.wait_for(lambda: settled(node), 10, "b's frame answered")
    silent_since = received(node, "b")
    for i in range(5):
        cams["a"].answered(cams["a"].frame(synthetic_street(24, 40, seed=40 + i)))
    assert received(node, "b") == silent_since
    (predictor,) = factory.made
    assert [image.shape[:2] for image in predictor.batches[-1]] == [(24, 40)]


def test_a_camera_that_starts_late_is_picked_up(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory, cameras=["early", "late"])
    early = camera(node, ("depth",), name="early", size=(24, 40))
    early.connected()
    early.answered(early.frame())
    late = camera(node, ("depth", "semantic"), name="late", size=(20, 30), stamps_from=7000.0)
    late.connected()
    msg = late.frame(frame_id="late_optical")
    out = late.answered(msg, ("depth", "semantic"))
    assert out["depth"].header.frame_id == "late_optical" and (out["depth"].height, out["depth"].width) == (20, 30)
    np.testing.assert_array_equal(image_to_array(out["semantic"]), expected_labels(20, 30))
    early.answered(early.frame())


def test_a_bad_frame_costs_only_its_camera_its_place_in_the_batch(ros, make_node, camera):
    factory = FakeFactory()
    node, cams = several(make_node, camera, factory, {"good": ((24, 40), "g"), "bad": ((16, 16), "b")})
    for cam in cams.values():
        cam.answered(cam.frame())
    ros.wait_for(lambda: settled(node), 10, "every frame so far answered")
    (predictor,) = factory.made
    predictor.gate.clear()
    predictor.busy.clear()
    try:
        cams["good"].pub.publish(cams["good"].frame())
        ros.wait_for(predictor.busy.is_set, 10, "the predictor to take good's frame")
        base = {name: received(node, name) for name in cams}
        good = cams["good"].frame(synthetic_street(24, 40, seed=50))
        bad = make_image_msg(np.zeros((16, 16), np.uint16), "mono16", stamp=cams["bad"].frame().header.stamp)
        cams["good"].pub.publish(good)
        cams["bad"].pub.publish(bad)
        ros.wait_for(lambda: all(received(node, name) == base[name] + 1 for name in cams), 10, "both frames")
    finally:
        predictor.gate.set()
    ros.wait_for(lambda: cams["good"].got(good, "depth"), 10, "good's depth")
    watch = DiagnosticsWatch(ros, node.get_fully_qualified_name(), "bad")
    try:
        values = watch.wait(lambda v: v["frames_rejected"] == "1", 10, "bad's rejected frame")
    finally:
        watch.destroy()
    assert "'mono16' is a 16-bit image" in values["last_problem"]
    assert topic(node, "bad/image_raw") in values["last_problem"]
    assert not cams["bad"].got(bad, "depth")
    assert [image.shape[:2] for image in predictor.batches[-1]] == [(24, 40)]
    (good_state,) = [c for c in node.cameras if c.name == "good"]
    assert good_state.stats.snapshot().frames_rejected == 0


def test_a_camera_nobody_listens_to_is_not_computed(ros, make_node, camera):
    factory = FakeFactory()
    node = active_node(make_node, factory, cameras=["heard", "unheard"])
    unheard = camera(node, (), name="unheard", size=(16, 16))  # a camera, but nobody subscribes to its outputs
    heard = camera(node, ("depth",), name="heard", size=(24, 40))
    unheard.connected()
    heard.connected()
    unheard.pub.publish(unheard.frame())
    (state,) = [c for c in node.cameras if c.name == "unheard"]
    ros.wait_for(lambda: state.stats.snapshot().frames_skipped_idle == 1, 10, "unheard's frame skipped")
    heard.answered(heard.frame())
    (predictor,) = factory.made
    assert all(image.shape[:2] != (16, 16) for batch in predictor.batches for image in batch)


@pytest.mark.parametrize("cameras", [[], ["front", "rear/left"]], ids=["single", "two"])
def test_topics_are_todays_without_cameras_and_under_each_name_with_them(ros, make_node, camera, cameras):
    node = active_node(make_node, FakeFactory(), **({"cameras": cameras} if cameras else {}))
    ns = node.get_namespace()
    prefixes = [f"{name}/" for name in cameras] or [""]
    outputs = ("depth", "depth/camera_info", "semantic", "semantic_color", "overlay", "points", "confidence",
               "depth/compressedDepth", "semantic/compressed", "semantic_color/compressed", "overlay/compressed",
               "confidence/compressed")

    def topics(names_and_types: list) -> set[str]:
        return {name for name, _ in names_and_types if name.startswith(ns + "/") and "/perception_node/" not in name}

    assert topics(node.get_publisher_names_and_types_by_node(node.get_name(), ns)) == {
        f"{ns}/{prefix}{output}" for prefix in prefixes for output in outputs}
    assert topics(node.get_subscriber_names_and_types_by_node(node.get_name(), ns)) == {
        f"{ns}/{prefix}{name}" for prefix in prefixes for name in ("image_raw", "camera_info")}
    cam = camera(node, ("depth",), name=cameras[0] if cameras else "")
    cam.connected()
    cam.answered(cam.frame())
    fqn = node.get_fully_qualified_name()
    expected = sorted(f"{fqn}: perception {name}" for name in cameras) or [f"{fqn}: perception"]
    assert StatusNames(ros, node).wait() == expected
    watch = DiagnosticsWatch(ros, fqn, cameras[0] if cameras else "")
    try:
        values = watch.wait(lambda v: v["batch_size"] == "1", 10, "a status after one batch")
    finally:
        watch.destroy()
    assert values["camera"] == (cameras[0] if cameras else "")
    assert values["max_batch_size"] == str(max(1, len(cameras)))


@pytest.mark.parametrize("cameras,words", [
    (["/front"], "camera name '/front' must be relative"),
    (["front", "front"], "parameter cameras lists 'front' more than once"),
    (["3d"], "camera name '3d' may hold only letters"),
], ids=["absolute", "twice", "digit"])
def test_unusable_camera_names_are_refused_by_configure(make_node, capfd, cameras, words):
    factory = FakeFactory()
    node = make_node(factory, cameras=cameras)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.lifecycle_state == "unconfigured" and factory.made == []
    errors = [line for line in capfd.readouterr().err.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and words in errors[0], errors


def test_max_batch_size_limits_the_batch_and_every_camera_is_still_served(ros, make_node, camera):
    factory = FakeFactory()
    node, cams = several(make_node, camera, factory, THREE, max_batch_size=1)
    for name, cam in cams.items():
        cam.answered(cam.frame(frame_id=THREE[name][1]))
    (predictor,) = factory.made
    assert [len(batch) for batch in predictor.batches] == [1] * len(predictor.batches)
