"""How much latency the ROS node adds on top of the bare Predictor, measured in one run.

    python -m mtan_ros.ros.benchmark_node [--checkpoint best.pt] [--sizes 256x512,1024x2048]

For each camera size it measures, on this machine and in this run:
  predictor  the Predictor called directly on an RGB array (median of --frames calls);
  end-to-end a camera image published from this process until the node's `depth` for it
             arrives back here (the node runs as a separate process, DDS in between, one
             frame at a time so that nothing queues);
  added      end-to-end minus predictor: conversion, copies, serialisation, transport.
The two are interleaved frame by frame (Predictor call, then one node round trip), so
both see the same machine load. The node's own /diagnostics (inference, receive to
publish) are printed too: their difference is the node's work outside the model.
Without --checkpoint a random-weight full-width MTAN (7 classes, 128x256 input, the
paper's Cityscapes setting) is written to a temporary folder: latency does not depend
on the weights. Fast DDS gets the package's shared-memory profile unless you configured
Fast DDS yourself (see config/fastdds_shm.xml).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        height, width = item.lower().split("x")
        sizes.append((int(height), int(width)))
    return sizes


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A street-like RGB test image (sky, facades, road); content does not change the timing."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[: height // 2] = (135, 185, 235)
    img[height // 2:] = (90, 90, 95)
    for x0 in range(0, width, max(1, width // 8)):
        img[height // 6: height // 2, x0: x0 + width // 10] = rng.integers(60, 200, 3)
    noise = rng.integers(0, 12, (height, width, 1), dtype=np.uint8)
    return img + noise


def _default_checkpoint(folder: Path) -> str:
    import torch

    from mtan_ros.depth_encoding import METRIC
    from mtan_ros.inference.checkpoint import CheckpointMeta, ModelSpec, save_checkpoint
    from mtan_ros.model import build_model

    torch.manual_seed(0)
    tasks = {"semantic": 7, "depth": 1}
    model = build_model("mtan", tasks, 1.0).eval()
    meta = CheckpointMeta(
        model=ModelSpec(arch="mtan", tasks=tasks, width=1.0),
        class_names=[f"class{i}" for i in range(7)],
        class_colors=[(40 * i, 255 - 30 * i, 128) for i in range(7)],
        input_size=(128, 256),
        depth=METRIC,
        info={"note": "random weights for benchmark_node"},
    )
    return str(save_checkpoint(folder / "benchmark_mtan.pt", model.state_dict(), meta))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class _NodeUnderTest:
    """The perception node as a subprocess plus a client that sends frames and times the answers."""

    def __init__(self, checkpoint: str, device: str, precision: str, all_outputs: bool, env: dict[str, str]):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from mtan_ros.ros.qos import image_input_qos, image_output_qos_for_subscribers

        self.namespace = f"/mtan_benchmark_{os.getpid()}_{time.monotonic_ns()}"
        self._log = tempfile.NamedTemporaryFile(prefix="mtan_benchmark_node_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mtan_ros.ros.perception_node", "--ros-args", "-r", f"__ns:={self.namespace}",
             "-p", f"model_path:={checkpoint}", "-p", f"device:={device}", "-p", f"precision:={precision}"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("mtan_benchmark_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.arrived: dict[tuple[int, int], float] = {}
        self.diagnostics: dict[str, str] = {}
        self.pub = self.node.create_publisher(Image, f"{self.namespace}/image_raw", image_input_qos())
        names = ["depth", "semantic", "semantic_color", "overlay"] if all_outputs else ["depth"]
        self.subs = [
            self.node.create_subscription(Image, f"{self.namespace}/{name}",
                                          self._on_depth if name == "depth" else (lambda msg: None),
                                          image_output_qos_for_subscribers())
            for name in names
        ]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._stamp_ns = 1_000_000_000
        end = time.monotonic() + 300
        while not (self.pub.get_subscription_count() and all(s.get_publisher_count() for s in self.subs)):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the node did not start:\n" + Path(self._log.name).read_text())
            self.executor.spin_once(timeout_sec=0.1)

    def _on_depth(self, msg) -> None:
        self.arrived.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec), time.perf_counter())

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(self.namespace + "/"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def round_trip(self, msg, timeout: float = 60.0) -> tuple[float, int]:
        """(ms from publishing `msg` to its depth arriving, frames lost on the way)."""
        lost = 0
        while True:
            self._stamp_ns += 1_000_000
            key = (self._stamp_ns // 1_000_000_000, self._stamp_ns % 1_000_000_000)
            msg.header.stamp.sec, msg.header.stamp.nanosec = key
            sent = time.perf_counter()
            self.pub.publish(msg)
            while key not in self.arrived and time.perf_counter() < sent + timeout:
                self.executor.spin_once(timeout_sec=0.5)  # wakes on arrival; the time is taken in the callback
            if key in self.arrived:
                return (self.arrived[key] - sent) * 1e3, lost
            lost += 1  # best effort may lose a frame: send it again
            if lost > 5:
                raise RuntimeError(f"{lost} frames of {msg.width}x{msg.height} lost; is the Fast DDS transport "
                                   "configured for large images (config/fastdds_shm.xml)?")

    def node_timings(self, processed: int, timeout: float = 30.0) -> dict[str, str]:
        """The node's own /diagnostics once it has counted `processed` frames."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.diagnostics and int(self.diagnostics["frames_processed"]) >= processed:
                return self.diagnostics
            self.executor.spin_once(timeout_sec=0.1)
        return self.diagnostics

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        os.unlink(self._log.name)


