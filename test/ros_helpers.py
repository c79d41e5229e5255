"""Helpers for tests that talk to real ROS 2 nodes over DDS (no launch needed).

Why: two-process tests are only reliable when each test module is isolated
(its own ROS_DOMAIN_ID, ROS_LOG_DIR and namespace), waits for discovery instead
of sleeping, and never leaves a node process behind. Everything here serves that.

    with RosSession("test_x") as ros, NodeProcess(ros, ["--ros-args", ...]) as node:
        pub = ros.node.create_publisher(Image, node.topic("image_raw"), 10)
        ros.wait_for(lambda: pub.get_subscription_count() > 0)
"""
from __future__ import annotations

import array
import os
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtan_ros.common.processes import ChildGroup

REPO = Path(__file__).resolve().parents[1]


def domain_id_for(name: str) -> int:
    """A ROS_DOMAIN_ID in 1..100 from the module name and this process, so parallel runs rarely meet."""
    return 1 + (zlib.crc32(name.encode()) + os.getpid()) % 100


def unique_namespace(name: str) -> str:
    """A namespace no other test run uses, so even a shared domain cannot mix topics."""
    return f"/{''.join(c if c.isalnum() else '_' for c in name)}_{os.getpid()}"


def ros_environment(domain_id: int, log_dir: str) -> dict[str, str]:
    """os.environ plus the isolation variables, for child processes."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_LOG_DIR=log_dir,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
        RCUTILS_LOGGING_BUFFERED_STREAM="0",
    )
    return env


class RosSession:
    """An rclpy context + node of the test process on an isolated domain, with spin helpers."""

    def __init__(self, name: str, domain_id: int | None = None) -> None:
        self.name = name
        self.domain_id = domain_id_for(name) if domain_id is None else domain_id
        self.namespace = unique_namespace(name)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{name}_ros_")
        self.log_dir = self._tmp.name
        self.env = ros_environment(self.domain_id, self.log_dir)
        self.context: Any = None
        self.node: Any = None
        self.executor: Any = None

    def __enter__(self) -> "RosSession":
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        saved = {k: os.environ.get(k) for k in ("ROS_LOG_DIR", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
        os.environ["ROS_LOG_DIR"] = self.log_dir
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        try:
            self.context = Context()
            rclpy.init(context=self.context, domain_id=self.domain_id)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.node = rclpy.create_node(f"tester_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.executor is not None:
                self.executor.shutdown()
            if self.node is not None:
                self.node.destroy_node()
            if self.context is not None:
                self.context.try_shutdown()
        finally:
            self._tmp.cleanup()

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
        """Spin until predicate() is truthy; returns its value, raises TimeoutError naming `what`."""
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def stamp(self, seconds: float | None = None) -> Any:
        """A builtin_interfaces/Time for `seconds` (default: now on the wall clock)."""
        from builtin_interfaces.msg import Time

        seconds = time.time() if seconds is None else seconds
        return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)) % 1_000_000_000)


def lifecycle_state(session: RosSession, node_fqn: str, timeout: float = 10.0) -> str:
    """The current lifecycle state label of `node_fqn` (through its get_state service)."""
    from lifecycle_msgs.srv import GetState

    client = session.node.create_client(GetState, f"{node_fqn}/get_state")
    try:
        session.wait_for(client.service_is_ready, timeout, f"{node_fqn}/get_state")
        future = client.call_async(GetState.Request())
        session.wait_for(future.done, timeout, f"{node_fqn}/get_state reply")
        return future.result().current_state.label
    finally:
        session.node.destroy_client(client)


def change_state(session: RosSession, node_fqn: str, transition: str, timeout: float = 120.0) -> bool:
    """Ask `node_fqn` for a lifecycle transition by label (configure, activate, ...); True on success."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = session.node.create_client(ChangeState, f"{node_fqn}/change_state")
    try:
        session.wait_for(client.service_is_ready, 20.0, f"{node_fqn}/change_state")
        future = client.call_async(ChangeState.Request(transition=Transition(label=transition)))
        session.wait_for(future.done, timeout, f"{node_fqn} {transition}")
        return bool(future.result().success)
    finally:
        session.node.destroy_client(client)


