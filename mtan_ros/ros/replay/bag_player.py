"""`bag_player`: play a rosbag2 into ROS 2, at its recorded rate or in lockstep with the model.

    ros2 run mtan_ros bag_player --ros-args -p bag:=BAG [-p rate:=1.0] [-p lockstep:=true]
        [-p publish_clock:=true]

Why a player of our own next to `ros2 bag play`: an accuracy run must give the
same numbers every time, but a node that always processes the newest frame
drops frames whenever inference is slower than the camera. In `lockstep`
mode the player sends a frame, waits until the node's prediction of it (a
message on `lockstep_topic` with that frame's stamp) has arrived, and only
then sends the next one: nothing is dropped and the run is deterministic. A
frame whose prediction does not come within `lockstep_timeout` is sent again
(`lockstep_retries` times) and then given up, so a lost message never hangs
the run. It also needs no ROS installation (ros2 bag is not on PyPI) and
plays damaged bags up to their last good message.

Messages are published as the raw CDR bytes stored in the bag (no
deserialisation), on the recorded topics, reliable keep-last `qos_depth`,
grouped into frames by log time. `rate` scales the recorded timing (2.0 =
twice as fast; 0 = as fast as possible). With `publish_clock` the player
publishes /clock with the bag's time, so that nodes with use_sim_time follow
the bag; the player itself always times itself with the steady clock.
Before the first frame it waits until the lifecycle nodes of `wait_for_nodes`
(e.g. /camera/perception_node) report the state `active` (their model is loaded
and they subscribe), `wait_for_subscribers` topics (default: the image topics it
plays) have subscribers and `wait_for_publishers` topics (and in lockstep
`lockstep_topic`) have publishers; at most `wait_timeout` seconds.
At the end it waits until reliable subscribers have acknowledged the last frames.

Damaged bags: every intact message is played; each damaged place the reader
found (file, byte or row, messages lost, their topics and log times) is logged
as an error at the end and the player exits with code 1. A last frame that
lacks topics every other frame has (a recording cut off mid-frame) is reported
with a warning naming them, and played only if it holds a camera image (ground
truth alone would count as a frame the node dropped). A bag without any
playable frame (no camera image can be read) stops the player at once with
code 1, before it waits for its peers.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from mtan_ros.common.entry import EXIT_OK, EXIT_USER_ERROR
from mtan_ros.errors import ConfigError, PlayerError  # noqa: F401 (PlayerError re-exported)
from mtan_ros.bags.messages import COMPRESSED_TYPE, IMAGE_TYPE, PREDICTION_DEPTH_TOPIC, header_stamp_ns
from mtan_ros.bags.reader import BagCorruptError, BagMessage, BagReadError, Damage, open_bag
from mtan_ros.ros.lifecycle_client import ACTIVE, LifecycleWatcher
from mtan_ros.ros.camera import qos
from mtan_ros.ros.node_main import run_node
from mtan_ros.ros.params import ParamSpec, declare_parameters

NODE_NAME = "bag_player"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("bag", str, "rosbag2 folder (or its .mcap/.db3 file) to play.", default="", applies="startup"),
    ParamSpec("rate", float, "Playback speed as a multiple of the recorded timing; 0 = as fast as possible.",
              default=1.0, range=(0.0, 1000.0), applies="startup"),
    ParamSpec("lockstep", bool, "Send each frame only after the prediction of the previous one has arrived.",
              default=False, applies="startup"),
    ParamSpec("lockstep_topic", str, "Topic whose message with a frame's stamp marks it as done.",
              default=PREDICTION_DEPTH_TOPIC, applies="startup"),
    ParamSpec("lockstep_timeout", float, "Seconds to wait for a frame's prediction before sending it again.",
              default=10.0, range=(0.1, 3600.0), applies="startup"),
    ParamSpec("lockstep_retries", int, "How often a frame without prediction is sent again before it is given up.",
              default=2, range=(0, 1000), applies="startup"),
    ParamSpec("publish_clock", bool, "Publish /clock with the bag's time (for nodes with use_sim_time).",
              default=False, applies="startup"),
    ParamSpec("clock_rate", float, "Hz at which /clock is published while waiting between frames.",
              default=50.0, range=(0.0, 10000.0), applies="startup"),
    ParamSpec("topics", list, "Topics to play; empty = every topic of the bag.", default=[""], applies="startup"),
    ParamSpec("wait_for_subscribers", list, "Topics that must have a subscriber before playing; empty = the "
              "camera image topics.", default=[""], applies="startup"),
    ParamSpec("wait_for_publishers", list, "Topics that must have a publisher before playing.", default=[""],
              applies="startup"),
    ParamSpec("wait_for_nodes", list, "Lifecycle nodes (full names, e.g. /camera/perception_node) that must be "
              "active before playing.", default=[""], applies="startup"),
    ParamSpec("wait_timeout", float, "Seconds to wait for wait_for_nodes (an error after that) and for "
              "subscribers and publishers (played without after that).", default=60.0, range=(0.0, 86400.0),
              applies="startup"),
    ParamSpec("start_delay", float, "Seconds to wait after discovery, so that every node has seen every other.",
              default=0.5, range=(0.0, 3600.0), applies="startup"),
    ParamSpec("qos_depth", int, "History depth of the reliable publishers.", default=10, range=(1, 10000),
              applies="startup"),
)


@dataclass
class Tick:
    """Messages with one log time (one camera frame in our bags)."""

    log_time_ns: int
    messages: list[BagMessage] = field(default_factory=list)
    image_stamp_ns: Optional[int] = None

    @property
    def topics(self) -> set[str]:
        return {msg.topic for msg in self.messages}


@dataclass
class PlayStats:
    """What a run played; `damaged` (the reader's error) and `damage` (its places) when the bag is damaged."""

    frames: int = 0
    messages: int = 0
    timeouts: int = 0
    lost: int = 0
    seconds: float = 0.0
    damaged: Optional[str] = None
    damage: list[Damage] = field(default_factory=list)
    incomplete_last: list[str] = field(default_factory=list)  # topics the last frame lacks
    last_played: bool = True  # False when an incomplete last frame was held back


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' -> the rclpy message class (None if that package is not installed)."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        return None


class BagPlayer(Node):
    """Publishes a bag's messages as stored; `play()` runs the whole bag (see the module doc)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = self._declare()
        if not self.p["bag"]:
            raise PlayerError("parameter bag is empty: pass the bag to play, e.g. "
                              "`--ros-args -p bag:=runs/demo/val_bag` (mtan-make-bag writes bags)")
        if self.p["rate"] < 0:
            raise PlayerError(f"rate must be >= 0 (0 = as fast as possible); got {self.p['rate']}")
        try:
            self.bag = open_bag(self.p["bag"])
        except BagReadError as exc:
            raise PlayerError(str(exc)) from None
        wanted = [t for t in self.p["topics"] if t]
        topics = self.bag.topics
        if wanted:
            unknown = sorted(set(wanted) - set(topics))
            if unknown:
                raise PlayerError(f"topics {unknown} are not in the bag; it has {sorted(topics)}")
            topics = {name: info for name, info in topics.items() if name in wanted}
        playback = qos.playback_qos(int(self.p["qos_depth"]))
        self.publishers_by_topic: dict[str, Any] = {}
        for name, info in topics.items():
            cls = message_class(info.msgtype)
            if cls is None:
                self.get_logger().warning(f"not playing {name}: message type {info.msgtype} is not installed")
                continue
            self.publishers_by_topic[name] = self.create_publisher(cls, name, playback)
        if not self.publishers_by_topic:
            raise PlayerError(f"nothing to play: the bag has no playable topics ({sorted(self.bag.topics)})")
        # Camera images: image topics other than ground truth (mtan-make-bag's *_gt images).
        self.image_topics = [n for n, info in topics.items() if info.msgtype in IMAGE_TYPES
                             and n in self.publishers_by_topic and not n.endswith("_gt")]
        self.clock_pub = None
        if self.p["publish_clock"]:
            self.clock_pub = self.create_publisher(Clock, "/clock", qos.clock_qos())
        self.done_stamps: set[int] = set()
        self.lockstep_sub = None
        if self.p["lockstep"]:
            if not self.image_topics:
                raise PlayerError("lockstep needs a camera image topic in the bag (sensor_msgs/Image or "
                                  "CompressedImage, not a *_gt ground-truth topic)")
            self.lockstep_sub = self.create_subscription(
                Image, self.p["lockstep_topic"], self._on_prediction,
                qos.playback_qos(), raw=True)
        self.executor_: Optional[SingleThreadedExecutor] = None

    def _declare(self) -> dict[str, Any]:
        try:
            return declare_parameters(self, SPECS)
        except ConfigError as exc:
            raise PlayerError(str(exc)) from None

    # ------------------------------------------------------------------ callbacks and waiting
    def _on_prediction(self, raw: bytes) -> None:
        try:
            self.done_stamps.add(header_stamp_ns(raw))
        except ValueError:
            pass

    def spin_for(self, seconds: float, until: Any = None) -> bool:
        """Spin (and keep /clock alive) for `seconds` or until `until()` is true; returns until()'s value."""
        end = time.monotonic() + max(0.0, seconds)
        period = 1.0 / self.p["clock_rate"] if self.p["clock_rate"] > 0 else 0.1
        while True:
            if until is not None and until():
                return True
            now = time.monotonic()
            if now >= end:
                return bool(until()) if until is not None else False
            self._tick_clock()
            self.executor_.spin_once(timeout_sec=min(period, end - now))

    def _subscribers(self, topic: str) -> int:
        # For our own topics count matched readers (DDS has really connected them), not the
        # ROS graph, which can know a subscription before its reader has been matched.
        pub = self.publishers_by_topic.get(topic)
        return pub.get_subscription_count() if pub is not None else self.count_subscribers(topic)

    def _missing_for_start(self) -> list[str]:
        missing = [f"{w.target} to be active ({w.describe()})" for w in getattr(self, "_node_watchers", ())
                   if w.poll() != ACTIVE and w.kind != "plain"]
        missing += [f"a subscriber on {t}" for t in (self.p["wait_for_subscribers"] or self.image_topics)
                    if self._subscribers(t) == 0]
        publishers = list(self.p["wait_for_publishers"])
        if self.p["lockstep"] and self.p["lockstep_topic"] not in publishers:
            publishers.append(self.p["lockstep_topic"])
        missing += [f"a publisher on {t}" for t in publishers if self.count_publishers(t) == 0]
        return missing

    def wait_for_peers(self) -> None:
        """Wait until the nodes of wait_for_nodes are active and the topics have their peers.

        Readiness is the node's lifecycle state: its publishers may exist before its model is
        loaded. A node that is not a lifecycle node is waited for only until it is running.
        """
        timeout = float(self.p["wait_timeout"])
        if timeout <= 0:
            return
        names = [str(n) for n in self.p["wait_for_nodes"] if str(n)]
        self._node_watchers = [LifecycleWatcher(self, name) for name in names]
        try:
            if not self.spin_for(timeout, lambda: not self._missing_for_start()):
                waiting = [w for w in self._node_watchers if w.state != ACTIVE and w.kind != "plain"]
                if waiting:
                    raise PlayerError(f"{waiting[0].target} is not active after {timeout:g} s: "
                                      f"{waiting[0].describe()}; see its own output for why (or raise wait_timeout)")
                topic = self.p["lockstep_topic"]
                if self.p["lockstep"] and self.count_publishers(topic) == 0:
                    raise PlayerError(f"lockstep: nothing publishes {topic} after {timeout:g} s; start the "
                                      "perception node (its log says why it is not running) or set lockstep_topic")
                self.get_logger().warning(f"playing without {', '.join(self._missing_for_start())} "
                                          f"(waited {timeout:g} s)")
            for watcher in self._node_watchers:
                if watcher.kind == "plain":
                    self.get_logger().warning(f"{watcher.describe()}; waited only until it was running")
        finally:
            for watcher in self._node_watchers:
                watcher.close()
            self._node_watchers = []
        self.spin_for(float(self.p["start_delay"]))

    # ------------------------------------------------------------------ clock
    _clock_ns: Optional[int] = None
    _clock_anchor: Optional[tuple[float, int]] = None  # (monotonic, bag ns) while the bag time runs freely
    _clock_next = 0.0

    def _tick_clock(self, force: bool = False) -> None:
        if self.clock_pub is None or self._clock_ns is None:
            return
        now = time.monotonic()
        if not force and now < self._clock_next:
            return
        self._clock_next = now + (1.0 / self.p["clock_rate"] if self.p["clock_rate"] > 0 else 0.1)
        value = self._clock_ns
        if self._clock_anchor is not None and self.p["rate"] > 0:
            start, bag_ns = self._clock_anchor
            value = max(value, bag_ns + int((now - start) * 1e9 * self.p["rate"]))
            self._clock_ns = value
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(value), 1_000_000_000)
        self.clock_pub.publish(msg)

    def _set_clock(self, bag_ns: int, running: bool) -> None:
        self._clock_ns = bag_ns if self._clock_ns is None else max(self._clock_ns, bag_ns)
        self._clock_anchor = (time.monotonic(), self._clock_ns) if running else None
        self._tick_clock(force=True)

    # ------------------------------------------------------------------ playing
    def ticks(self, stats: Optional[PlayStats] = None) -> Iterator[Tick]:
        """Every intact message grouped by log time; the reader's damage report goes into `stats`.

        The last frame is held until the bag ends: if it lacks topics that every other
        frame has, a warning names them and it is played only when it holds a camera image.
        """
        stats = PlayStats() if stats is None else stats
        common: Optional[set[str]] = None  # topics every frame so far has
        current: Optional[Tick] = None
        try:
            for msg in self.bag.messages(self.publishers_by_topic):
                if current is not None and msg.log_time_ns != current.log_time_ns:
                    common = current.topics if common is None else common & current.topics
                    yield current
                    current = None
                if current is None:
                    current = Tick(msg.log_time_ns)
                current.messages.append(msg)
                if msg.topic in self.image_topics and current.image_stamp_ns is None:
                    try:
                        current.image_stamp_ns = header_stamp_ns(msg.data)
                    except ValueError:
                        pass
        except BagCorruptError as exc:
            stats.damaged, stats.damage = str(exc), list(self.bag.damage)
        if current is None:
            return
        stats.incomplete_last = sorted((common or set()) - current.topics)
        if stats.incomplete_last:
            stats.last_played = self._playable(current)
            self.get_logger().warning(
                f"the last frame (log time {current.log_time_ns / 1e9:.3f} s) lacks {', '.join(stats.incomplete_last)}"
                f", which every other frame has; "
                + ("playing what it has" if stats.last_played else "not playing it: it holds no camera image"))
            if not stats.last_played:
                return
        yield current

    def _playable(self, tick: Tick) -> bool:
        """A frame the node can work on: one with a camera image (any frame when no image topic is played)."""
        return not self.image_topics or any(msg.topic in self.image_topics for msg in tick.messages)

    def check_playable(self) -> None:
        """PlayerError at once (before any waiting) when no frame of the bag can be played."""
        try:
            with contextlib.closing(self.bag.messages(self.publishers_by_topic)) as messages:
                for msg in messages:
                    if not self.image_topics or msg.topic in self.image_topics:
                        return
        except BagCorruptError:
            pass
        what = f"no message on {', '.join(self.image_topics)} can be read" if self.image_topics \
            else "no message can be read"
        damage = self.bag.damage
        found = f"; {damage[0]}" + (f" and {len(damage) - 1} more damaged places" if len(damage) > 1 else "") \
            if damage else ""
        raise PlayerError(f"bag '{self.bag.path}' holds no playable frame: {what}{found}; re-create it "
                          "(mtan-make-bag) or record it again")

    def _publish(self, tick: Tick) -> None:
        for msg in tick.messages:
            self.publishers_by_topic[msg.topic].publish(msg.data)

    def play(self, executor: SingleThreadedExecutor) -> PlayStats:
        self.executor_ = executor
        stats = PlayStats()
        self.check_playable()
        self.wait_for_peers()
        rate, lockstep = float(self.p["rate"]), bool(self.p["lockstep"])
        mode = "lockstep" if lockstep else "free"
        self.get_logger().info(f"playing {self.bag.path} ({self.bag.storage}, {len(self.publishers_by_topic)} "
                               f"topics) in {mode} mode at rate {rate:g}"
                               f"{', publishing /clock' if self.clock_pub is not None else ''}")
        started = time.monotonic()
        first_log: Optional[int] = None
        previous_log: Optional[int] = None
        previous_send = started
        last_report = started
        for tick in self.ticks(stats):
            if first_log is None:
                first_log = tick.log_time_ns
            if rate > 0:
                if lockstep and previous_log is not None:
                    # Relative pacing: a slow prediction delays the schedule instead of causing a burst.
                    target = previous_send + (tick.log_time_ns - previous_log) / 1e9 / rate
                else:
                    target = started + (tick.log_time_ns - first_log) / 1e9 / rate
                self.spin_for(target - time.monotonic())
            self._set_clock(tick.log_time_ns, running=not lockstep and rate > 0)
            previous_send, previous_log = time.monotonic(), tick.log_time_ns
            self._publish(tick)
            stats.messages += len(tick.messages)
            if tick.image_stamp_ns is not None:
                stats.frames += 1
                if lockstep:
                    self._await_prediction(tick, stats)
            if time.monotonic() - last_report > 10.0:
                last_report = time.monotonic()
                self.get_logger().info(f"played {stats.frames} frames")
        stats.seconds = time.monotonic() - started
        self._flush()
        return stats

    def _flush(self, timeout: float = 5.0) -> None:
        """Wait until reliable subscribers have the last frames: leaving at once could lose them."""
        end = time.monotonic() + timeout
        for pub in self.publishers_by_topic.values():
            left = max(0.0, end - time.monotonic())
            pub.wait_for_all_acked(Duration(seconds=left))

    def _await_prediction(self, tick: Tick, stats: PlayStats) -> None:
        stamp = tick.image_stamp_ns
        timeout = float(self.p["lockstep_timeout"])
        for attempt in range(int(self.p["lockstep_retries"]) + 1):
            if attempt:
                stats.timeouts += 1
                self.get_logger().warning(f"no prediction for the frame stamped {stamp / 1e9:.3f} s after "
                                          f"{timeout:g} s; sending it again ({attempt}/{self.p['lockstep_retries']})")
                self._publish(tick)
            if self.spin_for(timeout, lambda: stamp in self.done_stamps):
                self.done_stamps.clear()
                return
            if self.count_publishers(self.p["lockstep_topic"]) == 0:
                raise PlayerError(f"lockstep: {self.p['lockstep_topic']} has no publisher any more (the perception "
                                  f"node stopped?); stopped after {stats.frames - 1} frames")
        stats.lost += 1
        self.get_logger().error(f"giving up the frame stamped {stamp / 1e9:.3f} s: no prediction on "
                                f"{self.p['lockstep_topic']} after {int(self.p['lockstep_retries']) + 1} tries")


