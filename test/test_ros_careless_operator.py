"""What a careless operator still broke on day two, reproduced the way it was found: over DDS.

One perception node process for the whole file (started with autostart:=false); each
test first brings it to the lifecycle state it needs through the lifecycle services,
so every test also passes alone. Parameters are set, read and described through the
node's own parameter services, as `ros2 param set/get/describe` do.
"""
from __future__ import annotations

import os

import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")
pytest.importorskip("torch", reason="needs torch for the Predictor")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from ros_helpers import (  # noqa: E402
    Collector,
    DiagnosticsWatch,
    NodeProcess,
    RosSession,
    change_state,
    lifecycle_state,
    make_image_msg,
    publish_until,
    set_parameters,
    synthetic_street,
)
from sensor_msgs.msg import Image  # noqa: E402

from mtan_ros.ros.node import perception_params  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
# Integers where the node declares doubles, as people type them on the command line.
NODE_ARGS = ["-p", "autostart:=false", "-p", "device:=cpu", "-p", "precision:=fp32",
             "-p", "diagnostics_period:=1", "-p", "no_input_warning_after:=30"]
# From each lifecycle state, the transitions that lead towards "unconfigured" / "active".
TOWARDS = {
    "unconfigured": {"inactive": "cleanup", "active": "deactivate"},
    "active": {"unconfigured": "configure", "inactive": "activate"},
}


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_careless_operator") as session:
        yield session


@pytest.fixture(scope="module")
def node(ros, tiny_checkpoint):
    with NodeProcess(ros, ["--ros-args", "-p", f"model_path:={tiny_checkpoint}", *NODE_ARGS]) as process:
        process.wait_until_state("unconfigured")
        process.model_path = str(tiny_checkpoint)
        yield process


def bring_to(ros, node, label):
    """Drive the node to lifecycle state `label` ("unconfigured" or "active") with the lifecycle services."""
    for _ in range(3):
        state = lifecycle_state(ros, node.fqn)
        if state == label:
            return
        assert change_state(ros, node.fqn, TOWARDS[label][state]), f"{state} -> {label}:\n{node.output()}"
    assert lifecycle_state(ros, node.fqn) == label


def call(ros, node, service_type, service, request, timeout=20.0):
    client = ros.node.create_client(service_type, f"{node.fqn}/{service}")
    try:
        ros.wait_for(client.service_is_ready, timeout, f"{node.fqn}/{service}")
        future = client.call_async(request)
        ros.wait_for(future.done, timeout, f"{service} reply")
        return future.result()
    finally:
        ros.node.destroy_client(client)


def get_parameter(ros, node, name):
    from rcl_interfaces.srv import GetParameters

    return call(ros, node, GetParameters, "get_parameters", GetParameters.Request(names=[name])).values[0]


def describe_parameter(ros, node, name):
    from rcl_interfaces.srv import DescribeParameters

    reply = call(ros, node, DescribeParameters, "describe_parameters", DescribeParameters.Request(names=[name]))
    return reply.descriptors[0]


# ---------------------------------------------------------------- 6: integers for doubles


DOUBLES = [spec for spec in perception_params.SPECS if spec.kind is float]


@pytest.mark.parametrize("spec", [s for s in DOUBLES if s.applies != "startup"], ids=lambda s: s.name)
def test_an_integer_set_on_a_double_parameter_is_stored_as_a_double(ros, node, spec):
    """`ros2 param set /node max_depth 60`: accepted as 60.0, and describe still says double."""
    value = int(spec.range[1]) if spec.range[1] < 60 else 60
    before = get_parameter(ros, node, spec.name).double_value
    (result,) = set_parameters(ros, node.fqn, {spec.name: value})
    try:
        assert result.successful, result.reason
        stored = get_parameter(ros, node, spec.name)
        assert (stored.type, stored.double_value) == (ParameterType.PARAMETER_DOUBLE, float(value))
        assert describe_parameter(ros, node, spec.name).type == ParameterType.PARAMETER_DOUBLE
    finally:
        set_parameters(ros, node.fqn, {spec.name: before})


def test_an_integer_given_at_start_up_is_a_double(ros, node):
    """`-p diagnostics_period:=1` (read-only) and `-p no_input_warning_after:=30` were declared as integers."""
    for name, value in (("diagnostics_period", 1.0), ("no_input_warning_after", 30.0)):
        stored = get_parameter(ros, node, name)
        assert (stored.type, stored.double_value) == (ParameterType.PARAMETER_DOUBLE, value), name
        assert describe_parameter(ros, node, name).type == ParameterType.PARAMETER_DOUBLE, name


