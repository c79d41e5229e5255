"""Which cameras reach the perception node: camera QoS x resolution x the camera's Fast DDS profile.

    python -m mtan_ros.benchmarks.cameras [--sizes 480x640,720x1280,1080x1920,1024x2048]
        [--frames 30] [--rate 10] [--json cameras.json]

The node runs as a user starts it (`python -m mtan_ros.ros.node.perception_node`, which
takes the package's shared-memory profile unless Fast DDS is configured). For every
cell a camera process (mtan_ros.ros.replay.synthetic_camera) publishes `--frames` frames at
`--rate` Hz the way drivers do — reliable keep-last 10 (rclpy's and image_transport's
default) or best effort (the sensor-data profile) — with no Fast DDS configuration, or
with the package's profile (config/fastdds_shm.xml). This process subscribes to
`depth` like RViz (reliable, no profile). Reported per cell: how many frames went out
before the node had matched the new camera (discovery; the first answered frame marks
the match), and of the frames from then on the share that reached the node (its own
counter) and that was answered on `depth`, plus the node's warning if it gave one.
Counts, not timings: frame i is stamped base + i / rate.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from mtan_ros.benchmarks.report import write_json
from mtan_ros.common.processes import ChildGroup
from mtan_ros.benchmarks.node import random_checkpoint
from mtan_ros.ros.camera.transport import USER_TRANSPORT_VARIABLES, profile_path

QOS_CHOICES = ("reliable", "best_effort")


def sent_stamps(base: float, frames: int, rate: float) -> list[tuple[int, int]]:
    """(sec, nanosec) of frame i = base + i / rate, as synthetic_camera stamps them."""
    keys = []
    for index in range(frames):
        nanoseconds = int(round((base + index / rate) * 1e9))
        keys.append((nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000))
    return keys


@dataclass
class CameraCounts:
    """One camera run: frames sent, reaching the node, answered; the node's counters over the run."""

    sent: int
    first_answered: Optional[int]
    answered: int
    received: int
    processed: int
    dropped: int
    rejected: int

    @classmethod
    def of(cls, sent: list[tuple[int, int]], answered: set, before: dict[str, str],
           after: dict[str, str]) -> "CameraCounts":
        def delta(key: str) -> int:
            return int(after.get(key, 0)) - int(before.get(key, 0))

        first = next((i for i, key in enumerate(sent) if key in answered), None)
        return cls(sent=len(sent), first_answered=first, answered=sum(key in answered for key in sent),
                   received=delta("frames_received"), processed=delta("frames_processed"),
                   dropped=delta("frames_dropped"), rejected=delta("frames_rejected"))

    @property
    def after_match(self) -> int:
        """Frames sent from the first answered one on (earlier ones left before the node matched)."""
        return 0 if self.first_answered is None else self.sent - self.first_answered

    def __str__(self) -> str:
        return (f"sent {self.sent}, first answered #{self.first_answered}, reached the node {self.received}, "
                f"processed {self.processed}, dropped as stale {self.dropped}, rejected {self.rejected}, "
                f"answered {self.answered}")


def advice(qos: str, profile: bool, reached: float) -> str:
    if reached >= 0.8:
        return "nothing to do"
    if qos == "best_effort" and not profile:
        return ("start the camera driver with FASTDDS_DEFAULT_PROFILES_FILE=<mtan_ros share>/config/fastdds_shm.xml, "
                "or make it publish reliable")
    return "check the camera's transport (the node's warning says what it saw)"