MAX_DAMAGE_LINES = 20


def report_damage(logger: Any, stats: PlayStats, bag: Any) -> None:
    """One error line per damaged place (at most MAX_DAMAGE_LINES), then what that means for the run."""
    for place in stats.damage[:MAX_DAMAGE_LINES]:
        logger.error(f"damaged: {place}")
    if len(stats.damage) > MAX_DAMAGE_LINES:
        logger.error(f"... and {len(stats.damage) - MAX_DAMAGE_LINES} more damaged places")
    count = len(stats.damage)
    logger.error(f"bag '{bag.path}' is damaged in {count} place{'s' if count != 1 else ''} (listed above); every "
                 "intact frame was played. Re-record or re-create the bag (mtan-make-bag)")


def _play(node: BagPlayer) -> int:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        stats = node.play(executor)
    finally:
        executor.shutdown()
    rate = stats.frames / stats.seconds if stats.seconds > 0 else float("nan")
    summary = (f"played {stats.frames} frames ({stats.messages} messages) in {stats.seconds:.1f} s "
               f"({rate:.2f} frames/s)")
    if node.p["lockstep"]:
        summary += f"; lockstep: {stats.timeouts} re-sent, {stats.lost} given up"
    if stats.incomplete_last:
        summary += f"; the last frame lacked {', '.join(stats.incomplete_last)}" \
                   + ("" if stats.last_played else " and was not played")
    node.get_logger().info(summary)
    if stats.damaged:
        report_damage(node.get_logger(), stats, node.bag)
        return EXIT_USER_ERROR
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of `bag_player`: 0 when the bag was played, 2 when it could not be (or was damaged)."""
    return run_node(NODE_NAME, BagPlayer, _play, argv)


if __name__ == "__main__":
    sys.exit(main())
