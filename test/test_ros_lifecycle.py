"""The perception node as a managed process, driven over DDS with the standard lifecycle services.

What a lifecycle manager (or `ros2 lifecycle set`) does from another process: with
autostart:=false the node waits unconfigured, a failed configure (a real missing
checkpoint) leaves it alive and unconfigured with one error line, and, once model_path
is set through set_parameters, configure and activate through the services load the
model and start it. The transitions themselves
(deactivate, activate, cleanup, reconfigure) are tested in-process (test_node_inprocess.py).
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")
pytest.importorskip("torch", reason="needs torch for the Predictor")

from ros_helpers import NodeProcess, RosSession, change_state, lifecycle_state, set_parameters  # noqa: E402

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]
NODE_ARGS = ["-p", "device:=cpu", "-p", "precision:=fp32"]


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_lifecycle") as session:
        yield session


def test_without_autostart_the_node_waits_and_a_failed_configure_keeps_it_alive(ros, tiny_checkpoint, tmp_path):
    missing = tmp_path / "missing.pt"
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={missing}", "-p", "autostart:=false", *NODE_ARGS],
                     namespace=ros.namespace + "_manual") as node:
        node.wait_until_state("unconfigured")
        assert not change_state(ros, node.fqn, "configure")
        assert lifecycle_state(ros, node.fqn) == "unconfigured" and node.alive()
        errors = [line for line in node.output().splitlines() if "[ERROR]" in line]
        assert len(errors) == 1 and "missing.pt" in errors[0] and "not found" in errors[0], node.output()
        (accepted,) = set_parameters(ros, node.fqn, {"model_path": str(tiny_checkpoint)})
        assert accepted.successful
        assert change_state(ros, node.fqn, "configure")
        assert lifecycle_state(ros, node.fqn) == "inactive"
        assert change_state(ros, node.fqn, "activate")
        assert lifecycle_state(ros, node.fqn) == "active"
        (read_only,) = set_parameters(ros, node.fqn, {"autostart": True})
        assert not read_only.successful
        assert node.stop() == 0