class _Client:
    """A default participant (no Fast DDS profile) subscribing like RViz, plus /diagnostics."""

    def __init__(self, namespace: str) -> None:
        import rclpy  # optional: pip install .[ros] (rclpy)
        # optional: pip install .[ros] (rclpy)
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context  # optional: pip install .[ros] (rclpy)
        # optional: pip install .[ros] (rclpy)
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image  # optional: pip install .[ros] (rclpy)

        from mtan_ros.ros.camera import qos  # optional: pip install .[ros] (rclpy)

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mtan_camera_benchmark", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.answered: set = set()
        self.warnings: list[str] = []  # WARN messages of the node since the last reset
        self.status: Any = None
        self.values: dict[str, str] = {}
        self._name = f"{namespace}/perception_node: perception"
        self.depth = self.node.create_subscription(Image, f"{namespace}/depth", self._on_depth,
                                                   qos.image_output_qos_for_subscribers())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_depth(self, msg: Any) -> None:
        self.answered.add((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == self._name:
                self.status = status
                self.values = {kv.key: kv.value for kv in status.values}
                if status.level == status.WARN and status.message not in self.warnings:
                    self.warnings.append(status.message)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def run_cell(client: _Client, namespace: str, env: dict[str, str], size: tuple[int, int], qos: str,
             profile: Optional[Path], frames: int, rate: float, base: float) -> dict[str, Any]:
    cell_env = dict(env)
    if profile is not None:
        cell_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    before = dict(client.values)
    client.warnings.clear()
    camera = ChildGroup([sys.executable, "-m", "mtan_ros.ros.replay.synthetic_camera", "--ros-args",
                         "-r", f"__ns:={namespace}", "-p", f"width:={size[1]}", "-p", f"height:={size[0]}",
                         "-p", f"rate:={rate}", "-p", f"frames:={frames}", "-p", f"reliability:={qos}",
                         "-p", f"stamp_base:={base}"], env=cell_env).start()
    try:
        while camera.alive():
            client.spin_for(0.2)
        client.spin_for(2.5)  # the last answers, and /diagnostics counting them
    finally:
        camera.stop()
    camera_warnings = [w for w in client.warnings if not w.startswith(("no image on", "waiting for images"))]
    warning = camera_warnings[0] if camera_warnings else ""
    counts = CameraCounts.of(sent_stamps(base, frames, rate), client.answered, before, client.values)
    window = max(1, counts.after_match)
    reached = min(1.0, counts.received / window) if counts.first_answered is not None else 0.0
    row = {"qos": qos, "camera_profile": profile is not None, "camera": f"{size[0]}x{size[1]}",
           "before_match": counts.first_answered if counts.first_answered is not None else frames,
           "reached_node": reached, "answered": counts.answered / window if counts.first_answered is not None
           else 0.0, "warning": warning, "advice": advice(qos, profile is not None, reached),
           "counts": asdict(counts)}
    print(f"  {row['camera']} {qos} profile={profile is not None}: {counts}", flush=True)
    client.spin_for(1.0)  # let the node notice the camera is gone before the next one
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| camera QoS | profile on the camera | camera (HxW) | frames before the match | reached the node | "
             "answered on depth | node's warning | advice |", "|" + "---|" * 8]
    for r in rows:
        warning = (r["warning"][:90] + "...") if len(r["warning"]) > 90 else r["warning"]
        lines.append(f"| {r['qos'].replace('_', ' ')} | {'package SHM' if r['camera_profile'] else 'none'} | "
                     f"{r['camera']} | {r['before_match']} | {r['reached_node']:.0%} | {r['answered']:.0%} | "
                     f"{warning or '-'} | {r['advice']} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="480x640,720x1280,1080x1920,1024x2048", help="HxW, comma separated")
    parser.add_argument("--frames", type=int, default=80,
                        help="frames per cell (Fast DDS discovery of a new camera can take up to ~3 s)")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--checkpoint", help="checkpoint for the node (default: a small random-weight MTAN)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in item.lower().split("x")) for item in args.sizes.split(",")]

    env = {k: v for k, v in os.environ.items() if k not in USER_TRANSPORT_VARIABLES}  # as a user who set nothing
    for name in USER_TRANSPORT_VARIABLES:
        os.environ.pop(name, None)
    namespace = f"/mtan_camera_bench_{os.getpid()}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="mtan_cameras_") as folder:
        checkpoint = args.checkpoint or random_checkpoint(Path(folder), 0.125)
        node = ChildGroup([sys.executable, "-m", "mtan_ros.ros.node.perception_node", "--ros-args",
                           "-r", f"__ns:={namespace}", "-p", f"model_path:={checkpoint}", "-p", "device:=cpu",
                           "-p", "no_input_warning_after:=2.0"], env=env).start()
        client = _Client(namespace)
        try:
            end = time.monotonic() + 300
            while client.depth.get_publisher_count() == 0 or not client.values:
                if not node.alive() or time.monotonic() > end:
                    raise RuntimeError("the perception node did not start:\n" + node.output())
                client.spin_for(0.2)
            base = 1000.0
            for qos in QOS_CHOICES:
                for profile in (None, profile_path()):
                    for size in sizes:
                        rows.append(run_cell(client, namespace, env, size, qos, profile, args.frames, args.rate, base))
                        base += 1000.0
        finally:
            client.close()
            node.stop()
    print()
    print(_table(rows))
    print(f"{args.frames} frames at {args.rate:g} Hz per cell; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    if args.json:
        write_json(args.json, "cameras", rows, settings={"frames": args.frames, "rate": args.rate})
    return 0


if __name__ == "__main__":
    sys.exit(main())
