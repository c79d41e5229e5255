"""N cameras served by one multi-camera perception node versus N single-camera nodes, in one run.

    python -m mtan_ros.benchmarks.multi_camera [--cameras 1,2,4] [--sizes 480x640,720x1280]
        [--rate 5] [--frames 60] [--width 0.25] [--checkpoint best.pt] [--max-batch-size 0] [--batch-mode MODE]
        [--json out.json]

For each N, camera i (size: the i-th of --sizes, cycled) is a synthetic_camera process
with ROS 2 default QoS and no Fast DDS profile, as a driver starts, publishing --frames
frames at --rate Hz from the moment the node's reader is matched (so discovery does
not count). Two setups in turn, each with fresh processes started the way users start
them (`python -m mtan_ros.ros.node.perception_node`, default parameters, CPU):
  one node   `cameras: [cam0, ..., camN-1]`, batches of up to --max-batch-size frames (0: N),
             run as --batch-mode says (default: the node's own default, config/perception.yaml);
  N nodes    one single-camera node per camera.
This process subscribes to each camera's `depth` like RViz and reports per camera
the frames answered with that camera's frame_id, size and one of its stamps
(answers with anything else count as wrong), the latency from the frame's stamp
(the camera's wall clock when it sent it) to the answer arriving here (p50/p95), and
per setup the frames answered in total, the largest total RSS of the node processes
while the cameras ran, and their CPU time over the run. Counts, not rates: a frame
is answered or not. On a machine shared with other work, N processes get a larger
share of the cores than one: compare "answered per CPU s" as well as the totals.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from mtan_ros.benchmarks.report import write_json
from mtan_ros.common.processes import ChildGroup
from mtan_ros.benchmarks.node import random_checkpoint
from mtan_ros.ros.camera.transport import USER_TRANSPORT_VARIABLES

NODE_MODULE = "mtan_ros.ros.node.perception_node"
CAMERA_MODULE = "mtan_ros.ros.replay.synthetic_camera"
# The acceptance case of the issue "Many cameras, one model".
TARGET_ANSWERED_PER_CAMERA = 0.80
TARGET_RSS_RATIO = 0.45
TARGET_TOTAL_RATIO = 0.95


# ---------------------------------------------------------------------------- processes

def group_pids(pgid: int) -> list[int]:
    """Processes of the process group `pgid` (a ChildGroup and whatever it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- this process's subscriber

class _Client:
    """A default participant (no Fast DDS profile) subscribing to each camera's depth like RViz, and /diagnostics."""

    def __init__(self) -> None:
        import rclpy  # optional: pip install .[ros] (rclpy)
        # optional: pip install .[ros] (rclpy)
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context  # optional: pip install .[ros] (rclpy)
        # optional: pip install .[ros] (rclpy)
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mtan_multi_camera_benchmark", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.statuses: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._subs: list[Any] = []
        self.answers: dict[str, list[tuple]] = {}

    def watch_depth(self, camera_ns: str) -> Any:
        """Record every depth answer on `<camera_ns>/depth` as (stamp s, frame_id, height, width, arrival s)."""
        from sensor_msgs.msg import Image  # optional: pip install .[ros] (rclpy)

        from mtan_ros.ros.camera import qos  # optional: pip install .[ros] (rclpy)

        seen: list[tuple] = []
        self.answers[camera_ns] = seen

        def on_depth(msg: Any) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            seen.append((stamp, msg.header.frame_id, msg.height, msg.width, time.time()))

        sub = self.node.create_subscription(Image, f"{camera_ns}/depth", on_depth,
                                            qos.image_output_qos_for_subscribers())
        self._subs.append(sub)
        return sub

    def unwatch(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs.clear()

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            self.statuses[status.name] = {kv.key: kv.value for kv in status.values}

    def spin_until(self, predicate: Any, timeout: float, what: str, processes: list[ChildGroup]) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            for child in processes:
                if not child.alive() and child.exit_code() not in (0, None):
                    raise RuntimeError(f"a process ended with {child.exit_code()} while waiting for {what}:\n"
                                       + child.output()[-3000:])
            if time.monotonic() > end:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


# ---------------------------------------------------------------------------- one setup

def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _camera_row(seen: list[tuple], size: tuple[int, int], frame_id: str, frames: int, rate: float,
                status: dict[str, str]) -> dict[str, Any]:
    """Answers of one camera: right ones (its frame_id, size, a stamp of its sequence), wrong ones, latency."""
    right = [a for a in seen if a[1] == frame_id and (a[2], a[3]) == size]
    first = min((a[0] for a in right), default=0.0)
    in_sequence = [a for a in right if abs((a[0] - first) * rate - round((a[0] - first) * rate)) < 1e-3
                   and round((a[0] - first) * rate) < frames]
    stamps = {round((a[0] - first) * rate) for a in in_sequence}
    latencies = [(a[4] - a[0]) * 1e3 for a in in_sequence]
    return {"size": f"{size[0]}x{size[1]}", "sent": frames, "answered": len(stamps),
            "wrong": len(seen) - len(in_sequence), "reached_node": int(status.get("frames_received", 0)),
            "dropped": int(status.get("frames_dropped", 0)),
            "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p95": _percentile(latencies, 95)}


def run_setup(client: _Client, setup: str, sizes: list[tuple[int, int]], checkpoint: str, rate: float,
              frames: int, env: dict[str, str], namespace: str, max_batch_size: int = 0,
              batch_mode: Optional[str] = None) -> dict[str, Any]:
    """One setup ("one node" or "N nodes") with len(sizes) cameras: its rows and totals."""
    count = len(sizes)
    names = [f"cam{i}" for i in range(count)]
    node_args = ["-p", f"model_path:={checkpoint}", "-p", "device:=cpu"]
    if setup == "one node":
        nodes = [ChildGroup([sys.executable, "-m", NODE_MODULE, "--ros-args", "-r", f"__ns:={namespace}",
                             *node_args, "-p", f"cameras:=[{', '.join(names)}]",
                             "-p", f"max_batch_size:={max_batch_size}",
                             *(["-p", f"batch_mode:={batch_mode}"] if batch_mode else [])], env=env)]
        statuses = [f"{namespace}/perception_node: perception {name}" for name in names]
    else:
        nodes = [ChildGroup([sys.executable, "-m", NODE_MODULE, "--ros-args", "-r", f"__ns:={namespace}/{name}",
                             *node_args], env=env) for name in names]
        statuses = [f"{namespace}/{name}/perception_node: perception" for name in names]
    cameras: list[ChildGroup] = []
    for node in nodes:
        node.start()
    try:
        subs = [client.watch_depth(f"{namespace}/{name}") for name in names]
        client.spin_until(lambda: all(s.get_publisher_count() for s in subs)
                          and all(client.statuses.get(n, {}).get("lifecycle_state") == "active" for n in statuses),
                          300, f"{setup}: the nodes to be active", nodes)
        pids = [pid for node in nodes for pid in group_pids(node.proc.pid)]
        cpu_before = cpu_seconds(pids)
        for name, (height, width) in zip(names, sizes):
            cameras.append(ChildGroup([
                sys.executable, "-m", CAMERA_MODULE, "--ros-args", "-r", f"__ns:={namespace}/{name}",
                "-p", f"width:={width}", "-p", f"height:={height}", "-p", f"rate:={rate}", "-p", f"frames:={frames}",
                "-p", f"frame_id:={name}_optical", "-p", "wait_for_subscribers:=1"], env=env).start())
        peak_rss = 0
        next_sample = 0.0

        def cameras_done() -> bool:
            nonlocal peak_rss, next_sample
            if time.monotonic() >= next_sample:
                peak_rss = max(peak_rss, rss_bytes(pids))
                next_sample = time.monotonic() + 0.5
            return not any(camera.alive() for camera in cameras)

        client.spin_until(cameras_done, 120 + 3 * frames / rate, f"{setup}: the cameras to finish", cameras + nodes)

        def settled() -> bool:
            """Every frame a node received is accounted for, and every answer it sent has arrived here."""
            for name, status_name in zip(names, statuses):
                values = client.statuses.get(status_name, {})
                done = sum(int(values.get(k, 0)) for k in ("frames_processed", "frames_dropped", "frames_rejected",
                                                           "frames_skipped_no_subscriber"))
                answered = len(client.answers[f"{namespace}/{name}"])
                if int(values.get("frames_received", -1)) != done or answered < int(values.get("frames_processed", 0)):
                    return False
            return True

        client.spin_until(settled, 60, f"{setup}: the last answers", nodes)
        cpu = cpu_seconds(pids) - cpu_before
        rows = []
        for index, (name, status_name) in enumerate(zip(names, statuses)):
            row = _camera_row(client.answers[f"{namespace}/{name}"], sizes[index], f"{name}_optical", frames, rate,
                              client.statuses.get(status_name, {}))
            rows.append({"setup": setup, "camera": name, **row})
        batch = "1"
        if setup == "one node":
            values = client.statuses.get(statuses[0], {})
            batch = f"{values.get('batch_size_mean', 'nan')} ({values.get('batch_mode', '?').split(':')[0]})"
        return {"setup": setup, "cameras": count, "rows": rows, "answered": sum(r["answered"] for r in rows),
                "sent": sum(r["sent"] for r in rows), "wrong": sum(r["wrong"] for r in rows),
                "rss_mb": peak_rss / 2**20, "cpu_s": cpu, "batch_size_mean": batch}
    finally:
        client.unwatch()
        for child in cameras + nodes:
            child.stop(timeout=20)


# ---------------------------------------------------------------------------- report

def _table(results: list[dict[str, Any]]) -> str:
    lines = ["| cameras | setup | camera | size | answered | wrong | reached node | dropped | latency p50 ms | "
             "p95 ms |", "|" + "---|" * 10]
    for result in results:
        for r in result["rows"]:
            lines.append(f"| {result['cameras']} | {r['setup']} | {r['camera']} | {r['size']} | "
                         f"{r['answered']}/{r['sent']} ({r['answered'] / r['sent']:.0%}) | {r['wrong']} | "
                         f"{r['reached_node']} | {r['dropped']} | {r['latency_ms_p50']:.0f} | "
                         f"{r['latency_ms_p95']:.0f} |")
    lines += ["", "| cameras | setup | answered in total | RSS of the nodes (MB) | CPU time (s) | answered per CPU s "
              "| mean batch (mode) |", "|" + "---|" * 7]
    for result in results:
        per_cpu = result["answered"] / result["cpu_s"] if result["cpu_s"] else float("nan")
        lines.append(f"| {result['cameras']} | {result['setup']} | {result['answered']}/{result['sent']} | "
                     f"{result['rss_mb']:.0f} | {result['cpu_s']:.1f} | {per_cpu:.1f} | {result['batch_size_mean']} |")
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def _verdicts(results: list[dict[str, Any]]) -> list[str]:
    """One multi-camera node against N single ones, for each N: the issue's three targets."""
    lines = []
    by_count: dict[int, dict[str, Any]] = {}
    for result in results:
        by_count.setdefault(result["cameras"], {})[result["setup"]] = result
    for count, pair in sorted(by_count.items()):
        one, many = pair.get("one node"), pair.get(f"{count} nodes")
        if one is None or many is None or count < 2:
            continue
        worst = min(r["answered"] / r["sent"] for r in one["rows"])
        rss = one["rss_mb"] / many["rss_mb"] if many["rss_mb"] else float("nan")
        total = one["answered"] / many["answered"] if many["answered"] else float("nan")
        lines.append(f"{count} cameras: one node answered >= {worst:.0%} of each camera's frames (target "
                     f"{TARGET_ANSWERED_PER_CAMERA:.0%}: {_met(worst >= TARGET_ANSWERED_PER_CAMERA)}; wrong answers "
                     f"{one['wrong']}); RSS {rss:.2f}x the {count} nodes' (target <= {TARGET_RSS_RATIO}: "
                     f"{_met(rss <= TARGET_RSS_RATIO)}); answered {total:.2f}x theirs (target >= {TARGET_TOTAL_RATIO}: "
                     f"{_met(total >= TARGET_TOTAL_RATIO)}); CPU {one['cpu_s']:.1f} s vs {many['cpu_s']:.1f} s")
    return lines


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", default="1,2,4", help="numbers of cameras to run, comma separated")
    parser.add_argument("--sizes", default="480x640,720x1280", help="HxW of camera i, cycled; comma separated")
    parser.add_argument("--rate", type=float, default=5.0, help="frames per second of every camera")
    parser.add_argument("--frames", type=int, default=60, help="frames per camera")
    parser.add_argument("--width", type=float, default=0.25, help="width of the random-weight model")
    parser.add_argument("--checkpoint", help="checkpoint for the nodes (default: a random-weight MTAN of --width)")
    parser.add_argument("--max-batch-size", type=int, default=0, help="the multi-camera node's max_batch_size")
    parser.add_argument("--batch-mode", choices=("auto", "one_pass", "parallel"),
                        help="the multi-camera node's batch_mode (default: the node's default)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    counts = [int(v) for v in args.cameras.split(",") if v]
    size_cycle = _parse_sizes(args.sizes)

    env = {k: v for k, v in os.environ.items() if k not in USER_TRANSPORT_VARIABLES}  # as a user who set nothing
    for name in USER_TRANSPORT_VARIABLES:
        os.environ.pop(name, None)
    results = []
    with tempfile.TemporaryDirectory(prefix="mtan_multi_camera_") as folder:
        checkpoint = args.checkpoint or random_checkpoint(Path(folder), args.width)
        client = _Client()
        try:
            for run, count in enumerate(counts):
                sizes = [size_cycle[i % len(size_cycle)] for i in range(count)]
                setups = ["one node"] if count == 1 else ["one node", f"{count} nodes"]
                for setup in setups:
                    namespace = f"/mtan_multi_bench_{os.getpid()}_{run}_{setup.split()[0]}"
                    print(f"{count} cameras, {setup} ...", flush=True)
                    results.append(run_setup(client, setup, sizes, checkpoint, args.rate, args.frames, env,
                                             namespace, args.max_batch_size, args.batch_mode))
        finally:
            client.close()
    print()
    print(_table(results))
    print()
    for line in _verdicts(results):
        print(line)
    model = args.checkpoint or f"random-weight MTAN width {args.width}"
    print(f"{args.frames} frames per camera at {args.rate:g} Hz; model {model}; one node's max_batch_size "
          f"{args.max_batch_size}, batch_mode {args.batch_mode or 'default'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        write_json(args.json, "multi_camera", results, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
