"""The replay graph, and bag_player and evaluator as real ROS 2 nodes over DDS (subprocesses, isolated domain).

- the graph (mtan_ros.ros.replay.replay_graph, no ROS needed): processes, parameters, waiting signals,
  and command lines that rclpy reads back as the same typed parameters;
- free play: the recorded rate (and the `rate` multiplier) within a tolerance, /clock from the
  bag's time, and an evaluator without a perception node that counts every frame as dropped
  and finishes on its idle timeout;
- the player waits for a lifecycle node to be active (and fails when it never is);
- lockstep with the perception node and use_sim_time, started as the graph says: zero drops,
  and the evaluator's numbers equal the training metric code on the very messages the node
  published (and, within floating-point noise, on a Predictor run offline on the bag's images);
- the evaluator writes its report whenever it stops (signals from the first instant, ROS shut
  down under it), and the console entry points end quietly on an early Ctrl-C / SIGTERM;
- a truncated bag is played up to its last intact frame, then the player exits with an error.
Nothing here reads the nodes' log text: readiness and results come from the ROS graph, exit
codes and the evaluator's files.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ros_helpers import (REPO, Collector, DiagnosticsWatch, NodeProcess, RosSession, handles_sigterm, image_to_array,
                         make_image_msg, stamp_key)

from mtan_ros.bags import messages as m
from mtan_ros.bags.make_bag import BagTopics, write_bag
from mtan_ros.bags.reader import open_bag, read_all
from mtan_ros.errors import ConfigError
from mtan_ros.ros.replay.replay_graph import ReplayOptions, replay_nodes, ros2_bag_problem, ros_value

SIZE = (64, 128)
BAG_RATE = 5.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ros():
    pytest.importorskip("rclpy")
    with RosSession("test_replay") as session:
        yield session


@pytest.fixture(scope="module")
def topics(ros):
    base = f"{ros.namespace}/camera"
    return BagTopics(image=f"{base}/image_raw", compressed=f"{base}/image_raw/compressed",
                     camera_info=f"{base}/camera_info", depth_gt=f"{base}/depth_gt",
                     semantic_gt=f"{base}/semantic_gt")


@pytest.fixture(scope="module")
def bag(tmp_path_factory, topics):
    from mtan_ros.data import open_dataset

    dataset = open_dataset(None, split="val", format="synthetic", length=6, size=SIZE, seed=11)
    out = tmp_path_factory.mktemp("replay") / "bag"
    write_bag(dataset, out, rate=BAG_RATE, start_ns=1_600_000_000 * 10**9, topics=topics, progress=False)
    return out


def _finish(proc: NodeProcess, timeout: float = 60.0) -> int:
    try:
        return proc.wait_exit(timeout)
    except Exception:
        raise AssertionError(f"{proc.command[2]} did not exit in {timeout:.0f} s:\n{proc.output()}") from None


def _process(ros: RosSession, spec) -> NodeProcess:
    """A NodeSpec of the replay graph as a test subprocess (its module, its arguments and environment)."""
    return NodeProcess(ros, spec.ros_arguments(), module=spec.module, namespace=spec.namespace or None,
                       extra_env=spec.env)


# ------------------------------------------------------------------------------------ the graph (no ROS)

def test_the_graph_has_three_processes_that_wait_on_each_other_by_state():
    options = ReplayOptions(bag="/data/bag", model_path="/data/best.pt", namespace="cam0", lockstep=True, rate=0.0,
                            output_dir="/out", frames=7, device="cpu", compressed=True)
    perception, evaluator, player = replay_nodes(options, environ={})
    assert [spec.role for spec in (perception, evaluator, player)] == ["perception", "evaluator", "player"]
    assert (perception.fqn, perception.lifecycle, evaluator.fqn) == ("/cam0/perception_node", True, "/cam0/evaluator")
    assert perception.params_files[0].endswith("perception.yaml")
    assert perception.parameters == {"model_path": "/data/best.pt", "use_sim_time": True, "device": "cpu",
                                     "compressed_input": True}  # precision: the YAML's value
    assert evaluator.parameters["output_dir"] == "/out" and evaluator.parameters["frames"] == 7
    p = player.parameters
    assert p["wait_for_nodes"] == [perception.fqn] and p["lockstep_topic"] == "/cam0/depth"
    assert p["wait_for_subscribers"] == ["/cam0/image_raw/compressed", "/cam0/depth_gt", "/cam0/semantic_gt",
                                         "/cam0/semantic"]
    assert "wait_for_publishers" not in p  # a publisher of depth says nothing about a loaded model
    assert (p["publish_clock"], p["use_sim_time"], p["rate"], p["lockstep"]) == (True, False, 0.0, True)
    command = evaluator.python_command()
    assert command[:4] == [sys.executable, "-m", "mtan_ros.ros.executables", "evaluator"]
    assert ["-r", "__ns:=/cam0"] == command[command.index("__ns:=/cam0") - 1:command.index("__ns:=/cam0") + 1]


def test_the_graph_and_the_entry_points_import_without_ros():
    """mtan-demo runs where `launch` is not installed; the entry points import before rclpy does."""
    code = ("import sys; sys.modules['rclpy'] = None; sys.modules['launch'] = None\n"
            "import mtan_ros.ros.replay.replay_graph, mtan_ros.ros.executables, mtan_ros.demo\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_transport_profile_is_decided_by_the_transport_module():
    from mtan_ros.ros.camera.transport import large_image_env

    options = ReplayOptions(bag="b", model_path="m")
    chosen = large_image_env({})
    assert all(spec.env == chosen for spec in replay_nodes(options, environ={}))
    mine = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    assert all(spec.env == {} for spec in replay_nodes(options, environ=mine))


def test_options_from_launch_arguments_and_their_mistakes():
    options = ReplayOptions.from_strings({"bag": "b", "model_path": "m", "lockstep": "True", "rate": "2",
                                          "frames": "3", "compressed": ""})
    assert (options.lockstep, options.rate, options.frames, options.compressed) == (True, 2.0, 3, None)
    defaults = {name: default for name, default, _ in ReplayOptions.descriptions()}
    assert defaults["bag"] is None and defaults["lockstep"] == "false" and defaults["compressed"] == ""
    assert ReplayOptions.from_strings({**defaults, "bag": "b", "model_path": "m"}) == ReplayOptions("b", "m")
    for values, words in (({"lockstep": "maybe"}, "lockstep must be true or false"),
                          ({"frames": "many"}, "frames must be an integer"),
                          ({"player": "vlc"}, "player must be one of python, ros2bag"),
                          ({"player": "ros2bag", "lockstep": "true"}, "lockstep:=true needs player:=python"),
                          ({"rate": "-1"}, "rate must be >= 0"),
                          ({"bag": ""}, "bag is empty")):
        with pytest.raises(ConfigError, match=words):
            ReplayOptions.from_strings({"bag": "b", "model_path": "m", **values})


def test_ros2_bag_missing_is_one_line_naming_the_fix():
    problem = ros2_bag_problem({"PATH": "", "ROS_DISTRO": "kilted"})
    assert "\n" not in problem and "ros-kilted-ros2bag" in problem and "player:=python" in problem


def test_command_line_parameters_keep_their_types(tmp_path):
    """rclpy reads the graph's `-p` values back as the same typed values (a path "1" stays a string)."""
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.context import Context

    assert ros_value("1") == '"1"' and ros_value(True) == "true" and ros_value(["a", "b"]) == '["a", "b"]'
    options = ReplayOptions(bag="1", model_path="true", output_dir=str(tmp_path / "out dir"), frames=2)
    for spec in replay_nodes(options, environ={}):
        # Only the -p values: the nodes' params files hold entries (an empty `cameras: []`) that reach a generic
        # node as "not set", which our nodes read as an empty list but rclpy's automatic declaration refuses.
        args = spec.ros_arguments()
        for path in spec.params_files:
            index = args.index(path)
            del args[index - 1:index + 1]
        context = Context()
        rclpy.init(args=["prog", *args], context=context, domain_id=0)
        try:
            node = rclpy.create_node("x", context=context, automatically_declare_parameters_from_overrides=True)
            values = {name: node.get_parameter(name).value for name in spec.parameters}
            expected = {name: list(v) if isinstance(v, (list, tuple)) else v for name, v in spec.parameters.items()}
            assert {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()} == expected
            assert (node.get_name(), node.get_namespace()) == (spec.name, spec.namespace or "/")
            node.destroy_node()
        finally:
            context.try_shutdown()


