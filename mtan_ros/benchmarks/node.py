"""What a camera costs the perception node beyond the model, against the bare transport floor, in one run.

    python -m mtan_ros.benchmarks.node [--sizes 480x640,1024x2048] [--output-resolution camera,model]
        [--checkpoint best.pt] [--device cpu|cuda] [--frames 20] [--threads 0] [--json results.json]

Three processes talk over DDS, all on the package's Fast DDS shared-memory profile
(unless you configured Fast DDS yourself): this client, the perception node, and an
echo — a bare rclpy process that answers each image with a 32FC1 image of the size
the node would publish, and does nothing else. For every camera size and output
resolution the client sends one frame at a time (nothing queues) and measures, frame
by frame interleaved so that both see the same machine load:
  node  publish here -> the node's `depth` for that frame back here;
  floor publish here -> the echo's answer of the same size back here.
Each camera-size frame is paired with a frame already at the model's input size sent
just before it; the difference is what the camera's resolution itself costs (`node
cost`, `floor cost`), with the model's time cancelled out frame by frame. `node - floor` is what the node adds beyond
moving the messages. The node's own /diagnostics give its inference time, and a bare
Predictor in this process (same threads) gives the model alone.
Without --checkpoint a random-weight MTAN (width --width, 7 classes, 128x256 input)
is used: latency does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from mtan_ros.benchmarks.report import write_json
from mtan_ros.common.processes import ChildGroup
from mtan_ros.data.classes import CITYSCAPES_7
from mtan_ros.depth_encoding import METRIC
from mtan_ros.inference import Predictor
from mtan_ros.model.checkpoint import CheckpointMeta, ModelSpec, save_checkpoint
from mtan_ros.model import build_model
from mtan_ros.ros.camera.transport import large_image_env

ECHO_NODE = "benchmark_echo"


# ---------------------------------------------------------------------------- the echo process

def echo_main(argv: Optional[list[str]] = None) -> int:
    """A bare rclpy process: answers every image_raw with a 32FC1 `answer` of the size its frame_id asks for.

    frame_id "reply:HxW" asks for an H x W answer; anything else for the input's size.
    """
    import rclpy  # optional: pip install .[ros] (rclpy)
    # optional: pip install .[ros] (rclpy)
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image  # optional: pip install .[ros] (rclpy)

    from mtan_ros.ros.camera import qos  # optional: pip install .[ros] (rclpy)
    # optional: pip install .[ros] (rclpy)
    from mtan_ros.ros.camera.image_messages import new_image_msg

    rclpy.init(args=argv)
    node = rclpy.create_node(ECHO_NODE)
    replies: dict[tuple[int, int], Any] = {}
    answer_pub = node.create_publisher(Image, "answer", qos.output_qos())

    def on_image(msg: Image) -> None:
        size = (msg.height, msg.width)
        if msg.header.frame_id.startswith("reply:"):
            height, width = msg.header.frame_id[len("reply:"):].split("x")
            size = (int(height), int(width))
        if size not in replies:
            replies[size] = new_image_msg(None, size[0], size[1], "32FC1")[0]
        reply = replies[size]
        reply.header = msg.header
        answer_pub.publish(reply)

    node.create_subscription(Image, "image_raw", on_image, qos.input_qos(qos.RELIABLE))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ---------------------------------------------------------------------------- the client

def _scene(height: int, width: int) -> np.ndarray:
    # optional: pip install .[ros] (rclpy)
    from mtan_ros.ros.replay.synthetic_camera import street_frame

    return street_frame(height, width, seed=0)


def random_checkpoint(folder: Path, width: float) -> str:
    torch.manual_seed(0)
    tasks = {"semantic": 7, "depth": 1}
    model = build_model("mtan", tasks, width).eval()
    meta = CheckpointMeta(model=ModelSpec(arch="mtan", tasks=tasks, width=width),
                          class_names=list(CITYSCAPES_7.names), class_colors=[tuple(c) for c in CITYSCAPES_7.colors],
                          input_size=(128, 256), depth=METRIC, info={"note": "random weights for benchmark_node"})
    return str(save_checkpoint(folder / "benchmark_mtan.pt", model.state_dict(), meta))


class _Client:
    """This process's rclpy node: publishes frames to the node and the echo and times their answers."""

    def __init__(self, node_ns: str, echo_ns: str) -> None:
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
        self.node = rclpy.create_node("mtan_benchmark_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.arrived: dict[tuple[int, int], float] = {}
        self.diagnostics: dict[str, str] = {}
        self._diagnostics_name = f"{node_ns}/perception_node: perception"
        out_qos = qos.image_output_qos_for_subscribers()
        self.to_node = self.node.create_publisher(Image, f"{node_ns}/image_raw", 10)
        self.to_echo = self.node.create_publisher(Image, f"{echo_ns}/image_raw", 10)
        self.subs = [self.node.create_subscription(Image, f"{node_ns}/depth", self._on_answer, out_qos),
                     self.node.create_subscription(Image, f"{echo_ns}/answer", self._on_answer, out_qos)]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._stamp_ns = 1_000_000_000

    def _on_answer(self, msg: Any) -> None:
        self.arrived.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec), time.perf_counter())

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == self._diagnostics_name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait_connected(self, processes: list[ChildGroup], timeout: float = 300.0) -> None:
        end = time.monotonic() + timeout
        while not (self.to_node.get_subscription_count() and self.to_echo.get_subscription_count()
                   and all(sub.get_publisher_count() for sub in self.subs)):
            dead = [p for p in processes if not p.alive()]
            if dead or time.monotonic() > end:
                raise RuntimeError("a benchmark process did not start:\n" + "\n".join(p.output() for p in processes))
            self.executor.spin_once(timeout_sec=0.1)

    def round_trip(self, publisher: Any, msg: Any, timeout: float = 60.0) -> float:
        """ms from publishing `msg` to its answer arriving; a frame that gets no answer is sent again."""
        for _ in range(5):
            self._stamp_ns += 1_000_000
            key = (self._stamp_ns // 1_000_000_000, self._stamp_ns % 1_000_000_000)
            msg.header.stamp.sec, msg.header.stamp.nanosec = key
            sent = time.perf_counter()
            publisher.publish(msg)
            while key not in self.arrived and time.perf_counter() < sent + timeout:
                self.executor.spin_once(timeout_sec=0.5)  # wakes on arrival; the time is taken in the callback
            if key in self.arrived:
                return (self.arrived.pop(key) - sent) * 1e3
        raise RuntimeError(f"no answer to a {msg.width}x{msg.height} frame after 5 tries")

    def set_node_parameter(self, node_fqn: str, name: str, value: Any) -> None:
        # optional: pip install .[ros] (rclpy)
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter  # optional: pip install .[ros] (rclpy)

        client = self.node.create_client(SetParameters, f"{node_fqn}/set_parameters")
        client.wait_for_service(timeout_sec=30)
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        while not future.done():
            self.executor.spin_once(timeout_sec=0.1)
        if not future.result().results[0].successful:
            raise RuntimeError(f"cannot set {name}: {future.result().results[0].reason}")
        self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def _image(height: int, width: int, reply: Optional[tuple[int, int]]) -> Any:
    # optional: pip install .[ros] (rclpy)
    from mtan_ros.ros.camera.image_messages import array_to_image_msg

    msg = array_to_image_msg(_scene(height, width), "rgb8")
    msg.header.frame_id = f"reply:{reply[0]}x{reply[1]}" if reply else "camera_optical_frame"
    return msg


def measure(client: _Client, node_fqn: str, sizes: list[tuple[int, int]], resolutions: list[str],
            model_size: tuple[int, int], frames: int, predictor: Any) -> list[dict[str, Any]]:
    """Node, floor and bare Predictor per (size, resolution), each frame paired with a model-size frame.

    Every iteration sends a model-size frame and a camera-size frame to the node and to
    the echo, so each cost is a difference of two round trips taken moments apart; the
    row reports medians of those differences (the model's time cancels frame by frame).
    """
    rows = []
    for resolution in resolutions:
        client.set_node_parameter(node_fqn, "output_resolution", resolution)
        for size in sizes:
            reply = size if resolution == "camera" else model_size
            ref_node, ref_echo = _image(*model_size, None), _image(*model_size, model_size)
            node_msg, echo_msg = _image(*size, None), _image(*size, reply)
            image = _scene(*size)
            samples: dict[str, list[float]] = {"node": [], "floor": [], "node_cost": [], "floor_cost": [],
                                               "predictor": []}
            for index in range(frames + 3):  # the first 3 warm caches and allocators
                start = time.perf_counter()
                predictor(image)
                bare = (time.perf_counter() - start) * 1e3
                node_ref = client.round_trip(client.to_node, ref_node)
                node = client.round_trip(client.to_node, node_msg)
                floor_ref = client.round_trip(client.to_echo, ref_echo)
                floor = client.round_trip(client.to_echo, echo_msg)
                if index >= 3:
                    for key, value in (("node", node), ("floor", floor), ("node_cost", node - node_ref),
                                       ("floor_cost", floor - floor_ref), ("predictor", bare)):
                        samples[key].append(value)
            row = {"camera": f"{size[0]}x{size[1]}", "output_resolution": resolution,
                   **{f"{key}_ms": statistics.median(values) for key, values in samples.items()},
                   "node_inference_ms": float(client.diagnostics.get("inference_ms_p50", "nan"))}
            row["node_minus_floor_ms"] = statistics.median(
                [n - f for n, f in zip(samples["node_cost"], samples["floor_cost"])])
            rows.append(row)
            print(f"  {row['camera']} {resolution}: node cost {row['node_cost_ms']:.1f} ms, floor cost "
                  f"{row['floor_cost_ms']:.1f} ms", flush=True)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| camera (HxW) | outputs at | node e2e ms | floor e2e ms | node cost ms | floor cost ms | "
             "node - floor ms | node inference ms | bare Predictor ms |",
             "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['camera']} | {r['output_resolution']} | {r['node_ms']:.1f} | {r['floor_ms']:.1f} | "
                     f"{r['node_cost_ms']:.1f} | {r['floor_cost_ms']:.1f} | {r['node_minus_floor_ms']:.1f} | "
                     f"{r['node_inference_ms']:.1f} | {r['predictor_ms']:.1f} |")
    return "\n".join(lines)


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        height, width = item.lower().split("x")
        sizes.append((int(height), int(width)))
    return sizes


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="480x640,1024x2048", help="camera sizes HxW, comma separated")
    parser.add_argument("--output-resolution", default="camera,model",
                        help="comma separated: camera, model (default: both)")
    parser.add_argument("--checkpoint", help="checkpoint (default: a random-weight MTAN, see --width)")
    parser.add_argument("--width", type=float, default=0.25, help="width of the default random model")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per size and resolution")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="the node's inference_threads (0 = its default)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)  # the echo process
    args, ros_args = parser.parse_known_args(argv)
    if args.echo:
        return echo_main(ros_args)
    sizes = _parse_sizes(args.sizes)
    resolutions = [r.strip() for r in args.output_resolution.split(",") if r.strip()]
    if not resolutions or set(resolutions) - {"camera", "model"}:
        parser.error(f"--output-resolution takes camera, model or camera,model; got {args.output_resolution!r}")

    # optional: pip install .[ros] (rclpy)
    from mtan_ros.ros.node.perception_node import default_inference_threads

    transport = large_image_env()
    os.environ.update(transport)  # before rclpy starts: this process publishes the large images
    # Processes take turns on the same cores: OpenMP threads that spin after their work would
    # steal the cores from the process that runs next.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env = dict(os.environ)
    pid = os.getpid()
    node_ns, echo_ns = f"/mtan_bench_node_{pid}", f"/mtan_bench_echo_{pid}"
    with tempfile.TemporaryDirectory(prefix="mtan_benchmark_") as folder:
        checkpoint = args.checkpoint or random_checkpoint(Path(folder), args.width)
        threads = args.threads or default_inference_threads()
        torch.set_num_threads(threads)
        predictor = Predictor.from_checkpoint(checkpoint, device=args.device, precision=args.precision)
        model_size = tuple(predictor.input_size)
        node = ChildGroup([sys.executable, "-m", "mtan_ros.ros.node.perception_node", "--ros-args",
                           "-r", f"__ns:={node_ns}", "-p", f"model_path:={checkpoint}",
                           "-p", f"device:={args.device}", "-p", f"precision:={args.precision}",
                           "-p", f"inference_threads:={args.threads}"], env=env).start()
        echo = ChildGroup([sys.executable, "-m", "mtan_ros.benchmarks.node", "--echo", "--ros-args",
                           "-r", f"__ns:={echo_ns}"], env=env).start()
        client = _Client(node_ns, echo_ns)
        try:
            client.wait_connected([node, echo])
            print(f"checkpoint: {args.checkpoint or f'random-weight MTAN width {args.width}, 128x256 input'}; "
                  f"{predictor.device}, {predictor.precision}, {threads} inference threads; transport: "
                  f"{transport or 'as configured by the environment'}; load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs", flush=True)
            rows = measure(client, f"{node_ns}/perception_node", sizes, resolutions, model_size, args.frames,
                           predictor)
        finally:
            client.close()
            node.stop()
            echo.stop()
    print()
    print(_table(rows))
    print(f"medians of {args.frames} frames; cost = a frame's round trip minus that of a frame already at the "
          f"model's input size ({model_size[0]}x{model_size[1]}) sent just before it; load average after the run "
          f"{os.getloadavg()[0]:.1f}")
    if args.json:
        write_json(args.json, "node", rows, settings={"threads": threads, "device": str(predictor.device),
                                                      "frames": args.frames})
    return 0


if __name__ == "__main__":
    sys.exit(main())
