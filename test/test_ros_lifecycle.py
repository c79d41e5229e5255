"""The perception node as a managed node, driven over DDS with the standard lifecycle services.

What a lifecycle manager (or `ros2 lifecycle set`) does: deactivate stops taking frames
(the subscription disappears, the model stays), activate resumes, cleanup releases the
model, and configure loads whatever model_path says now — a model is swapped without
restarting the process. With autostart:=false the node waits unconfigured, and a failed
configure leaves it alive and unconfigured with one error line.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")
pytest.importorskip("torch", reason="needs torch for the Predictor")

from ros_helpers import (  # noqa: E402
    Collector,
    NodeProcess,
    RosSession,
    change_state,
    image_to_array,
    lifecycle_state,
    make_checkpoint_variant,
    make_image_msg,
    publish_until,
    set_parameters,
    synthetic_street,
)
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]
NODE_ARGS = ["-p", "device:=cpu", "-p", "precision:=fp32", "-p", "max_depth:=10000.0"]


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_lifecycle") as session:
        yield session


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint, tmp_path_factory):
    """The same weights twice, the second reporting depth in units twice as large."""
    from mtan_ros.depth_encoding import DepthEncoding

    doubled = make_checkpoint_variant(tiny_checkpoint, tmp_path_factory.mktemp("lifecycle") / "doubled.pt",
                                      depth=DepthEncoding("metric", 2.0))
    return str(tiny_checkpoint), doubled


def depth_of(ros, node, pub, collector, seed):
    msg = make_image_msg(synthetic_street(48, 96, seed=seed), "rgb8", stamp=ros.stamp())
    publish_until(ros, lambda: pub.publish(msg), lambda: collector.has(msg.header.stamp), timeout=60,
                  what="depth")
    return image_to_array(collector.get(node.topic("depth"), msg.header.stamp))


def test_deactivate_activate_cleanup_configure_with_another_model(ros, checkpoints):
    first, second = checkpoints
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={first}", *NODE_ARGS]) as node:
        node.wait_until_state("active")
        pub = ros.node.create_publisher(Image, node.topic("image_raw"), 10)
        collector = Collector(ros, {node.topic("depth"): Image})
        ros.wait_for(lambda: pub.get_subscription_count() > 0 and collector.connected(), 60, "discovery")
        before = depth_of(ros, node, pub, collector, seed=1)

        assert change_state(ros, node.fqn, "deactivate")
        assert lifecycle_state(ros, node.fqn) == "inactive"
        ros.wait_for(lambda: pub.get_subscription_count() == 0, 30, "the camera subscription to go away")
        assert collector.connected()  # outputs stay advertised while inactive

        assert change_state(ros, node.fqn, "activate")
        ros.wait_for(lambda: pub.get_subscription_count() > 0, 30, "the camera subscription to come back")
        np.testing.assert_allclose(depth_of(ros, node, pub, collector, seed=1), before, rtol=1e-6)

        (refused,) = set_parameters(ros, node.fqn, {"model_path": second})
        assert not refused.successful and "cleanup" in refused.reason
        assert change_state(ros, node.fqn, "deactivate")
        assert change_state(ros, node.fqn, "cleanup")
        assert lifecycle_state(ros, node.fqn) == "unconfigured"
        ros.wait_for(lambda: not collector.connected(), 30, "the outputs to go away with the model")
        (accepted,) = set_parameters(ros, node.fqn, {"model_path": second})
        assert accepted.successful, accepted.reason
        assert change_state(ros, node.fqn, "configure")
        assert change_state(ros, node.fqn, "activate")
        assert lifecycle_state(ros, node.fqn) == "active"
        ros.wait_for(lambda: pub.get_subscription_count() > 0 and collector.connected(), 60, "rediscovery")
        after = depth_of(ros, node, pub, collector, seed=1)
        np.testing.assert_allclose(after, 2.0 * before, rtol=1e-5)  # the second model is the one running
        assert node.stop() == 0
        assert "Traceback" not in node.output()


def test_without_autostart_the_node_waits_and_a_failed_configure_keeps_it_alive(ros, checkpoints, tmp_path):
    missing = tmp_path / "missing.pt"
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={missing}", "-p", "autostart:=false", *NODE_ARGS],
                     namespace=ros.namespace + "_manual") as node:
        node.wait_until_state("unconfigured")
        assert not change_state(ros, node.fqn, "configure")
        assert lifecycle_state(ros, node.fqn) == "unconfigured" and node.alive()
        errors = [line for line in node.output().splitlines() if "[ERROR]" in line]
        assert len(errors) == 1 and "missing.pt" in errors[0] and "not found" in errors[0], node.output()
        (accepted,) = set_parameters(ros, node.fqn, {"model_path": checkpoints[0]})
        assert accepted.successful
        assert change_state(ros, node.fqn, "configure")
        assert lifecycle_state(ros, node.fqn) == "inactive"
        assert change_state(ros, node.fqn, "activate")
        assert lifecycle_state(ros, node.fqn) == "active"
        (read_only,) = set_parameters(ros, node.fqn, {"autostart": True})
        assert not read_only.successful
        assert node.stop() == 0