# ------------------------------------------------------------------------------------ nodes over DDS

def test_free_play_keeps_the_recorded_rate_and_clock(ros, bag, topics, tmp_path):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    base = topics.image.rsplit("/", 1)[0]
    clocks: list[int] = []
    clock_sub = ros.node.create_subscription(Clock, "/clock", lambda c: clocks.append(
        c.clock.sec * 10**9 + c.clock.nanosec), 10)
    out = tmp_path / "report"
    last_ns = max(m.header_stamp_ns(x.data) for x in read_all(bag) if x.topic == topics.image)
    last_frame = (last_ns // 10**9, last_ns % 10**9)
    # No perception node here: the evaluator listens to the ground truth at once.
    evaluator = NodeProcess(ros, ["--ros-args", "-p", f"output_dir:={out}", "-p", f"bag:={bag}",
                                  "-p", "idle_timeout:=2.0", "-p", "wait_for_predictions:=false"],
                            module="mtan_ros.ros.replay.evaluator", namespace=base)
    spans = {}
    try:
        for rate in (2.0, 1.0):
            # The player starts once the image topic has a subscriber: a leftover one of an earlier test would let
            # it start before this collector is matched.
            ros.wait_for(lambda: ros.node.count_subscribers(topics.image) == 0, 60,
                         "earlier subscribers of the image topic to leave the graph")
            # camera_info is this collector's alone: waiting for it, the player cannot start on the evaluator's
            # image subscription before the collector is discovered (a CI run got 1 frame of 6).
            collector = Collector(ros, {topics.image: Image, topics.camera_info: CameraInfo})
            wait = [topics.image, topics.camera_info]
            if rate == 1.0:  # with an evaluator (and no perception node) listening: its subscription says so
                evaluator.start()
                wait.append(topics.depth_gt)
            args = ["--ros-args", "-p", f"bag:={bag}", "-p", f"rate:={rate}", "-p", "publish_clock:=true",
                    "-p", "wait_timeout:=60.0", "-p", "start_delay:=1.0",
                    "-p", f"wait_for_subscribers:={wait!r}"]
            with NodeProcess(ros, args, module="mtan_ros.ros.replay.bag_player") as player:
                ros.wait_for(lambda: not player.alive(), timeout=90, what="the player to finish")
                assert player.proc.returncode == 0, player.output()
            # The player starts once the image topic has any subscriber; with the evaluator's already there,
            # this collector may be matched a frame late (missing the first), never the last: the player waits
            # for its reliable subscribers to have every frame before it exits. The rate is measured over the
            # frames it got.
            ros.wait_for(lambda: last_frame in collector.received_at[topics.image], timeout=10,
                         what=f"the last frame at rate {rate}")
            assert len(collector.received_at[topics.image]) >= 5, sorted(collector.received_at[topics.image])
            arrivals = sorted(collector.received_at[topics.image].items())  # by stamp
            recorded_span = (arrivals[-1][0][0] - arrivals[0][0][0]) + (arrivals[-1][0][1] - arrivals[0][0][1]) / 1e9
            spans[rate] = (arrivals[-1][1] - arrivals[0][1]) * (5 / BAG_RATE) / recorded_span  # over the whole bag
            collector.destroy()
        assert _finish(evaluator) == 0
    finally:
        evaluator.kill()
        ros.node.destroy_subscription(clock_sub)
    recorded = 5 / BAG_RATE  # 1 s from the first frame to the last
    # The schedule is absolute: frames may come late on a busy machine, never early.
    assert recorded * 0.95 <= spans[1.0] <= recorded * 1.6, spans
    assert recorded / 2 * 0.95 <= spans[2.0] <= recorded / 2 * 1.8, spans
    stamps = [x.log_time_ns for x in read_all(bag) if x.topic == topics.image]
    assert clocks and all(stamps[0] <= c <= stamps[-1] + 10**9 for c in clocks)
    assert clocks[-1] >= stamps[-1]
    report = json.loads((out / "report.json").read_text())
    # No perception node ran: every frame came in (the player waited for the evaluator), none came out.
    assert (report["frames_in"], report["frames_out"], report["dropped"]) == (6, 0, 6)
    assert report["finished_because"].startswith("nothing received")


class _Managed:
    """A lifecycle node named perception_node, hosted by the test process (state changed by the test)."""

    def __init__(self, ros: RosSession, namespace: str) -> None:
        from rclpy.lifecycle import LifecycleNode

        self.ros = ros
        self.node = LifecycleNode("perception_node", namespace=namespace, context=ros.context)
        self.fqn = f"{namespace}/perception_node"
        self.state_requests = 0  # get_state calls answered, e.g. a waiting player's polls
        (service,) = [srv for srv in self.node.services if srv.srv_name == f"{self.fqn}/get_state"]
        answer = service.callback

        def counted(request, response):
            self.state_requests += 1
            return answer(request, response)

        service.callback = counted
        ros.executor.add_node(self.node)

    def seen_twice(self, timeout: float = 60.0) -> None:
        """Wait until two more get_state requests came: the player has acted on an answer given from now on."""
        target = self.state_requests + 2
        self.ros.wait_for(lambda: self.state_requests >= target, timeout, "two more get_state requests")

    def destroy(self) -> None:
        self.ros.executor.remove_node(self.node)
        self.node.destroy_node()


def _asks_for_state(ros: RosSession, target: str) -> bool:
    """True once a bag_player has a get_state client for `target` (it is in its waiting loop)."""
    for name, namespace in ros.node.get_node_names_and_namespaces():
        if name == "bag_player":
            clients = ros.node.get_client_names_and_types_by_node(name, namespace)
            if any(client == f"{target}/get_state" for client, _ in clients):
                return True
    return False


def _deliver_pending(ros: RosSession, rounds: int = 50) -> None:
    """Run the callbacks of messages already in this process's readers (at most `rounds`, far more than a bag has).

    After a player exits its reliable subscribers hold everything it sent (it waits for their
    acknowledgements), so no time needs to pass: an extra message would be delivered here.
    """
    for _ in range(rounds):
        ros.executor.spin_once(timeout_sec=0)


def test_the_player_plays_only_once_the_node_is_active(ros, bag, topics):
    from sensor_msgs.msg import Image

    from rclpy.qos import QoSProfile, ReliabilityPolicy

    managed = _Managed(ros, f"{ros.namespace}/gate")
    # Deep enough for the whole bag: rate 0 sends the 6 frames in one burst.
    collector = Collector(ros, {topics.image: Image}, qos=QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    args = ["--ros-args", "-p", f"bag:={bag}", "-p", "rate:=0.0", "-p", "wait_timeout:=120.0",
            "-p", "start_delay:=0.5", "-p", f"wait_for_nodes:=['{managed.fqn}']"]
    try:
        with NodeProcess(ros, args, module="mtan_ros.ros.replay.bag_player") as player:
            ros.wait_for(lambda: _asks_for_state(ros, managed.fqn) and collector.connected(), timeout=60,
                         what="the player to wait for the node")
            managed.seen_twice()
            assert player.alive() and not collector.messages[topics.image], "played before the node was configured"
            managed.node.trigger_configure()
            managed.seen_twice()
            assert player.alive() and not collector.messages[topics.image], "played while the node was inactive"
            managed.node.trigger_activate()
            ros.wait_for(lambda: not player.alive(), timeout=60, what="the player to finish")
            assert player.proc.returncode == 0, player.output()
        ros.wait_for(lambda: len(collector.messages[topics.image]) == 6, timeout=10, what="all 6 frames")
    finally:
        collector.destroy()
        managed.destroy()


def test_the_player_fails_when_the_node_never_gets_active(ros, bag, topics):
    from sensor_msgs.msg import Image

    managed = _Managed(ros, f"{ros.namespace}/stuck")
    managed.node.trigger_configure()
    collector = Collector(ros, {topics.image: Image})
    args = ["--ros-args", "-p", f"bag:={bag}", "-p", "rate:=0.0", "-p", "wait_timeout:=3.0",
            "-p", f"wait_for_nodes:=['{managed.fqn}']"]
    try:
        with NodeProcess(ros, args, module="mtan_ros.ros.replay.bag_player") as player:
            ros.wait_for(lambda: not player.alive(), timeout=90, what="the player to give up")
            assert player.proc.returncode == 2, player.output()
        _deliver_pending(ros)
        assert not collector.messages[topics.image]
    finally:
        collector.destroy()
        managed.destroy()


def _pending(values: dict[str, str]) -> int:
    """Frames the node has received and not yet processed, dropped, rejected or skipped."""
    done = ("frames_processed", "frames_dropped", "frames_rejected", "frames_skipped_no_subscriber")
    return int(values["frames_received"]) - sum(int(values[key]) for key in done)


def _until_outputs_reach(ros: RosSession, node_fqn: str, image_topic: str, collector: Collector) -> None:
    """Send the node a probe frame until its outputs reach `collector`, then forget them.

    A subscription that sees the node's publishers is not yet seen by them: outputs published
    in between are lost to it. One probe at a time, each taken and accounted for by the node
    before the next, so that none is left to reach a subscriber that comes later (the evaluator).
    """
    from sensor_msgs.msg import Image

    from mtan_ros.ros.camera.qos import playback_qos

    pub = ros.node.create_publisher(Image, image_topic, playback_qos())
    watch = DiagnosticsWatch(ros, node_fqn)
    probe = make_image_msg(np.zeros((*SIZE, 3), np.uint8), "rgb8", stamp=ros.stamp(1.0))  # before the bag's stamps
    outputs = list(collector.messages)
    try:
        ros.wait_for(lambda: pub.get_subscription_count() > 0, 120, "the node's camera subscription")
        before = int(watch.wait(lambda v: True, 60)["frames_received"])
        for sent in range(1, 31):
            pub.publish(probe)
            watch.wait(lambda v: int(v["frames_received"]) >= before + sent and _pending(v) == 0, 60,
                       f"the node to take probe {sent}")
            try:  # its outputs, if it had a subscriber for them, are on their way
                ros.wait_for(lambda: collector.has(probe.header.stamp, outputs), 5, "the probe's outputs")
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError(f"no probe's outputs reached {outputs} in 30 tries")
    finally:
        ros.node.destroy_publisher(pub)
        watch.destroy()
    for name in outputs:
        collector.messages[name].pop(stamp_key(probe.header.stamp), None)
        collector.received_at[name].pop(stamp_key(probe.header.stamp), None)


def test_lockstep_with_the_node_drops_nothing_and_scores_like_the_training_code(
        ros, bag, topics, tmp_path, tiny_checkpoint):
    import torch
    from sensor_msgs.msg import Image

    from mtan_ros.inference import Predictor
    from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors

    base = topics.image.rsplit("/", 1)[0]
    out = tmp_path / "report"
    options = ReplayOptions(bag=str(bag), model_path=str(tiny_checkpoint), namespace=base, lockstep=True, rate=0.0,
                            output_dir=str(out), idle_timeout=60.0, device="cpu", precision="fp32",
                            lockstep_timeout=30.0)
    node, evaluator, player = (_process(ros, spec) for spec in replay_nodes(options, environ=ros.env))
    collector = Collector(ros, {f"{base}/depth": Image, f"{base}/semantic": Image})
    try:
        # The player waits for the node and the evaluator, not for this collector: unmatched when the first
        # frames came out, a CI run missed some of them. So the node goes first and the rest once it is matched;
        # the player still has to wait for the evaluator by itself.
        node.start()
        ros.wait_for(collector.connected, timeout=120, what="the node's depth and semantic publishers")
        _until_outputs_reach(ros, f"{base}/perception_node", topics.image, collector)
        for proc in (evaluator, player):
            proc.start()
        ros.wait_for(lambda: not player.alive(), timeout=240, what="the lockstep player to finish")
        assert player.proc.returncode == 0, player.output()
        assert _finish(evaluator, 60) == 0, evaluator.output()
        ros.wait_for(lambda: all(len(v) == 6 for v in collector.messages.values()), timeout=10,
                     what="6 predictions of each kind")
        assert node.alive()
        assert node.stop() == 0
    finally:
        for proc in (node, evaluator, player):
            proc.kill()
        collector.destroy()

    report = json.loads((out / "report.json").read_text())
    assert (report["frames_in"], report["frames_out"], report["dropped"], report["frames_evaluated"]) == (6, 6, 0, 6)
    assert report["finished_because"] == "all 6 frames evaluated"
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p95"] < 60_000
    assert report["fps"] > 0
    assert (out / "mosaic.png").is_file()

    # The same numbers from the training metric code, on the messages the node published.
    msgs = read_all(bag)
    gt = {kind: {m.header_stamp_ns(x.data): m.decode_image(x.data).pixels for x in msgs if x.topic == topic}
          for kind, topic in (("depth", topics.depth_gt), ("semantic", topics.semantic_gt))}
    cm, de = ConfusionMatrix(7), DepthErrors()
    for stamp_ns, depth_gt in gt["depth"].items():
        key = (stamp_ns // 10**9, stamp_ns % 10**9)
        depth = image_to_array(collector.messages[f"{base}/depth"][key])
        labels = image_to_array(collector.messages[f"{base}/semantic"][key])
        cm.update(torch.from_numpy(labels.astype(np.int64)),
                  torch.from_numpy(gt["semantic"][stamp_ns].astype(np.int64)))
        de.update(depth, depth_gt)
    assert report["miou"] == pytest.approx(cm.miou(), abs=1e-12)
    assert report["pixel_accuracy"] == pytest.approx(cm.pixel_accuracy(), abs=1e-12)
    assert report["abs_err_m"] == pytest.approx(de.abs_err(), rel=1e-9)
    assert report["rel_err"] == pytest.approx(de.rel_err(), rel=1e-9)

    # And offline: the Predictor on the bag's images gives (nearly) the same accuracy.
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp32")
    cm2, de2 = ConfusionMatrix(7), DepthErrors()
    for x in msgs:
        if x.topic == topics.image:
            stamp_ns = m.header_stamp_ns(x.data)
            prediction = predictor(m.decode_image(x.data).pixels)
            depth = np.where(prediction.depth > 100.0, np.nan, prediction.depth)  # the node's max_depth
            cm2.update(prediction.labels.astype(np.int64), gt["semantic"][stamp_ns].astype(np.int64))
            de2.update(depth, gt["depth"][stamp_ns])
    assert report["pixel_accuracy"] == pytest.approx(cm2.pixel_accuracy(), abs=2e-3)
    assert report["abs_err_m"] == pytest.approx(de2.abs_err(), rel=1e-3)


def test_the_evaluator_listens_to_the_ground_truth_once_the_predictions_can_reach_it(ros, bag, tmp_path):
    """A player starts when the ground truth has subscribers: they must mean the node's outputs are matched too
    (a launch run lost every prediction of a lockstep replay when the player started before that)."""
    from sensor_msgs.msg import Image

    namespace = f"{ros.namespace}/listens"
    args = ["--ros-args", "-p", f"output_dir:={tmp_path / 'report'}", "-p", f"bag:={bag}"]
    publishers = []
    with NodeProcess(ros, args, module="mtan_ros.ros.replay.evaluator", namespace=namespace):
        ros.wait_for(lambda: ros.node.count_subscribers(f"{namespace}/semantic") > 0, 90, "the evaluator to run")
        ros.spin_for(2.0)
        assert ros.node.count_subscribers(f"{namespace}/depth_gt") == 0, "ground truth before any prediction"
        publishers.append(ros.node.create_publisher(Image, f"{namespace}/depth", 5))
        ros.spin_for(2.0)
        assert ros.node.count_subscribers(f"{namespace}/depth_gt") == 0, "ground truth with depth alone"
        publishers.append(ros.node.create_publisher(Image, f"{namespace}/semantic", 5))
        ros.wait_for(lambda: ros.node.count_subscribers(f"{namespace}/depth_gt") == 1
                     and ros.node.count_subscribers(f"{namespace}/semantic_gt") == 1, 30, "the ground truth readers")
        for pub in publishers:
            ros.node.destroy_publisher(pub)


def test_truncated_bag_plays_up_to_the_damage(ros, bag, topics, tmp_path):
    from sensor_msgs.msg import Image

    storage = open_bag(bag).files[0]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / storage.name).write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])
    intact = 0
    try:
        for msg in open_bag(cut).messages():
            intact += msg.topic == topics.image
    except Exception:
        pass
    assert 0 < intact < 6
    collector = Collector(ros, {topics.image: Image})
    try:
        args = ["--ros-args", "-p", f"bag:={cut}", "-p", "rate:=0.0", "-p", "wait_timeout:=30.0",
                "-p", "start_delay:=0.5"]
        with NodeProcess(ros, args, module="mtan_ros.ros.replay.bag_player") as player:
            ros.wait_for(lambda: not player.alive(), timeout=60, what="the player to finish")
            assert player.proc.returncode == 2, player.output()  # damaged: every intact frame, then an error
        ros.wait_for(lambda: len(collector.messages[topics.image]) == intact, timeout=10, what="the intact frames")
        _deliver_pending(ros)  # the player exits once its reliable subscribers have every frame it sent
        assert len(collector.messages[topics.image]) == intact
    finally:
        collector.destroy()