class NodeProcess:
    """A node started as a subprocess (python -m MODULE ARGS); killed on exit whatever happens."""

    def __init__(self, session: RosSession, args: list[str], module: str = "mtan_ros.ros.node.perception_node",
                 namespace: str | None = None, extra_env: dict[str, str | None] | None = None) -> None:
        self.session = session
        self.namespace = session.namespace if namespace is None else namespace
        self.log_path = Path(session.log_dir) / f"{module.rsplit('.', 1)[-1]}_{time.monotonic_ns()}.log"
        ros_args = list(args)
        if "--ros-args" not in ros_args:
            ros_args.append("--ros-args")
        ros_args += ["-r", f"__ns:={self.namespace}"]
        self.command = [sys.executable, "-m", module, *ros_args]
        self.env = dict(session.env)
        for key, value in (extra_env or {}).items():  # None removes a variable
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.child = ChildGroup(self.command, env=self.env, log_path=self.log_path, cwd=REPO)

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.child.proc

    def topic(self, name: str) -> str:
        return name if name.startswith("/") else f"{self.namespace}/{name}"

    def start(self) -> "NodeProcess":
        self.child.start()
        return self

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    def alive(self) -> bool:
        return self.child.alive()

    def output(self) -> str:
        return self.child.output()

    def wait_for_output(self, text: str, timeout: float = 20.0) -> str:
        """Block until the node's output contains `text` (or it exits); returns the output."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self.output()
            if text in out:
                return out
            if not self.alive():
                raise AssertionError(f"node exited with {self.proc.returncode} before printing {text!r}:\n{out}")
            time.sleep(0.05)
        raise TimeoutError(f"node did not print {text!r} within {timeout:.0f} s:\n{self.output()}")

    @property
    def fqn(self) -> str:
        """Fully qualified name of the perception node in this process."""
        return f"{self.namespace}/perception_node"

    def wait_until_state(self, label: str = "active", timeout: float = 120.0) -> None:
        """Block until the node reports lifecycle state `label` (or its process exits)."""
        end = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < end:
            if not self.alive():
                raise AssertionError(f"node exited with {self.proc.returncode} in state {state}:\n{self.output()}")
            try:
                state = lifecycle_state(self.session, self.fqn, timeout=5.0)
            except TimeoutError:
                continue
            if state == label:
                return
            self.session.spin_for(0.2)
        raise TimeoutError(f"node still {state!r}, not {label!r}, after {timeout:.0f} s:\n{self.output()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send `sig` (Ctrl-C by default) and return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        self.child.kill()


def make_image_msg(pixels: np.ndarray, encoding: str, *, stamp: Any = None, frame_id: str = "camera_optical_frame",
                   padding: int = 0, bigendian: bool = False) -> Any:
    """A sensor_msgs/Image of `pixels` (H x W (x C)) with optional row padding and byte order."""
    from sensor_msgs.msg import Image

    height, width = pixels.shape[:2]
    data = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"), copy=False)
    rows = np.ascontiguousarray(data).view(np.uint8).reshape(height, -1)
    if padding:
        rows = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=rows.shape[1])
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = array.array("B", rows.tobytes())
    return msg


def synthetic_street(height: int = 96, width: int = 160, seed: int = 0) -> np.ndarray:
    """A small deterministic RGB street-like scene (sky, buildings, road, a car), H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    horizon = height // 2
    img[:horizon] = (135, 185, 235)
    img[horizon:] = (90, 90, 95)
    for x0 in range(0, width, max(8, width // 6)):
        top = int(rng.integers(height // 8, horizon))
        img[top:horizon, x0:x0 + width // 8] = rng.integers(60, 200, 3)
    img[horizon + height // 6: horizon + height // 3, width // 3: width // 2] = (200, 30, 30)
    noise = rng.integers(-8, 9, img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def camera_info_msg(width: int, height: int, *, fx: float | None = None, stamp: Any = None,
                    frame_id: str = "camera_optical_frame") -> Any:
    """A pinhole sensor_msgs/CameraInfo for an image of this size (principal point at the centre)."""
    from sensor_msgs.msg import CameraInfo

    fx = float(fx if fx is not None else width)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    if stamp is not None:
        info.header.stamp = stamp
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def image_to_array(msg: Any) -> np.ndarray:
    """Image message -> array with our converter (handles padding and byte order)."""
    from mtan_ros.ros.camera.image_messages import image_msg_to_array

    return np.array(image_msg_to_array(msg))


def stamp_key(stamp: Any) -> tuple[int, int]:
    return (int(stamp.sec), int(stamp.nanosec))


class Collector:
    """Subscribes to topics and keeps messages by header stamp, with their receive time."""

    def __init__(self, session: RosSession, topics: dict[str, Any], qos: Any = None) -> None:
        from mtan_ros.ros.camera.qos import image_output_qos_for_subscribers

        qos = qos or image_output_qos_for_subscribers()
        self.session = session
        self.messages: dict[str, dict[tuple[int, int], Any]] = {name: {} for name in topics}
        self.received_at: dict[str, dict[tuple[int, int], float]] = {name: {} for name in topics}
        self.subs = {
            name: session.node.create_subscription(msg_type, name, self._callback(name), qos)
            for name, msg_type in topics.items()
        }

    def _callback(self, name: str) -> Callable[[Any], None]:
        def store(msg: Any) -> None:
            key = stamp_key(msg.header.stamp)
            self.messages[name][key] = msg
            self.received_at[name][key] = time.time()

        return store

    def connected(self) -> bool:
        return all(sub.get_publisher_count() > 0 for sub in self.subs.values())

    def has(self, stamp: Any, names: list[str] | None = None) -> bool:
        key = stamp_key(stamp)
        return all(key in self.messages[name] for name in (names or list(self.messages)))

    def get(self, name: str, stamp: Any) -> Any:
        return self.messages[name][stamp_key(stamp)]

    def destroy(self) -> None:
        for sub in self.subs.values():
            self.session.node.destroy_subscription(sub)


def handles_sigterm(pid: int) -> bool:
    """Whether process `pid` catches SIGTERM, i.e. its entry point's signal handlers are in place (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def publish_until(session: RosSession, publish: Callable[[], None], done: Callable[[], bool],
                  timeout: float = 30.0, resend_every: float = 2.0, what: str = "outputs") -> None:
    """Publish, then spin until done(); re-publish every `resend_every` s (best effort may lose one)."""
    end = time.monotonic() + timeout
    while True:
        publish()
        next_send = time.monotonic() + resend_every
        while time.monotonic() < next_send:
            if done():
                return
            if time.monotonic() > end:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            session.executor.spin_once(timeout_sec=0.02)


def set_parameters(session: RosSession, node_fqn: str, values: dict[str, Any], timeout: float = 20.0) -> list[Any]:
    """Call NODE/set_parameters; returns the SetParametersResult list (one per value)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = session.node.create_client(SetParameters, f"{node_fqn}/set_parameters")
    try:
        session.wait_for(lambda: client.service_is_ready(), timeout, f"{node_fqn}/set_parameters")
        messages = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        request = SetParameters.Request(parameters=messages)
        future = client.call_async(request)
        session.wait_for(future.done, timeout, "set_parameters reply")
        return list(future.result().results)
    finally:
        session.node.destroy_client(client)


def make_checkpoint_variant(source: str | os.PathLike, out: str | os.PathLike, **meta_changes: Any) -> str:
    """A copy of checkpoint `source` with some CheckpointMeta fields replaced (e.g. depth=...)."""
    import dataclasses

    from mtan_ros.model.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(source)
    meta = dataclasses.replace(checkpoint.meta, **meta_changes)
    return str(save_checkpoint(out, checkpoint.state_dict, meta))


def make_random_checkpoint(out: str | os.PathLike, *, width: float, input_size: tuple[int, int],
                           num_classes: int = 7, seed: int = 0) -> str:
    """A random-weight MTAN checkpoint (metric depth, scale 1): conftest.make_checkpoint as a string path."""
    from conftest import make_checkpoint

    return str(make_checkpoint(out, width=width, input_size=input_size, num_classes=num_classes, seed=seed))


class DiagnosticsWatch:
    """The latest /diagnostics status of one perception node, or of one of its `cameras` (values as a dict)."""

    def __init__(self, session: RosSession, node_fqn: str, camera: str = "") -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.session = session
        self.name = f"{node_fqn}: perception" + (f" {camera}" if camera else "")
        self.status: Any = None
        self.values: dict[str, str] = {}
        self.sub = session.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == self.name:
                self.status = status
                self.values = {kv.key: kv.value for kv in status.values}

    def wait(self, predicate: Callable[[dict[str, str]], Any], timeout: float = 30.0, what: str = "") -> dict[str, str]:
        """Spin until the latest values satisfy `predicate`; returns them."""
        self.session.wait_for(lambda: self.values and predicate(self.values), timeout,
                              what or f"diagnostics of {self.name}")
        return self.values

    def count(self, key: str) -> int:
        return int(self.values.get(key, 0))

    def destroy(self) -> None:
        self.session.node.destroy_subscription(self.sub)
