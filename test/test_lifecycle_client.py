"""mtan_ros.ros.lifecycle_client against small rclpy lifecycle nodes made here (isolated domain).

The watcher must follow a node through its states, wait for a node that does not exist
yet, follow it through a restart without reporting a stale state, and say clearly when a
node is not a lifecycle node or did not get where it was expected to.
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")

from ros_helpers import RosSession  # noqa: E402

from mtan_ros.errors import LifecycleStateError, NodeStartupError  # noqa: E402
from mtan_ros.ros.lifecycle_client import LifecycleWatcher, split_fqn, wait_for_state  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_lifecycle_client") as session:
        yield session


class Managed:
    """A lifecycle node in the test's own executor (created and destroyed by the test)."""

    def __init__(self, ros: RosSession, name: str) -> None:
        from rclpy.lifecycle import LifecycleNode

        self.ros = ros
        self.node = LifecycleNode(name, namespace=ros.namespace, context=ros.context)
        ros.executor.add_node(self.node)

    def destroy(self) -> None:
        self.ros.executor.remove_node(self.node)
        self.node.destroy_node()


def _state(ros: RosSession, watcher: LifecycleWatcher, state: str, what: str) -> None:
    ros.wait_for(lambda: watcher.poll() == state, timeout=30, what=what)


def test_split_fqn():
    assert split_fqn("/camera/perception_node") == ("/camera", "perception_node")
    assert split_fqn("perception_node") == ("/", "perception_node")
    assert split_fqn("/a/b/c/") == ("/a/b", "c")
    with pytest.raises(ValueError):
        split_fqn("/")


def test_follows_a_node_that_appears_later_through_its_states(ros):
    target = f"{ros.namespace}/later"
    watcher = LifecycleWatcher(ros.node, target)
    try:
        for _ in range(10):  # nothing there: no state, and the words say so
            watcher.poll()
            ros.spin_for(0.05)
        assert watcher.state is None and watcher.kind == "unseen"
        assert "is not running" in watcher.describe() and target in watcher.describe()
        managed = Managed(ros, "later")
        try:
            _state(ros, watcher, "unconfigured", "the new node's first state")
            assert watcher.kind == "lifecycle"
            managed.node.trigger_configure()
            _state(ros, watcher, "inactive", "inactive after configure")
            assert "'inactive'" in watcher.describe()
            managed.node.trigger_activate()
            _state(ros, watcher, "active", "active after activate")
            wait_for_state(ros.node, target, "active", timeout=30, executor=ros.executor)
        finally:
            managed.destroy()
    finally:
        watcher.close()


def test_a_node_that_stops_short_of_active_is_named_with_its_state(ros):
    managed = Managed(ros, "stuck")
    try:
        managed.node.trigger_configure()
        with pytest.raises(LifecycleStateError) as caught:
            wait_for_state(ros.node, f"{ros.namespace}/stuck", "active", timeout=3, executor=ros.executor)
        message = str(caught.value)
        assert f"{ros.namespace}/stuck" in message and "'inactive'" in message and "'active'" in message
        assert isinstance(caught.value, NodeStartupError)
    finally:
        managed.destroy()


def test_a_node_that_never_runs_is_reported_as_not_running(ros):
    with pytest.raises(LifecycleStateError) as caught:
        wait_for_state(ros.node, f"{ros.namespace}/nobody", timeout=1, executor=ros.executor)
    assert "is not running" in str(caught.value) and f"{ros.namespace}/nobody" in str(caught.value)


def test_a_plain_node_is_said_not_to_be_a_lifecycle_node(ros):
    import rclpy

    plain = rclpy.create_node("plain", namespace=ros.namespace, context=ros.context)
    ros.executor.add_node(plain)
    try:
        with pytest.raises(LifecycleStateError) as caught:
            wait_for_state(ros.node, f"{ros.namespace}/plain", timeout=60, executor=ros.executor)
        message = str(caught.value)
        assert "is not a lifecycle (managed) node" in message and f"{ros.namespace}/plain/get_state" in message
    finally:
        ros.executor.remove_node(plain)
        plain.destroy_node()


def test_a_restarted_node_is_followed_without_a_stale_state(ros):
    target = f"{ros.namespace}/restarting"
    watcher = LifecycleWatcher(ros.node, target, request_timeout=1.0)
    first = Managed(ros, "restarting")
    try:
        first.node.trigger_configure()
        first.node.trigger_activate()
        _state(ros, watcher, "active", "the first run to be active")
        first.destroy()
        ros.wait_for(lambda: watcher.poll() is None and watcher.last_state == "active", timeout=30,
                     what="the watcher to notice that the node is gone")
        assert not watcher.reached("active")
        assert "'active'" in watcher.describe()  # the last state it reported, named as such
        second = Managed(ros, "restarting")
        try:
            _state(ros, watcher, "unconfigured", "the second run's first state")
            second.node.trigger_configure()
            second.node.trigger_activate()
            _state(ros, watcher, "active", "the second run to be active")
        finally:
            second.destroy()
    finally:
        watcher.close()