# ------------------------------------------------------------------------------------ stopping at any moment

def _report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


@pytest.mark.parametrize("when", ["while starting", "while spinning"])
def test_the_evaluator_reports_when_ros_shuts_down_under_it(ros, bag, tmp_path, monkeypatch, when):
    """The context going away (e.g. launch stopping everything) during construction or spin: still a report."""
    import rclpy

    from mtan_ros.ros.replay import evaluator

    def shut_down(*args, **kwargs):
        rclpy.try_shutdown()  # the default context, which main() initialised

    if when == "while starting":  # after the parameters were read, before the subscriptions exist
        original = evaluator.EvaluatorNode._classes
        monkeypatch.setattr(evaluator.EvaluatorNode, "_classes",
                            lambda self: (shut_down(), original(self))[1])
    else:  # inside a timer callback, as an external shutdown would land
        monkeypatch.setattr(evaluator.EvaluatorNode, "_check", shut_down)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain_id))
    out = tmp_path / "report"
    code = evaluator.main(["evaluator", "--ros-args", "-r", f"__ns:={ros.namespace}/shutdown",
                           "-p", f"output_dir:={out}", "-p", f"bag:={bag}"])
    assert code == 0
    report = _report(out)
    expected = "ROS shut down while the evaluator was starting" if when == "while starting" else "ROS shut down"
    assert report["finished_because"] == expected
    assert (report["frames_in"], report["frames_evaluated"]) == (0, 0)