_PREDICTOR = None


def _load_predictor(checkpoint: str, device: str, precision: str) -> str:
    global _PREDICTOR
    from mtan_ros.inference import Predictor

    _PREDICTOR = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
    return f"{_PREDICTOR.device}, {_PREDICTOR.precision}"


def _timed_call(image: np.ndarray) -> float:
    start = time.perf_counter()
    _PREDICTOR(image)
    return (time.perf_counter() - start) * 1e3


def measure(checkpoint: str, size: tuple[int, int], frames: int, device: str, precision: str, all_outputs: bool,
            env: dict[str, str], predictor: ThreadPoolExecutor) -> dict:
    """Bare Predictor and node round trip, interleaved frame by frame so both see the same machine load."""
    from mtan_ros.ros.image_messages import array_to_image_msg

    height, width = size
    image = _scene(height, width)
    msg = array_to_image_msg(image, "rgb8")
    msg.header.frame_id = "camera_optical_frame"
    node = _NodeUnderTest(checkpoint, device, precision, all_outputs, env)
    try:
        bare, e2e, lost = [], [], 0
        for index in range(frames + 3):  # the first 3 warm caches and allocators
            bare_ms = predictor.submit(_timed_call, image).result()
            e2e_ms, lost_now = node.round_trip(msg)
            lost += lost_now
            if index >= 3:
                bare.append(bare_ms)
                e2e.append(e2e_ms)
        diagnostics = node.node_timings(frames + 3)
    finally:
        node.close()
    return {"bare": bare, "e2e": e2e, "lost": lost, "node": diagnostics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint to use (default: a random-weight full-width MTAN)")
    parser.add_argument("--sizes", default="256x512,1024x2048", help="camera sizes HxW, comma separated")
    parser.add_argument("--frames", type=int, default=15, help="timed frames per size and method")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS here and in the node (default: PyTorch's choice)")
    parser.add_argument("--all-outputs", action="store_true",
                        help="also subscribe to semantic, semantic_color and overlay (the node then computes them)")
    args = parser.parse_args(argv)
    sizes = _parse_sizes(args.sizes)

    from mtan_ros.ros.transport import large_image_env

    transport = large_image_env()
    os.environ.update(transport)  # before rclpy starts: this process publishes the large images
    if args.threads:  # the same intra-op threads here and in the node, before torch starts
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    # Two processes take turns on the same cores here: OpenMP threads that spin after their
    # work would steal the cores from the other process and inflate whichever runs next.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="mtan_benchmark_") as folder:
        checkpoint = args.checkpoint or _default_checkpoint(Path(folder))
        print(f"checkpoint: {args.checkpoint or 'random-weight MTAN width 1.0, 7 classes, 128x256 input'}")
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        print(f"transport: {transport or 'as configured by the environment'}; OMP_NUM_THREADS {threads}, "
              f"OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        # The node runs the Predictor on a worker thread; so does this comparison (PyTorch's CPU
        # threading behaves differently on the main thread, which would skew the difference).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bare-predictor") as worker:
            label = worker.submit(_load_predictor, checkpoint, args.device, args.precision).result()
            results = {size: measure(checkpoint, size, args.frames, args.device, args.precision,
                                     args.all_outputs, env, worker) for size in sizes}
            worker.submit(lambda: _PREDICTOR.close()).result()

    outputs = "depth, semantic, semantic_color, overlay" if args.all_outputs else "depth only"
    print(f"\nnode overhead ({label}; subscribed: {outputs}; {args.frames} frames per size)")
    print("| camera | Predictor ms median (min) | end-to-end ms median (min) | added ms median (min) "
          "| added / Predictor | node-reported: inference, receive to publish ms | end-to-end minus "
          "node inference ms | lost |")
    print("|" + "|".join("---" for _ in range(8)) + "|")
    for (height, width), r in results.items():
        p50, pmin = statistics.median(r["bare"]), min(r["bare"])
        e50, emin = statistics.median(r["e2e"]), min(r["e2e"])
        node_inference = float(r["node"].get("inference_ms_p50", "nan"))
        print(f"| {width}x{height} | {p50:.1f} ({pmin:.1f}) | {e50:.1f} ({emin:.1f}) | {e50 - p50:.1f} "
              f"({emin - pmin:.1f}) | {100 * (e50 - p50) / p50:.1f}% | {node_inference:.1f}, "
              f"{r['node'].get('processing_ms_p50', '?')} | {e50 - node_inference:.1f} | {r['lost']} |")
    print(f"load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs. On a busy machine the "
          "Predictor's own time varies by more than the node adds; the last columns compare against the "
          "node's inference time for the same frames instead.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