def test_a_string_or_an_out_of_range_integer_for_a_double_is_refused_with_the_reason(ros, node):
    before = get_parameter(ros, node, "max_depth").double_value
    (text,) = set_parameters(ros, node.fqn, {"max_depth": "far"})
    (huge,) = set_parameters(ros, node.fqn, {"max_depth": 100_000})
    assert not text.successful
    assert not huge.successful and "max_depth" in huge.reason and "10000" in huge.reason
    stored = get_parameter(ros, node, "max_depth")
    assert (stored.type, stored.double_value) == (ParameterType.PARAMETER_DOUBLE, before)
    assert describe_parameter(ros, node, "max_depth").type == ParameterType.PARAMETER_DOUBLE


# ---------------------------------------------------------------- 5: unbounded echo, thread count


def test_a_huge_model_path_is_quoted_briefly_in_the_configure_error(ros, node):
    """A 100 KB model_path was quoted in full, twice, in one 200,178-character ERROR line."""
    bring_to(ros, node, "unconfigured")
    huge = "/tmp/" + "m" * 100_000 + "/model.pt"
    (result,) = set_parameters(ros, node.fqn, {"model_path": huge})
    assert result.successful, result.reason
    try:
        start = len(node.output())
        assert not change_state(ros, node.fqn, "configure")
        out = node.wait_for_output("cannot load model_path")[start:]
        line = next(line for line in out.splitlines() if "cannot load model_path" in line)
        assert len(line) < 1000, f"{len(line)} characters"
        assert f"({len(huge)} characters)" in line and "model.pt" in line
        assert max(len(line) for line in out.splitlines()) < 1000
    finally:
        (restored,) = set_parameters(ros, node.fqn, {"model_path": node.model_path})
        assert restored.successful, restored.reason


def test_a_huge_value_refused_by_the_parameter_service_is_quoted_briefly(ros, node):
    (result,) = set_parameters(ros, node.fqn, {"precision": "f" * 100_000})
    assert not result.successful and "precision" in result.reason and len(result.reason) < 300


def test_inference_threads_is_bounded_by_the_cores(ros, node):
    """1024 threads were accepted (configure then took 6.5 s instead of 0.2 s); at most 4 per core now."""
    bring_to(ros, node, "unconfigured")
    cores = len(os.sched_getaffinity(0))
    try:
        for threads in (1024, 4 * cores + 1):
            (too_many,) = set_parameters(ros, node.fqn, {"inference_threads": threads})
            assert not too_many.successful and str(4 * cores) in too_many.reason, threads
        (most,) = set_parameters(ros, node.fqn, {"inference_threads": 4 * cores})
        assert most.successful, most.reason
        assert describe_parameter(ros, node, "inference_threads").integer_range[0].to_value == 4 * cores
    finally:
        set_parameters(ros, node.fqn, {"inference_threads": 0})


# ---------------------------------------------------------------- 1: lock_input_size follows its parameter


def test_lock_input_size_follows_its_parameter_at_once(ros, node):
    """Set true, a 320x240 stream locks; false must release it at once, true lock again on the next frame."""
    bring_to(ros, node, "active")
    pub = ros.node.create_publisher(Image, node.topic("image_raw"), 10)
    collector = Collector(ros, {node.topic("depth"): Image})
    watch = DiagnosticsWatch(ros, node.fqn)
    try:
        ros.wait_for(lambda: pub.get_subscription_count() > 0 and collector.connected(), 60, "discovery")
        watch.wait(lambda values: "frames_rejected" in values, 30)

        def frame(width, height, seed):
            return make_image_msg(synthetic_street(height, width, seed=seed), "rgb8", stamp=ros.stamp())

        def answered(msg):
            publish_until(ros, lambda: pub.publish(msg), lambda: collector.has(msg.header.stamp), timeout=60,
                          what=f"depth for a {msg.width}x{msg.height} frame")
            assert collector.get(node.topic("depth"), msg.header.stamp).width == msg.width

        def refused(msg, locked):
            before = watch.count("frames_rejected")
            pub.publish(msg)
            values = watch.wait(lambda v: int(v["frames_rejected"]) > before, 30, "the refusal")
            assert (f"declares {msg.width}x{msg.height} but this topic delivers {locked[0]}x{locked[1]}"
                    in values["last_problem"])
            assert not collector.has(msg.header.stamp)

        (locked,) = set_parameters(ros, node.fqn, {"lock_input_size": True})
        assert locked.successful, locked.reason
        answered(frame(320, 240, 1))
        refused(frame(640, 480, 2), (320, 240))

        (released,) = set_parameters(ros, node.fqn, {"lock_input_size": False})
        assert released.successful, released.reason
        answered(frame(640, 480, 3))                  # no deactivate/activate needed
        answered(frame(320, 240, 4))

        (relocked,) = set_parameters(ros, node.fqn, {"lock_input_size": True})
        assert relocked.successful, relocked.reason
        answered(frame(640, 480, 5))                  # the next frame sets the lock
        refused(frame(320, 240, 6), (640, 480))
    finally:
        set_parameters(ros, node.fqn, {"lock_input_size": False})
        watch.destroy()
        collector.destroy()
        ros.node.destroy_publisher(pub)