def _entry(ros: RosSession, name: str, args: list[str], log) -> subprocess.Popen:
    """A console entry point as `ros2 run` starts it (mtan_ros.ros.executables), in the test's domain."""
    code = f"import sys; from mtan_ros.ros.executables import {name}; sys.exit({name}())"
    return subprocess.Popen([sys.executable, "-c", code, "--ros-args", *args], env=ros.env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("delay", [0.2, 1.0])
@pytest.mark.parametrize("name", ["perception_node", "bag_player", "evaluator"])
def test_an_early_ctrl_c_ends_quietly(ros, bag, tmp_path, tiny_checkpoint, name, delay):
    """SIGINT while the entry point still imports rclpy/torch/cv2: exit code 0, no traceback.

    `delay` counts from the moment the entry point has installed its handlers (the first thing
    it does); before that the interpreter itself is still starting, which no program can guard.
    """
    out = tmp_path / "report"
    args = {"perception_node": ["-p", f"model_path:={tiny_checkpoint}", "-p", "device:=cpu"],
            "bag_player": ["-p", f"bag:={bag}"],
            "evaluator": ["-p", f"output_dir:={out}", "-p", f"bag:={bag}", "-p", f"model_path:={tiny_checkpoint}"]}
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = _entry(ros, name, ["-r", f"__ns:={ros.namespace}/early", *args[name]], log)
        try:
            ros.wait_for(lambda: handles_sigterm(proc.pid) or proc.poll() is not None, 60,
                         f"the {name} entry point to install its signal handlers")
            assert proc.poll() is None, log_path.read_text(errors="replace")
            time.sleep(delay)  # not a synchronisation: the moment of the import that the signal lands in
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output, output
    if name == "evaluator":  # it reports whenever it is stopped
        assert _report(out)["finished_because"] == "interrupted (SIGINT) before any frame was evaluated"


@pytest.mark.parametrize("name", ["perception_node", "bag_player", "evaluator"])
def test_ctrl_c_twice_while_running_ends_cleanly(ros, bag, tmp_path, tiny_checkpoint, name):
    """The terminal's SIGINT, then launch's own a moment later: still exit code 0, no traceback."""
    out = tmp_path / "report"
    namespace = f"{ros.namespace}/twice_{name}"
    args = {"perception_node": ["-p", f"model_path:={tiny_checkpoint}", "-p", "device:=cpu"],
            "bag_player": ["-p", f"bag:={bag}", "-p", f"wait_for_nodes:=['{namespace}/nobody']"],
            "evaluator": ["-p", f"output_dir:={out}", "-p", f"bag:={bag}"]}
    running = {"perception_node": lambda: ros.node.count_subscribers(f"{namespace}/image_raw") > 0,
               "bag_player": lambda: _asks_for_state(ros, f"{namespace}/nobody"),
               "evaluator": lambda: ros.node.count_subscribers(f"{namespace}/semantic") > 0}
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = _entry(ros, name, ["-r", f"__ns:={namespace}", *args[name]], log)
        try:
            ros.wait_for(running[name], timeout=90, what=f"the {name} to run")
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)  # not a synchronisation: launch's own SIGINT comes a moment after the terminal's
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log_path.read_text(errors="replace")
    assert code == 0 and "Traceback" not in output, output
    if name == "evaluator":
        assert _report(out)["finished_because"].startswith("interrupted (SIGINT)")


