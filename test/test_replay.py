"""bag_player and evaluator as real ROS 2 nodes over DDS (subprocesses, isolated domain).

- free play: the recorded rate (and the `rate` multiplier) within a tolerance, /clock from the
  bag's time, and an evaluator without a perception node that counts every frame as dropped
  and finishes on its idle timeout;
- lockstep with the perception node and use_sim_time: zero drops, and the evaluator's numbers
  equal the training metric code on the very messages the node published (and, within
  floating-point noise, on a Predictor run offline on the bag's images);
- a truncated bag is played up to its last intact frame, then the player exits with an error.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_helpers import Collector, NodeProcess, RosSession, image_to_array  # noqa: E402

from mtan_ros.bags import messages as m  # noqa: E402
from mtan_ros.bags.make_bag import BagTopics, write_bag  # noqa: E402
from mtan_ros.bags.reader import open_bag, read_all  # noqa: E402

SIZE = (64, 128)
BAG_RATE = 5.0


@pytest.fixture(scope="module")
def ros():
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


def test_free_play_keeps_the_recorded_rate_and_clock(ros, bag, topics, tmp_path):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    base = topics.image.rsplit("/", 1)[0]
    clocks: list[int] = []
    clock_sub = ros.node.create_subscription(Clock, "/clock", lambda c: clocks.append(
        c.clock.sec * 10**9 + c.clock.nanosec), 10)
    out = tmp_path / "report"
    evaluator = NodeProcess(ros, ["--ros-args", "-p", f"output_dir:={out}", "-p", f"bag:={bag}",
                                  "-p", "idle_timeout:=2.0"], module="mtan_ros.ros.evaluator", namespace=base)
    spans = {}
    try:
        for rate in (2.0, 1.0):
            collector = Collector(ros, {topics.image: Image})
            wait = [topics.image]
            if rate == 1.0:  # with an evaluator (and no perception node) listening
                evaluator.start()
                evaluator.wait_for_output("evaluating", timeout=60)
                wait.append(topics.depth_gt)
            args = ["--ros-args", "-p", f"bag:={bag}", "-p", f"rate:={rate}", "-p", "publish_clock:=true",
                    "-p", "wait_timeout:=30.0", "-p", "start_delay:=1.0",
                    "-p", f"wait_for_subscribers:={wait!r}"]
            with NodeProcess(ros, args, module="mtan_ros.ros.bag_player") as player:
                ros.wait_for(lambda: not player.alive(), timeout=60, what="the player to finish")
                assert player.proc.returncode == 0, player.output()
                assert "played 6 frames" in player.output() and "playing without" not in player.output()
            ros.wait_for(lambda: len(collector.received_at[topics.image]) == 6, timeout=10, what="6 frames")
            times = sorted(collector.received_at[topics.image].values())
            spans[rate] = times[-1] - times[0]
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
    # No perception node ran: every frame came in, none came out.
    assert (report["frames_in"], report["frames_out"], report["dropped"]) == (6, 0, 6)
    assert report["finished_because"].startswith("nothing received")


def test_lockstep_with_the_node_drops_nothing_and_scores_like_the_training_code(
        ros, bag, topics, tmp_path, tiny_checkpoint):
    import torch
    from sensor_msgs.msg import Image

    from mtan_ros.inference import Predictor
    from mtan_ros.training.metrics import ConfusionMatrix, DepthErrors

    base = topics.image.rsplit("/", 1)[0]
    out = tmp_path / "report"
    sim = ["-p", "use_sim_time:=true"]
    node = NodeProcess(ros, ["--ros-args", "-p", f"model_path:={tiny_checkpoint}", "-p", "precision:=fp32",
                             "-p", "device:=cpu", *sim], namespace=base)
    evaluator = NodeProcess(ros, ["--ros-args", "-p", f"output_dir:={out}", "-p", f"bag:={bag}",
                                  "-p", f"model_path:={tiny_checkpoint}", "-p", "idle_timeout:=60.0", *sim],
                            module="mtan_ros.ros.evaluator", namespace=base)
    collector = Collector(ros, {f"{base}/depth": Image, f"{base}/semantic": Image})
    try:
        node.start()
        evaluator.start()
        node.wait_for_output("ready", timeout=90)
        evaluator.wait_for_output("evaluating", timeout=90)
        wait = f"['{topics.image}','{topics.depth_gt}','{topics.semantic_gt}','{base}/semantic']"
        player = NodeProcess(ros, ["--ros-args", "-p", f"bag:={bag}", "-p", "lockstep:=true", "-p", "rate:=0.0",
                                   "-p", f"lockstep_topic:={base}/depth", "-p", "publish_clock:=true",
                                   "-p", "start_delay:=1.0", "-p", f"wait_for_subscribers:={wait}"],
                             module="mtan_ros.ros.bag_player")
        with player:
            ros.wait_for(lambda: not player.alive(), timeout=120, what="the lockstep player to finish")
            assert player.proc.returncode == 0, player.output()
            assert "played 6 frames" in player.output() and "0 given up" in player.output(), player.output()
        assert _finish(evaluator, 60) == 0, evaluator.output()
        ros.wait_for(lambda: all(len(v) == 6 for v in collector.messages.values()), timeout=10,
                     what="6 predictions of each kind")
        assert node.alive()
        assert node.stop() == 0
    finally:
        for proc in (node, evaluator):
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
        with NodeProcess(ros, args, module="mtan_ros.ros.bag_player") as player:
            ros.wait_for(lambda: not player.alive(), timeout=60, what="the player to finish")
            output = player.output()
            assert player.proc.returncode == 1, output
            assert f"played {intact} frames" in output and "damaged" in output and "playing without" not in output
        ros.wait_for(lambda: len(collector.messages[topics.image]) == intact, timeout=10, what="the intact frames")
    finally:
        collector.destroy()
    time.sleep(0.2)
    assert len(collector.messages[topics.image]) == intact
