"""The replay graph: which processes replay a bag through the perception node, with which settings.

Why one description: `replay.launch.py` (ROS installations) and `mtan-demo` (plain Python,
where `launch` is not installed) start the same three programs, the perception node, the
evaluator and a bag player. Both ask `replay_nodes(options)` for them and only translate the
result: the launch file into launch_ros actions, the demo into `python -m` subprocesses.
This module imports no ROS package.

Readiness is a graph signal, never log text: the player waits until the perception node
reports the lifecycle state `active` (`wait_for_nodes`) and until the evaluator's topics have
subscribers (its ground-truth ones come once the node's outputs are matched to it), then
plays. `ros2 bag play` cannot wait for either, so player:=ros2bag starts
after a fixed `ros2bag_delay` and only plays at the recorded rate.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from mtan_ros.errors import ConfigError
from mtan_ros.ros import share
from mtan_ros.ros.camera.transport import large_image_env

PLAYERS = ("python", "ros2bag")
PERCEPTION_NODE = "perception_node"
PERCEPTION_DEFAULTS = "config/perception.yaml"
ENTRY_MODULE = "mtan_ros.ros.executables"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def _option(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class ReplayOptions:
    """Settings of one replay; the defaults here are also replay.launch.py's argument defaults."""

    bag: str = field(metadata={"help": "rosbag2 folder to replay (mtan-make-bag writes one; required)"})
    model_path: str = field(metadata={"help": "Checkpoint for the perception node (mtan-train / mtan-demo; "
                                              "required)"})
    player: str = _option("python", "python: the package's bag_player; ros2bag: `ros2 bag play` (no lockstep)")
    lockstep: bool = _option(False, "true: send each frame only after its prediction arrived (no drops, "
                                    "deterministic)")
    rate: float = _option(1.0, "Playback speed relative to the recording (python player: 0 = as fast as possible)")
    use_sim_time: bool = _option(True, "Publish /clock from the bag; node, evaluator and RViz use it")
    namespace: str = _option("camera", "Namespace of the bag's camera topics, the node and the evaluator")
    output_dir: str = _option("runs/replay", "Where the evaluator writes report.json, mosaic.png and progress.json")
    frames: int = _option(0, "Evaluator: finish after this many frames (0 = the bag's frame count)")
    idle_timeout: float = _option(10.0, "Evaluator: finish after this many seconds without messages")
    device: str = _option("", "Perception node device (auto | cpu | cuda | cuda:N); empty: config/perception.yaml")
    precision: str = _option("", "Perception node precision (auto | fp32 | fp16 | bf16); empty: "
                                 "config/perception.yaml")
    compressed: Optional[bool] = _option(None, "true if the bag holds image_raw/compressed (mtan-make-bag "
                                               "--compressed); empty: config/perception.yaml")
    params_file: str = _option("", "Parameter file of the perception node; empty: config/perception.yaml")
    wait_timeout: float = _option(120.0, "python player: seconds to wait for the node to be active and the "
                                         "evaluator to listen")
    lockstep_timeout: float = _option(10.0, "lockstep: seconds to wait for a frame's prediction before sending "
                                            "it again")
    ros2bag_delay: float = _option(3.0, "player:=ros2bag: seconds to wait before playing, while the node loads")

    def __post_init__(self) -> None:
        if not self.bag:
            raise ConfigError("bag is empty: pass the bag to replay, e.g. bag:=runs/demo/val_bag "
                              "(mtan-make-bag writes bags)")
        if not self.model_path:
            raise ConfigError("model_path is empty: pass a checkpoint, e.g. model_path:=runs/demo/checkpoint/best.pt "
                              "(mtan-train or mtan-demo write one)")
        if self.player not in PLAYERS:
            raise ConfigError(f"player must be one of {', '.join(PLAYERS)}, not {self.player!r}")
        if self.lockstep and self.player == "ros2bag":
            raise ConfigError("lockstep:=true needs player:=python (ros2 bag play cannot wait for predictions)")
        for name in ("rate", "frames", "idle_timeout", "wait_timeout", "lockstep_timeout", "ros2bag_delay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.player == "ros2bag" and self.rate <= 0:
            raise ConfigError("player:=ros2bag plays at a positive rate only; use player:=python for rate:=0")

    @property
    def node_namespace(self) -> str:
        """The namespace as an absolute name: "camera" -> "/camera", "" -> "/"."""
        return "/" + self.namespace.strip("/")

    def topic(self, name: str) -> str:
        """A topic of the namespace, e.g. topic("depth") -> "/camera/depth"."""
        return f"{self.node_namespace.rstrip('/')}/{name}"

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> "ReplayOptions":
        """Options from text values (launch arguments); fields not in `values` keep their defaults."""
        typed: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            if spec.name in values:
                typed[spec.name] = _parse(spec, str(values[spec.name]).strip())
        return cls(**typed)

    @classmethod
    def descriptions(cls) -> list[tuple[str, Optional[str], str]]:
        """(name, default as text or None when required, description) of every field, for launch arguments."""
        rows = []
        for spec in dataclasses.fields(cls):
            default = None if spec.default is dataclasses.MISSING else _text(spec.default)
            rows.append((spec.name, default, spec.metadata["help"]))
        return rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse(spec: dataclasses.Field, text: str) -> Any:
    default = spec.default
    if default is None or isinstance(default, bool):  # booleans; None = "not given" (compressed)
        word = text.lower()
        if default is None and word == "":
            return None
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ConfigError(f"{spec.name} must be true or false, got {text!r}")
    if isinstance(default, (int, float)):
        kind = type(default)
        try:
            return kind(text)
        except ValueError:
            word = "an integer" if kind is int else "a number"
            raise ConfigError(f"{spec.name} must be {word}, got {text!r}") from None
    return text


@dataclass(frozen=True)
class NodeSpec:
    """One process of the graph: a node of this package, or a plain command (`ros2 bag play`).

    `parameters` are applied after `params_files`; `env` is added to the caller's environment.
    """

    role: str  # perception | evaluator | player
    label: str  # for people: "perception node", "bag player"
    name: str
    namespace: str = ""
    package: str = share.PACKAGE
    executable: str = ""
    module: str = ""  # the module whose main() runs the node; "" for a plain command
    parameters: dict[str, Any] = field(default_factory=dict)
    params_files: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    lifecycle: bool = False
    command: tuple[str, ...] = ()  # a plain command instead of a node of this package
    stop_timeout: float = 10.0  # seconds it may take to stop after SIGINT before SIGTERM / SIGKILL

    @property
    def fqn(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def ros_arguments(self) -> list[str]:
        """`--ros-args ...`: node name, namespace, parameter files, parameters, remappings."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for path in self.params_files:
            args += ["--params-file", path]
        for name, value in self.parameters.items():
            args += ["-p", f"{name}:={ros_value(value)}"]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args

    def python_command(self, python: str = sys.executable) -> list[str]:
        """The command that runs this process without `launch` (a `python -m` console entry point)."""
        if self.command:
            return list(self.command)
        return [python, "-m", ENTRY_MODULE, self.executable, *self.ros_arguments()]


def ros_value(value: Any) -> str:
    """A parameter value as `-p name:=VALUE` text (YAML): strings quoted, so "1" or "true" stay strings."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ros_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def ros2_bag_problem(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why `ros2 bag play` cannot run here (one line naming the fix), or None when it can."""
    environ = os.environ if environ is None else environ
    distro = environ.get("ROS_DISTRO") or "<distro>"
    if shutil.which("ros2", path=environ.get("PATH")) is None:
        return (f"player:=ros2bag needs the ros2 command, which is not on PATH: source your ROS 2 installation "
                f"(and install ros-{distro}-ros2bag) or use player:=python")
    if importlib.util.find_spec("ros2bag") is None:
        return f"ros2 bag is not installed: install ros-{distro}-ros2bag or use player:=python"
    return None


def replay_nodes(options: ReplayOptions, environ: Optional[Mapping[str, str]] = None) -> list[NodeSpec]:
    """The perception node, the evaluator and the player, in start order.

    `environ` is the environment the processes will get (default os.environ); it decides
    whether the package's Fast DDS profile is added (mtan_ros.ros.camera.transport).
    """
    env = large_image_env(os.environ if environ is None else environ)
    namespace = options.node_namespace
    perception_parameters: dict[str, Any] = {"model_path": options.model_path,
                                             "use_sim_time": options.use_sim_time}
    if options.device:
        perception_parameters["device"] = options.device
    if options.precision:
        perception_parameters["precision"] = options.precision
    if options.compressed is not None:
        perception_parameters["compressed_input"] = options.compressed
    perception = NodeSpec(
        role="perception", label="perception node", name=PERCEPTION_NODE, namespace=namespace,
        executable="perception_node", module="mtan_ros.ros.node.perception_node", lifecycle=True,
        params_files=(options.params_file or _perception_defaults(),), parameters=perception_parameters, env=env)
    evaluator = NodeSpec(
        role="evaluator", label="evaluator", name="evaluator", namespace=namespace, executable="evaluator",
        module="mtan_ros.ros.replay.evaluator", env=env, stop_timeout=30.0,
        parameters={"output_dir": options.output_dir, "bag": options.bag, "model_path": options.model_path,
                    "frames": options.frames, "idle_timeout": options.idle_timeout,
                    "use_sim_time": options.use_sim_time})
    return [perception, evaluator, _player(options, env, perception.fqn)]


def _perception_defaults() -> str:
    path = share.find(PERCEPTION_DEFAULTS)
    if path is None:
        raise ConfigError(f"cannot find {PERCEPTION_DEFAULTS} (looked in "
                          + ", ".join(str(p) for p in share.candidates(PERCEPTION_DEFAULTS))
                          + "); reinstall the package or pass params_file")
    return str(path)


def _player(options: ReplayOptions, env: dict[str, str], perception_fqn: str) -> NodeSpec:
    if options.player == "ros2bag":
        command = ["ros2", "bag", "play", options.bag, "--rate", f"{options.rate:g}",
                   "--delay", f"{options.ros2bag_delay:g}"]
        if options.use_sim_time:
            command.append("--clock")
        return NodeSpec(role="player", label="ros2 bag play", name="ros2_bag_play", package="rosbag2",
                        command=tuple(command), env=env)
    image = options.topic("image_raw/compressed" if options.compressed else "image_raw")
    # The evaluator is the only subscriber of the ground truth and of `semantic`; it subscribes to
    # the ground truth only once the node's predictions are matched to it, so these say both.
    listeners = [image, options.topic("depth_gt"), options.topic("semantic_gt"), options.topic("semantic")]
    return NodeSpec(
        role="player", label="bag player", name="bag_player", executable="bag_player",
        module="mtan_ros.ros.replay.bag_player", env=env,
        parameters={"bag": options.bag, "rate": options.rate, "lockstep": options.lockstep,
                    "lockstep_topic": options.topic("depth"), "lockstep_timeout": options.lockstep_timeout,
                    "publish_clock": options.use_sim_time, "wait_for_nodes": [perception_fqn],
                    "wait_for_subscribers": listeners, "wait_timeout": options.wait_timeout,
                    "start_delay": 1.0, "use_sim_time": False})