def test_sigterm_while_evaluating_writes_the_report(ros, bag, tmp_path):
    out = tmp_path / "report"
    namespace = f"{ros.namespace}/term"
    log_path = tmp_path / "evaluator.log"
    with open(log_path, "wb") as log:
        proc = _entry(ros, "evaluator", ["-r", f"__ns:={namespace}", "-p", f"output_dir:={out}",
                                         "-p", f"bag:={bag}"], log)
        try:  # running: its subscription is in the graph
            ros.wait_for(lambda: ros.node.count_subscribers(f"{namespace}/semantic") > 0, timeout=90,
                         what="the evaluator to subscribe")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert code == 0, log_path.read_text(errors="replace")
    assert _report(out)["finished_because"] == "terminated (SIGTERM) before any frame was evaluated"
    progress = json.loads((out / "progress.json").read_text())
    assert progress == {"evaluated": 0, "expected": 6, "finished": True}


# ------------------------------------------------------------------------------------ replay.launch.py

def _launch_requirements() -> str | None:
    """None when `ros2 launch mtan_ros replay.launch.py` can run here, else why not."""
    import importlib.util
    import shutil

    if shutil.which("ros2") is None or importlib.util.find_spec("launch_ros") is None:
        return "ros2 launch is not installed (it comes with a ROS 2 installation, not from PyPI)"
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("mtan_ros")
    except Exception as exc:  # PackageNotFoundError, or no AMENT_PREFIX_PATH at all
        return f"mtan_ros is not installed in an ament prefix ({type(exc).__name__}); colcon build and source it"
    return None


