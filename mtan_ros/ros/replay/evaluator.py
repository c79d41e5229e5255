"""`evaluator`: score the perception node on a replayed bag (accuracy and latency).

    ros2 run mtan_ros evaluator --ros-args -r __ns:=/camera -p output_dir:=runs/replay
        [-p bag:=BAG] [-p model_path:=CK] [-p frames:=N]

Subscribes (relative names, so a namespace or remaps place it next to the node):
  image_raw, image_raw/compressed   the camera input (for latency and the mosaic)
  depth_gt, semantic_gt             ground truth from the bag (mtan-make-bag writes them)
  depth, semantic                   the perception node's predictions
and pairs them by header stamp. All the bookkeeping and the metrics live in
`mtan_ros.evaluation.replay` (ROS-free; the training code's metric classes);
this node only turns messages into arrays with their reception times.

It finishes when `frames` frames have been evaluated (default: the frame
count recorded in `bag`), when nothing has arrived for `idle_timeout`
seconds (or nothing at all within `start_timeout`), on Ctrl-C / SIGTERM (at
any moment, start-up included) or when ROS shuts down under it; then it writes
`output_dir/report.json` (its `finished_because` says which) and
`output_dir/mosaic.png`, prints the table and exits (with `exit_when_done`).
While running it keeps `output_dir/progress.json` ({"evaluated", "expected",
"finished"}) up to date for progress displays. Idle time is measured on the
steady clock, so it works with use_sim_time when /clock stops at the end of a bag.

Latency uses the middleware's reception timestamps of the frame's first input
message (image or ground truth) and of the prediction (one clock, the
evaluator's machine), never the header stamp against sim time; see
replay_eval for the details.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image

from mtan_ros.bags.messages import stamp_ns
from mtan_ros.bags.reader import BagReadError, open_bag
from mtan_ros.common.entry import EXIT_USER_ERROR, StopSignals
from mtan_ros.common.files import write_text
from mtan_ros.common.text import quote_path
from mtan_ros.data.classes import class_set
from mtan_ros.errors import EvaluatorError  # noqa: F401 (re-exported)
from mtan_ros.errors import ConfigError, ImageConversionError, MtanRosError
from mtan_ros.evaluation.replay import ReplayEvaluator, format_report
from mtan_ros.imaging.compressed import compressed_msg_to_rgb
from mtan_ros.ros.camera.image_messages import image_msg_to_array, image_msg_to_rgb
from mtan_ros.ros.camera import qos
from mtan_ros.ros.params import ParamSpec, declare_parameters

NODE_NAME = "evaluator"

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("output_dir", str, "Folder for report.json and mosaic.png.", default="runs/replay", applies="startup"),
    ParamSpec("bag", str, "The bag being played (optional): frame count and class names/colours from its "
              "metadata.", default="", applies="startup"),
    ParamSpec("model_path", str, "The node's checkpoint (optional): class count, names and colours from it.",
              default="", applies="startup"),
    ParamSpec("num_classes", int, "Number of classes; 0 = from model_path, else from bag, else 7.", default=0,
              range=(0, 255), applies="startup"),
    ParamSpec("frames", int, "Finish after this many evaluated frames; 0 = the bag's frame count (or only "
              "idle/shutdown).", default=0, range=(0, 10**9), applies="startup"),
    ParamSpec("idle_timeout", float, "Finish when nothing arrived for this many seconds (steady clock); 0 = never.",
              default=15.0, range=(0.0, 86400.0), applies="startup"),
    ParamSpec("start_timeout", float, "Finish if nothing at all arrived this many seconds after start; 0 = never.",
              default=120.0, range=(0.0, 86400.0), applies="startup"),
    ParamSpec("mosaic_frames", int, "Frames drawn in mosaic.png (spread over the run when the frame count is "
              "known).", default=4, range=(0, 64), applies="startup"),
    ParamSpec("exit_when_done", bool, "Exit after writing the report (else keep running idle).", default=True,
              applies="startup"),
    ParamSpec("wait_for_predictions", bool, "Subscribe to the ground truth only once the depth and semantic "
              "publishers are matched (a player waiting for its subscribers then starts when predictions can "
              "arrive); false = at once.", default=True, applies="startup"),
)

# DDS matches the two ends of a connection separately: this reader seeing the node's writer does not
# prove that the writer has this reader yet. The ground truth is subscribed to this long after.
MATCH_SETTLE_S = 0.5


def _stamp_ns(msg: Any) -> int:
    return stamp_ns(msg.header.stamp)


def _received_s(info: Any) -> float:
    """Reception time (s, system clock) from the middleware, or now when it does not say."""
    stamp = 0
    if info is not None:
        try:
            stamp = int(info["received_timestamp"])
        except (KeyError, TypeError):
            stamp = 0
    return (stamp if stamp > 0 else time.time_ns()) / 1e9


def _bag_info(path: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        bag = open_bag(path)
    except BagReadError as exc:
        raise EvaluatorError(f"parameter bag: {exc}") from None
    info: dict[str, Any] = {}
    try:
        info = json.loads(bag.custom_data.get("mtan_ros", "{}"))
    except ValueError:
        info = {}
    if "frames" not in info:
        counts = [t.count for t in bag.topics.values()
                  if t.msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
                  and t.name.endswith(("image_raw", "image_raw/compressed")) and t.count]
        if counts:
            info["frames"] = max(counts)
    return info


class EvaluatorNode(Node):
    """Turns messages into arrays for a ReplayEvaluator and writes its report at the end."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = self._declare()
        self.done = Future()
        self.finished = False
        self.report: Optional[dict[str, Any]] = None
        self.last_activity: Optional[float] = None
        self.started = time.monotonic()
        self.last_progress = time.monotonic()
        self.progress_written = -1
        self.bad_messages = 0
        classes = self._classes()
        bag = classes.pop("bag_info")
        frames = int(self.p["frames"]) or int(bag.get("frames", 0) or 0)
        self.core = ReplayEvaluator(classes["num_classes"], classes["names"], classes["colors"],
                                    mosaic_frames=int(self.p["mosaic_frames"]), expected_frames=frames)
        try:
            self._subscribe()
        except (RuntimeError, ExternalShutdownException):  # RCLError, InvalidHandle: the context went away
            if self.context.ok():
                raise
            # e.g. launch shutting everything down because another process failed: report anyway.
            self.finish("ROS shut down while the evaluator was starting")
            raise ExternalShutdownException() from None
        names = [self.resolve_topic_name(name) for name in ("depth", "semantic", "depth_gt", "semantic_gt")]
        self.get_logger().info(
            f"evaluating {names[0]} and {names[1]} against {names[2]} and {names[3]}"
            f"{' (once the predictions are matched)' if not self.truth_subs else ''}: {classes['num_classes']} "
            f"classes, {f'{frames} frames' if frames else 'until idle'}; report in {self.p['output_dir']}")

    def _subscribe(self) -> None:
        inputs, reliable = qos.evaluation_qos(reliable=False), qos.evaluation_qos(reliable=True)
        self.input_subs = [
            self.create_subscription(Image, "image_raw", self._on_image, inputs),
            self.create_subscription(CompressedImage, "image_raw/compressed", self._on_image, inputs),
        ]
        self.prediction_subs = [
            self.create_subscription(Image, "depth", self._pred_callback("depth"), reliable),
            self.create_subscription(Image, "semantic", self._pred_callback("semantic"), reliable),
        ]
        self.truth_subs: list[Any] = []
        self._predictions_matched_at: Optional[float] = None
        if not self.p["wait_for_predictions"]:
            self._subscribe_truth()
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.timer = self.create_timer(0.2, self._check, clock=steady)

    def _subscribe_truth(self) -> None:
        reliable = qos.evaluation_qos(reliable=True)
        self.truth_subs = [
            self.create_subscription(Image, "depth_gt", self._gt_callback("depth"), reliable),
            self.create_subscription(Image, "semantic_gt", self._gt_callback("semantic"), reliable),
        ]

    def _subscribe_truth_once_matched(self, now: float) -> None:
        """A player waits for subscribers of the ground truth: they appear when predictions can reach us."""
        if not all(sub.get_publisher_count() > 0 for sub in self.prediction_subs):
            self._predictions_matched_at = None
            return
        if self._predictions_matched_at is None:
            self._predictions_matched_at = now
        if now - self._predictions_matched_at >= MATCH_SETTLE_S:
            self._subscribe_truth()
            self.get_logger().info("the node's predictions are matched: listening to the ground truth")

    def _declare(self) -> dict[str, Any]:
        try:
            return declare_parameters(self, SPECS)
        except ConfigError as exc:
            raise EvaluatorError(str(exc)) from None

    def _classes(self) -> dict[str, Any]:
        """Class count, names and colours: checkpoint, then bag metadata, then the Cityscapes tables."""
        bag = _bag_info(self.p["bag"])
        names = colors = None
        count = int(self.p["num_classes"])
        if self.p["model_path"]:
            # torch: +1.3 s, measured with -X importtime; only with model_path
            from mtan_ros.model.checkpoint import CheckpointError, load_checkpoint

            try:
                meta = load_checkpoint(self.p["model_path"]).meta
            except CheckpointError as exc:
                raise EvaluatorError(f"cannot read model_path {quote_path(self.p['model_path'])}: {exc}") from None
            names, colors = list(meta.class_names), [tuple(c) for c in meta.class_colors]
        elif bag.get("class_names"):
            names, colors = list(bag["class_names"]), [tuple(c) for c in bag.get("class_colors", [])] or None
        if count == 0:
            count = len(names) if names else 7
        if names is not None and len(names) != count:
            names, colors = None, None
        if names is None or not colors:
            table = class_set(count)
            names, colors = list(table.names), list(table.colors)
        return {"num_classes": count, "names": names, "colors": colors, "bag_info": bag}

    # ------------------------------------------------------------------ callbacks
    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    def _warn_bad(self, topic: str, exc: Exception) -> None:
        self.bad_messages += 1
        if self.bad_messages <= 5:
            self.get_logger().warning(f"{topic}: message skipped: {exc}")

    def _on_image(self, msg: Any, info: Any) -> None:
        if self.finished:
            return
        self._touch()
        stamp = _stamp_ns(msg)

        def decode() -> np.ndarray:
            if isinstance(msg, CompressedImage):
                return compressed_msg_to_rgb(msg)
            return image_msg_to_rgb(msg)

        try:
            self.core.on_input(stamp, _received_s(info), decode)
        except ImageConversionError as exc:
            self.core.on_input(stamp, _received_s(info))
            self._warn_bad("image_raw", exc)

    def _gt_callback(self, kind: str):
        def callback(msg: Image, info: Any) -> None:
            if self.finished:
                return
            self._touch()
            try:
                array = self._array(msg, kind)
                self.core.on_ground_truth(_stamp_ns(msg), kind, array, _received_s(info))
            except (ImageConversionError, ValueError) as exc:
                self._warn_bad(f"{kind}_gt", exc)

        return callback

    def _pred_callback(self, kind: str):
        def callback(msg: Image, info: Any) -> None:
            if self.finished:
                return
            self._touch()
            stamp = _stamp_ns(msg)
            try:
                array = self._array(msg, kind)
                self.core.on_prediction(stamp, kind, array, _received_s(info))
            except (ImageConversionError, ValueError) as exc:
                self._warn_bad(kind, exc)

        return callback

    @staticmethod
    def _array(msg: Image, kind: str) -> np.ndarray:
        want = "32FC1" if kind == "depth" else "mono8"
        if msg.encoding != want:
            raise ValueError(f"expected {want} for {kind}, got {msg.encoding!r}")
        return np.array(image_msg_to_array(msg))

    def _check(self) -> None:
        if self.finished:
            return
        now = time.monotonic()
        if not self.truth_subs:
            self._subscribe_truth_once_matched(now)
        if now - self.last_progress > 2.0 and self.core.evaluated:
            self.last_progress = now
            total = f"/{self.core.expected_frames}" if self.core.expected_frames else ""
            self.get_logger().info(f"evaluated {self.core.evaluated}{total} frames")
        if self.core.evaluated != self.progress_written:
            self._write_progress()
        if self.core.complete():
            self.finish(f"all {self.core.expected_frames} frames evaluated")
        elif self.p["idle_timeout"] > 0 and self.last_activity is not None and \
                now - self.last_activity > self.p["idle_timeout"]:
            self.finish(f"nothing received for {self.p['idle_timeout']:g} s")
        elif self.p["start_timeout"] > 0 and self.last_activity is None and \
                now - self.started > self.p["start_timeout"]:
            self.finish(f"nothing received in the first {self.p['start_timeout']:g} s (is a player running?)")

    def _write_progress(self) -> None:
        """progress.json: frames evaluated so far, for progress displays (replaced atomically)."""
        out = Path(self.p["output_dir"])
        try:
            write_text(out / "progress.json", json.dumps({"evaluated": self.core.evaluated,
                                                          "expected": self.core.expected_frames,
                                                          "finished": self.finished}) + "\n")
            self.progress_written = self.core.evaluated
        except OSError as exc:
            self._warn_bad("progress.json", exc)

    # ------------------------------------------------------------------ the end
    def finish(self, reason: str) -> dict[str, Any]:
        """Write report.json and mosaic.png, print the table; safe to call more than once."""
        if self.finished and self.report is not None:
            return self.report
        self.finished = True
        info = {"finished_because": reason, "bag": self.p["bag"], "model_path": self.p["model_path"],
                "bad_messages": self.bad_messages}
        paths = self.core.write(self.p["output_dir"], info)
        self.report = self.core.report(info)
        print(format_report(self.report), flush=True)
        where = ", ".join(str(p) for p in paths.values())
        print(f"evaluator: {reason}; wrote {where}", flush=True)
        self._write_progress()
        if not self.done.done():
            self.done.set_result(True)
        return self.report


