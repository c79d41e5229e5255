"""Waiting for another node's lifecycle state, asked through its `get_state` service.

Why: a managed node exists, and may already have its publishers, long before it can do
its work (configure loads the model, activate subscribes). Its lifecycle state is the one
signal that means "ready"; log lines and "something publishes depth" are not.

`LifecycleWatcher` never blocks, so a node that spins for its own reasons (the bag player
keeps /clock going) can call `poll()` inside its loop; `wait_for_state` is the blocking
form. Both tolerate a service that does not exist yet (the node is still starting), a node
that restarts (a request that gets no answer is dropped and asked again) and say clearly
when the node is running but is not a lifecycle node at all.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.node import Node

from mtan_ros.errors import LifecycleStateError

ACTIVE = "active"
GET_STATE_TYPE = "lifecycle_msgs/srv/GetState"


def split_fqn(fqn: str) -> tuple[str, str]:
    """(namespace, name) of a node's full name, e.g. ("/camera", "perception_node"); relative = absolute."""
    path = "/" + fqn.strip().strip("/")
    namespace, _, name = path.rpartition("/")
    if not name:
        raise ValueError(f"{fqn!r} is not a node name; expected e.g. /camera/perception_node")
    return namespace or "/", name


class LifecycleWatcher:
    """Keeps asking `target`'s get_state service and remembers the answer.

    `state` is the state reported by the node as it runs now (None while it does not
    answer); `last_state` the last one it ever reported. The first request goes out
    `settle` seconds after the service appeared. `kind` is "unseen" (no node of
    that name in the graph), "lifecycle", or "plain" (the node runs, offers services, and
    none of them is get_state, for `plain_after` seconds).
    """

    def __init__(self, node: Node, target: str, *, period: float = 0.2, request_timeout: float = 2.0,
                 plain_after: float = 3.0, settle: float = 0.5) -> None:
        self.node = node
        self.namespace, self.name = split_fqn(target)
        self.target = f"{self.namespace.rstrip('/')}/{self.name}"
        self.service = f"{self.target}/get_state"
        self.period = period
        self.request_timeout = request_timeout
        self.plain_after = plain_after
        self.settle = settle
        self._ready_since: Optional[float] = None
        self.client = node.create_client(GetState, self.service)
        self.state: Optional[str] = None
        self.last_state: Optional[str] = None
        self.kind = "unseen"
        self.seen = False  # ever present in the graph
        self._future: Any = None
        self._sent_at = 0.0
        self._next_at = 0.0
        self._plain_since: Optional[float] = None
        self._unanswered = 0

    def poll(self) -> Optional[str]:
        """Collect an answer, send the next request when due; returns `state`. Spin the node between calls."""
        now = time.monotonic()
        if self._future is not None:
            if self._future.done():
                self._take_answer(self._future)
                self._future = None
            elif now - self._sent_at > self.request_timeout:
                # No answer: the node is gone or restarting. Forget the request and ask again.
                self.client.remove_pending_request(self._future)
                self._future = None
                self.state = None
                self._unanswered += 1
        if self._future is None and now >= self._next_at:
            self._next_at = now + self.period
            if self.client.service_is_ready():
                # The client sees the service before the service sees the client's reply reader: a
                # request sent at once gets no answer (and a "failed to send response" warning there).
                self._ready_since = now if self._ready_since is None else self._ready_since
                if now - self._ready_since >= self.settle:
                    self._future = self.client.call_async(GetState.Request())
                    self._sent_at = now
            else:
                self._ready_since = None
                self.state = None
                self._classify(now)
        return self.state

    def reached(self, state: str = ACTIVE) -> bool:
        return self.state == state

    def _take_answer(self, future: Any) -> None:
        try:
            response = future.result()
        except Exception:  # the request was cancelled or failed: ask again
            response = None
        if response is None:
            self.state = None
            return
        self.state = self.last_state = response.current_state.label
        self.kind, self.seen, self._plain_since, self._unanswered = "lifecycle", True, None, 0

    def _classify(self, now: float) -> None:
        """Without a get_state server: is the node there at all, and does it offer get_state?"""
        if (self.name, self.namespace) not in set(self.node.get_node_names_and_namespaces()):
            self._plain_since = None
            if self.kind == "plain":
                self.kind = "unseen"
            return
        self.seen = True
        try:
            services = self.node.get_service_names_and_types_by_node(self.name, self.namespace)
        except Exception:  # the node left the graph between the two calls
            return
        if any(name == self.service and GET_STATE_TYPE in types for name, types in services):
            self.kind, self._plain_since = "lifecycle", None  # discovered, the client is not matched yet
        elif services:
            self._plain_since = now if self._plain_since is None else self._plain_since
            if now - self._plain_since >= self.plain_after:
                self.kind = "plain"

    def describe(self) -> str:
        """Where the node stands, in words, for messages."""
        if self.kind == "plain":
            return (f"{self.target} is running but is not a lifecycle (managed) node: it offers no "
                    f"{self.service} service ({GET_STATE_TYPE}), so its state cannot be asked")
        if self.state is not None:
            return f"{self.target} is in lifecycle state '{self.state}'"
        last = f" (last state it reported: '{self.last_state}')" if self.last_state else ""
        if self._unanswered:
            return f"{self.service} did not answer{last}; the node may be restarting or busy"
        if self.seen or self.kind == "lifecycle":
            return f"{self.target} is starting: its {self.service} service is not available yet{last}"
        return (f"{self.target} is not running: no node of that name in the ROS graph (same ROS_DOMAIN_ID? "
                f"right namespace?){last}")

    def close(self) -> None:
        """Destroy the service client (the watcher cannot be used afterwards)."""
        if self._future is not None:
            self.client.remove_pending_request(self._future)
            self._future = None
        self.node.destroy_client(self.client)


def wait_for_state(node: Node, target: str, state: str = ACTIVE, timeout: float = 60.0, *,
                   executor: Any = None, spin_once: Optional[Callable[[float], None]] = None) -> None:
    """Spin until `target` (e.g. "/camera/perception_node") reports lifecycle `state`.

    Spins with `spin_once(seconds)` if given, else `executor.spin_once`, else
    `rclpy.spin_once(node)`. Raises LifecycleStateError naming the node and where it
    stands on timeout, or as soon as the node turns out not to be a lifecycle node.
    """
    if spin_once is None:
        if executor is not None:
            def spin_once(seconds: float) -> None:
                executor.spin_once(timeout_sec=seconds)
        else:
            def spin_once(seconds: float) -> None:
                rclpy.spin_once(node, timeout_sec=seconds)
    watcher = LifecycleWatcher(node, target)
    end = time.monotonic() + timeout
    try:
        while True:
            if watcher.poll() == state:
                return
            if watcher.kind == "plain":
                raise LifecycleStateError(f"cannot wait for {watcher.target} to be '{state}': {watcher.describe()}")
            left = end - time.monotonic()
            if left <= 0:
                raise LifecycleStateError(f"{watcher.target} did not reach lifecycle state '{state}' within "
                                          f"{timeout:g} s: {watcher.describe()}")
            spin_once(min(0.05, left))
    finally:
        watcher.close()