def _ros2_launch(ros: RosSession, arguments: list[str], log_path) -> int:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["ros2", "launch", "mtan_ros", "replay.launch.py", *arguments], env=ros.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_replay_launch_lockstep_scores_every_frame(ros, bag, topics, tmp_path, tiny_checkpoint):
    reason = _launch_requirements()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "report"
    namespace = topics.image.rsplit("/", 1)[0]
    code = _ros2_launch(ros, [f"bag:={bag}", f"model_path:={tiny_checkpoint}", f"namespace:={namespace}",
                              "lockstep:=true", "rate:=0", "device:=cpu", f"output_dir:={out}"],
                        tmp_path / "launch.log")
    assert code == 0, (tmp_path / "launch.log").read_text(errors="replace")
    report = _report(out)
    assert report["finished_because"] == "all 6 frames evaluated"
    assert (report["frames_in"], report["frames_out"], report["dropped"]) == (6, 6, 0)


def test_replay_launch_without_ros2_bag_fails_and_still_reports(ros, bag, topics, tmp_path, tiny_checkpoint):
    import importlib.util

    reason = _launch_requirements()
    if reason:
        pytest.skip(reason)
    if importlib.util.find_spec("ros2bag") is not None:
        pytest.skip("ros2 bag is installed here: the missing-ros2bag path cannot be shown")
    out = tmp_path / "report"
    log = tmp_path / "launch.log"
    namespace = topics.image.rsplit("/", 1)[0]
    code = _ros2_launch(ros, [f"bag:={bag}", f"model_path:={tiny_checkpoint}", f"namespace:={namespace}",
                              "player:=ros2bag", f"output_dir:={out}"], log)
    assert code != 0, log.read_text(errors="replace")
    # The error message is the contract here: one line that names the fix.
    assert "ros2 bag is not installed: install ros-" in log.read_text(errors="replace")
    assert _report(out)["frames_in"] == 0