def main(argv: Optional[list[str]] = None, stop: Optional[StopSignals] = None) -> int:
    """Entry point of `evaluator`: 0 after writing the report, 2 when it cannot start.

    SIGINT and SIGTERM are recorded (`stop`, installed here unless the console script
    did it before the imports) instead of letting rclpy shut the context down under the
    node: whenever they come, the evaluator finishes, writes its report and exits 0.
    """
    own_stop = stop is None
    stop = StopSignals.install() if stop is None else stop
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node: Optional[EvaluatorNode] = None
    executor = SingleThreadedExecutor()
    code = 0
    why = "ROS shut down"
    try:
        node = EvaluatorNode()
        executor.add_node(node)
        while stop.received is None:
            executor.spin_once(timeout_sec=0.2)
            if node.done.done():
                if node.p["exit_when_done"]:
                    break
                node.done = Future()  # keep serving (parameters, introspection) until stopped
    except MtanRosError as exc:  # EvaluatorError, or any other error the user can fix
        rclpy.logging.get_logger(NODE_NAME).error(str(exc))
        code = EXIT_USER_ERROR
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    except RuntimeError:  # RCLError / InvalidHandle: only the context going away is an ending we expect
        if node is None or node.context.ok():
            raise
    finally:
        if stop.received is not None:
            why = stop.describe() + ("" if node is None or node.core.evaluated else " before any frame was evaluated")
        if node is not None and not node.finished:
            node.finish(why)
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        if own_stop:
            stop.restore()
    return code


if __name__ == "__main__":
    sys.exit(main())
