"""The real-time perception node: camera image in, metric depth and semantic labels out.

Run it with `ros2 launch mtan_ros perception.launch.py model_path:=...`, or
`ros2 run mtan_ros perception_node --ros-args -p model_path:=...`, or
`python -m mtan_ros.ros.node.perception_node --ros-args -p model_path:=...`.

A managed (lifecycle) node: configure reads the parameters and loads the model (with
one warm-up inference), activate subscribes to the camera and starts publishing,
deactivate stops taking frames (the model stays loaded), cleanup releases the model
(and GPU memory); `ros2 lifecycle set/get` and lifecycle managers drive it. With
`autostart` (the default) it configures and activates itself, so `ros2 run` works
alone; it then exits with code 1 when the model cannot be loaded.

How it stays real time: each camera subscription (keep last 1, reliability matched
to the camera, see camera_input) only drops the message into its camera's place in a
BatchScheduler; one worker thread takes the newest frame of every camera that has
one, decodes each, runs the Predictor once on the batch and publishes each result
on its camera's outputs. Frames that arrive while the worker is busy replace each
other and are counted as dropped, so results always describe a recent image, and a
stopped camera never holds up the others. Outputs nobody subscribes to are not
computed (per camera); with no subscriber at all the model does not run.

Topics (relative, so namespaces and remaps apply), for one camera (`cameras` empty):
  in   image_raw (sensor_msgs/Image) or image_raw/compressed (with compressed_input),
       camera_info (optional; needed for points and depth/camera_info)
  out  depth (32FC1 metres, NaN = no estimate), depth/camera_info, semantic (mono8),
       semantic_color (rgb8), overlay (rgb8), points (PointCloud2), /diagnostics
With `cameras: [front, rear]` the same topics under each name: front/image_raw,
front/camera_info in; front/depth, ... out. Every output carries its input image's
header, and its size unless `output_resolution: model` asks for the network's size.
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time
import traceback
from typing import Any, Optional, Protocol, TYPE_CHECKING

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from mtan_ros.common.text import quote, quote_path
from mtan_ros.common.entry import EXIT_OK, EXIT_USER_ERROR, first_line
from mtan_ros.errors import CheckpointError, ConfigError, NodeStartupError
from mtan_ros.imaging.compressed import jpeg_decoder_name
from mtan_ros.imaging.limits import keep_frame_buffers_mapped, release_freed_memory
from mtan_ros.pipeline.batch_scheduler import BatchScheduler
from mtan_ros.pipeline.throttle import Throttle
from mtan_ros.ros.camera import qos
from mtan_ros.ros.camera import transport
from mtan_ros.ros.camera.cv_bridge_check import bridge_status
from mtan_ros.ros.node.camera_state import CameraState, Job
from mtan_ros.ros.node.camera_topics import check_camera_names
from mtan_ros.ros.node.class_metadata import ClassMetadata
from mtan_ros.ros.node.diagnostics import BatchStats, diagnostic_array
from mtan_ros.ros.node.perception_params import NODE_NAME, SPEC_BY_NAME, SPECS, load_perception_defaults
from mtan_ros.ros.node_main import run_node
from mtan_ros.ros.params import coerce, declare_parameters, refuse_change

if TYPE_CHECKING:
    from mtan_ros.inference import Predictor  # torch, as above

# Class ids travel as mono8, and 255 means "void" in ground truth and evaluation.
MAX_CLASSES = 255
# How often the camera's publishers are looked at (reliability, silence diagnosis).
GRAPH_PERIOD_S = 0.2


def default_inference_threads(cpu_count: Optional[int] = None, environ: Optional[dict] = None) -> int:
    """CPU threads for inference when the parameter is 0: OMP_NUM_THREADS if the user set it, else every core.

    Measured on 2 cores (README, Threads): a full-width model needs both cores (773 ms end
    to end at 2 Mpx against 957 ms with one thread), and the node's inference then takes
    no longer than the bare model's.
    """
    given = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return cpu_count or os.cpu_count() or 1


class PredictorFactory(Protocol):
    """Makes the node's predictor when it is configured, from model_path and the configure parameters.

    The node owns what it returns (cleanup closes it). A seam for tests and tools that
    need the node without a checkpoint; CheckpointError, ValueError, RuntimeError and
    ImportError it raises become one-line configure refusals.
    """

    def __call__(self, path: str, *, device: str, precision: str, compile: bool, backend: str,
                 threads: int) -> "Predictor": ...


def load_checkpoint_predictor(path: str, *, device: str, precision: str, compile: bool, backend: str,
                              threads: int) -> "Predictor":
    """The default PredictorFactory: Predictor.from_checkpoint, with torch's CPU threads set first.

    torch is imported here, so that only a node that really loads a model pays for it.
    """
    import torch  # torch: +1.3 s, measured with -X importtime; only a node that loads a model

    from mtan_ros.inference import Predictor  # torch, as above

    torch.set_num_threads(threads)
    return Predictor.from_checkpoint(path, device=device, precision=precision, compile=compile, backend=backend,
                                     threads=threads)


class PerceptionNode(LifecycleNode):
    """Subscribes one camera or several, runs the Predictor on their frames in batches off the executor
    thread, publishes each camera's results on its own outputs."""

    def __init__(self, predictor_factory: PredictorFactory = load_checkpoint_predictor, **node_kwargs: Any) -> None:
        """`predictor_factory` is called by each configure; `node_kwargs` go to rclpy's Node (context, ...)."""
        super().__init__(NODE_NAME, **node_kwargs)
        try:
            self.p = declare_parameters(self, SPECS, load_perception_defaults(node_name=self.get_name()))
        except ConfigError as exc:
            raise NodeStartupError(str(exc)) from None
        self._predictor_factory = predictor_factory
        self.predictor: Any = None
        self._classes: Optional[ClassMetadata] = None
        self._palette_lut: Optional[np.ndarray] = None
        self._throttle = Throttle(self.p["warning_period"])
        # Made now, so that /diagnostics names them before the first configure; configure re-makes them when
        # the `cameras` parameter changed in between.
        self.cameras: list[CameraState] = self._make_cameras(self.p["cameras"])
        self._scheduler = BatchScheduler()
        self._batches = BatchStats()
        self._stop = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._graph_timer: Any = None
        # A plain publisher, not a lifecycle one: /diagnostics reports the node in every state (unconfigured and
        # inactive included, e.g. why configure failed), where a lifecycle publisher would stay silent.
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)

    # ------------------------------------------------------------------ lifecycle

    @property
    def lifecycle_state(self) -> str:
        """rclpy's current state label (unconfigured, inactive, active, configuring, ...), never a copy.

        rclpy has no public getter; its get_state service reads this same state machine.
        """
        return self._state_machine.current_state[1]

    def start(self) -> bool:
        """Configure and activate (what `autostart` does); False when configuring failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except NodeStartupError as exc:
            self._release_model()
            if self.context.ok():
                self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:
            self._release_model()
            if not self.context.ok():  # shut down while loading (Ctrl-C, SIGTERM): not a failure to report
                return TransitionCallbackReturn.FAILURE
            # A bug, not a user error: rclpy would swallow it silently, so say it with its traceback.
            self.get_logger().error(f"configure failed unexpectedly: {type(exc).__name__}: {first_line(exc)}\n"
                                    + traceback.format_exc())
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # The base class enables the output publishers; first, so that the worker's first results are not dropped.
        result = super().on_activate(state)
        if result == TransitionCallbackReturn.SUCCESS:
            self._activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()  # the worker stops before the base class disables the output publishers
        self.get_logger().info("inactive: not taking frames (the model stays loaded)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self.get_logger().info("unconfigured: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_model()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release_model()
        return super().on_error(state)

    # ------------------------------------------------------------------ configure / activate

    def _configure(self) -> None:
        names = self._camera_names(self.p["cameras"])
        if names != [camera.name for camera in self.cameras]:
            self.cameras = self._make_cameras(names)
        self.predictor = self._load_predictor()
        classes = len(self.predictor.class_names)
        if classes > MAX_CLASSES:
            raise NodeStartupError(
                f"model_path {quote_path(self.p['model_path'])} has {classes} classes, but semantic is published as "
                f"mono8 class ids (at most {MAX_CLASSES} classes; 255 is void): use a checkpoint with fewer classes")
        self._palette_lut = self._make_palette_lut(self.predictor.class_colors)
        try:
            plan = self.predictor.plan_batches(self._batch_limit(), self.p["batch_mode"])
        except ValueError as exc:
            raise NodeStartupError(f"parameter {first_line(exc)}") from None
        # The warm-up's candidates (precision, batch mode) leave freed memory in the allocator; hand it back.
        release_freed_memory()
        for camera in self.cameras:
            camera.configure()
        self._classes = ClassMetadata(self, self.predictor.class_names, self.predictor.class_colors)
        model = quote_path(self.p["model_path"]) if self.p["model_path"] else "<given>"
        served = f", cameras {', '.join(names)}" if len(names) > 1 or names[0] else ""
        self.get_logger().info(
            f"configured: model {model} on {self.predictor.device}, "
            f"{self.predictor.precision}, {classes} classes, input {self._input_size()[0]}x{self._input_size()[1]}"
            f"{served}")
        choice = getattr(self.predictor, "precision_choice", None)
        if choice is not None:
            self.get_logger().info(f"precision {choice}")
        if len(self.cameras) > 1:
            self.get_logger().info(f"batches {plan}")

    @staticmethod
    def _camera_names(value: list[str]) -> list[str]:
        """The `cameras` parameter checked: distinct relative names; [""] (today's topics) when empty."""
        try:
            check_camera_names(value)
        except ConfigError as exc:
            raise NodeStartupError(f"parameter {exc}") from None
        return list(value) or [""]

    def _make_cameras(self, names: list[str]) -> list[CameraState]:
        return [CameraState(self, name, self.p, self._warn) for name in (names or [""])]

    def _load_predictor(self) -> Any:
        path = self.p["model_path"]
        if not path:
            raise NodeStartupError(
                "parameter model_path is empty: pass the checkpoint to use, e.g. "
                "`ros2 launch mtan_ros perception.launch.py model_path:=/path/to/checkpoint` or "
                "`--ros-args -p model_path:=/path/to/checkpoint` (mtan-train and mtan-demo write checkpoints)")
        threads = self.p["inference_threads"] or default_inference_threads()
        try:
            predictor = self._predictor_factory(path, device=self.p["device"], precision=self.p["precision"],
                                                compile=self.p["compile"], backend=self.p["backend"],
                                                threads=threads)
        except CheckpointError as exc:
            raise NodeStartupError(f"cannot load model_path {quote_path(path)}: {exc}") from None
        except (ValueError, RuntimeError, ImportError) as exc:  # unknown device/precision, CUDA or a runtime absent
            raise NodeStartupError(
                f"cannot start the model from {quote_path(path)} on device={quote(self.p['device'])} "
                f"precision={self.p['precision']!r} backend={self.p['backend']!r}: {first_line(exc)}") from None
        # One inference now, of a full batch, so that the first frames do not pay for lazy initialisation.
        height, width = predictor.input_size
        try:
            predictor.predict_batch([np.zeros((height, width, 3), np.uint8)] * self._batch_limit())
        except (ValueError, RuntimeError) as exc:
            raise NodeStartupError(f"model_path {quote_path(path)} loads but cannot run on {predictor.device}: "
                                   f"{first_line(exc)}") from None
        return predictor

    def _input_size(self) -> tuple[int, int]:
        return tuple(self.predictor.input_size)

    @staticmethod
    def _make_palette_lut(colors: Any) -> np.ndarray:
        palette = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[:256]
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: len(palette), 0, :] = palette
        return lut

    def _activate(self) -> None:
        profile = transport.profile_path()
        keep_frame_buffers_mapped()
        self._scheduler = BatchScheduler(self.cameras)
        for camera in self.cameras:
            camera.activate(self._scheduler, self._requested_reliability, str(profile) if profile else "")
        # Steady clock: with use_sim_time a ROS-time timer would wait for the first /clock message.
        self._graph_timer = self.create_timer(GRAPH_PERIOD_S, self._refresh_inputs, clock=self._steady)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="mtan-inference", daemon=True)
        self._worker.start()
        backend, _ = bridge_status()
        inputs = ", ".join(camera.image_topic for camera in self.cameras)
        batches = f"; batches of up to {self._batch_limit()}" if len(self.cameras) > 1 else ""
        self.get_logger().info(f"active: {inputs} -> depth, semantic, semantic_color, overlay, points"
                               f"{batches} (image conversion: {backend})")

    def _batch_limit(self) -> int:
        """Frames per forward pass: max_batch_size, or one per camera when it is 0 (a batch never holds more)."""
        return min(self.p["max_batch_size"] or len(self.cameras), len(self.cameras))

    def _requested_reliability(self) -> str:
        return self.p["input_reliability"]

    # ------------------------------------------------------------------ deactivate / cleanup

    def _deactivate(self) -> None:
        self._stop.set()
        self._scheduler.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)  # a daemon thread: never blocks the exit for longer
            self._worker = None
        if self._graph_timer is not None:
            self.destroy_timer(self._graph_timer)
            self._graph_timer = None
        for camera in self.cameras:
            camera.deactivate()

    def _release_model(self) -> None:
        if self._classes is not None:
            self._classes.release()
            self._classes = None
        for camera in self.cameras:
            camera.release()
        device = str(getattr(self.predictor, "device", ""))
        if self.predictor is not None:
            self.predictor.close()
        self.predictor = None
        gc.collect()
        if device.startswith("cuda"):
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def close(self) -> None:
        """Stop the worker, release the model (and cached GPU memory), destroy the node."""
        self._deactivate()
        self._release_model()
        self.destroy_node()

    # ------------------------------------------------------------------ executor callbacks

    def _refresh_inputs(self) -> None:
        for camera in self.cameras:
            camera.refresh()

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        changes = {}
        # Transition states count as configured: a configure parameter must not change under a transition.
        configured = self.lifecycle_state not in ("unconfigured", "finalized")
        for param in params:
            refusal = self._classes.refusal(param.name) if self._classes is not None else None
            if refusal:
                return SetParametersResult(successful=False, reason=refusal)
            spec = SPEC_BY_NAME.get(param.name)
            if spec is None:  # use_sim_time, qos_overrides and other parameters rclpy manages itself
                continue
            try:
                value = coerce(spec, param.value)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            reason = refuse_change(spec, configured, self.get_fully_qualified_name())
            if reason and value != self.p[spec.name]:
                return SetParametersResult(successful=False, reason=reason)
            changes[spec.name] = value
        if changes.get("lock_input_size", self.p["lock_input_size"]) != self.p["lock_input_size"]:
            for camera in self.cameras:
                camera.locked_size = None  # false releases the lock at once; true locks on the next frame
        self.p.update(changes)  # read by the worker per frame; each value is replaced atomically
        if "warning_period" in changes:
            self._throttle.period_s = changes["warning_period"]
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        """One status per camera (the single camera's keeps its name), each with the node's model and batches."""
        backend, _ = bridge_status()
        state = self.lifecycle_state
        common = {
            "lifecycle_state": state,
            "model_path": str(self.p["model_path"]),
            "precision_choice": str(getattr(self.predictor, "precision_choice", "")),
            "image_conversion": backend,
            "jpeg_decoder": jpeg_decoder_name(),
            "max_batch_size": str(self._batch_limit()),
            "batch_mode": str(getattr(self.predictor, "batch_plan", "")),
            **self._batches.values(),
        }
        statuses = [camera.diagnostic_status(
            self.get_fully_qualified_name(), device=str(getattr(self.predictor, "device", "none")),
            precision=str(getattr(self.predictor, "precision", "none")),
            inactive=None if state == "active" else state, extra=common) for camera in self.cameras]
        self.pub_diag.publish(diagnostic_array(self.get_clock().now().to_msg(), statuses))

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        scheduler = self._scheduler
        while not self._stop.is_set():
            batch = scheduler.take_batch(self._batch_limit(), timeout=0.2)
            if batch:
                self._process_batch(batch)

    def _warn(self, key: str, text: str) -> None:
        line = self._throttle.message(key, text)
        if line:
            self.get_logger().warning(line)

    def _guarded(self, camera: CameraState, step: Any, *args: Any) -> Any:
        """step(*args), or None after an unexpected error, which costs `camera` this frame and nothing else."""
        try:
            return step(*args)
        except Exception as exc:  # never let one frame end the worker
            self._unexpected(camera, exc)
            return None

    def _unexpected(self, camera: CameraState, exc: Exception) -> None:
        if not (self._stop.is_set() or not self.context.ok()):  # shutting down: publishers may already be gone
            camera.reject("internal", f"{camera.image_topic}: frame skipped after an unexpected error: "
                                      f"{type(exc).__name__}: {first_line(exc)}")

    def _process_batch(self, batch: list) -> None:
        """Decode each camera's frame, run the model once on them all, publish each result to its camera."""
        output_size = self._input_size() if self.p["output_resolution"] == "model" else None
        jobs = []
        for camera, (msg, received) in batch:
            job = self._guarded(camera, camera.prepare, msg, received, output_size)
            if job is not None:
                jobs.append(job)
        if not jobs:
            return
        start = time.perf_counter()
        try:
            jobs = self._infer(jobs, output_size)
        except Exception as exc:
            for job in jobs:
                self._unexpected(job.camera, exc)
            return
        inference_ms = (time.perf_counter() - start) * 1e3
        if jobs:
            self._batches.on_batch(len(jobs))
        for job in jobs:
            self._guarded(job.camera, job.camera.publish, job, self._palette_lut, inference_ms)

    def _infer(self, jobs: list[Job], output_size: Optional[tuple[int, int]]) -> list[Job]:
        """Fill each job's depth and labels in one forward pass; the jobs whose frames the model took.

        A refused batch is run again frame by frame, so that only the camera whose
        frame the model refuses loses it.
        """
        try:
            predictions = self.predictor.predict_batch(
                [job.rgb for job in jobs], output_size=output_size, max_depth=self.p["max_depth"],
                out=[job.out for job in jobs], confidence=any(job.wants_confidence for job in jobs))
        except ValueError as exc:
            if len(jobs) > 1:
                return [job for job in jobs if self._infer([job], output_size)]
            camera = jobs[0].camera
            camera.reject("predictor", f"{camera.image_topic}: frame skipped, the model refused it: "
                                       f"{first_line(exc)}")
            return []
        for job, prediction in zip(jobs, predictions):
            job.confidence = prediction.confidence if job.wants_confidence else None
        return jobs


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of `perception_node`: 0 after Ctrl-C / SIGTERM, 2 when the node cannot start.

    Unless the user configured Fast DDS, the package's shared-memory profile is used (as
    perception.launch.py does), so that full-resolution outputs reach local subscribers.
    """
    os.environ.update(transport.large_image_env())
    return run_node(NODE_NAME, PerceptionNode, _serve, argv, close=PerceptionNode.close)


def _serve(node: PerceptionNode) -> int:
    """Start (unless autostart is off) and spin; 2 when configure or activate failed while ROS still runs."""
    if node.p["autostart"] and not node.start():
        return EXIT_USER_ERROR if node.context.ok() else EXIT_OK
    if node.context.ok():
        rclpy.spin(node)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
