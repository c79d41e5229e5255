"""Replay a bag through the perception node and score it: player + node + evaluator (+ RViz).

  ros2 launch mtan_ros replay.launch.py bag:=runs/demo/val_bag model_path:=runs/demo/checkpoint/best.pt
      [lockstep:=true] [rate:=1.0] [player:=python|ros2bag] [rviz:=true] [output_dir:=runs/replay]

The bag's topics (mtan-make-bag: /camera/image_raw, camera_info, depth_gt, semantic_gt) live in
`namespace` (default camera); the perception node (perception.launch.py) and the evaluator run
there too. With use_sim_time (default true) the player publishes /clock from the bag and the
node, the evaluator and RViz all follow it; the player itself never uses sim time.
player:=python is the package's bag_player (lockstep:=true: each frame waits for its
prediction, nothing is dropped); player:=ros2bag uses `ros2 bag play` (real time only).
When the evaluator has written report.json and mosaic.png (output_dir) the launch ends, unless
RViz is open.
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mtan_ros"
TRUE = ("true", "1", "yes", "on")


def _value(context, name):
    return LaunchConfiguration(name).perform(context).strip()


def _flag(context, name):
    return _value(context, name).lower() in TRUE


def replay(context):
    bag, model_path = _value(context, "bag"), _value(context, "model_path")
    namespace = "/" + _value(context, "namespace").strip("/")
    sim_time, lockstep, rviz = _flag(context, "use_sim_time"), _flag(context, "lockstep"), _flag(context, "rviz")
    player_kind = _value(context, "player")
    if player_kind not in ("python", "ros2bag"):
        raise RuntimeError(f"player must be python or ros2bag, not {player_kind!r}")
    if lockstep and player_kind == "ros2bag":
        raise RuntimeError("lockstep:=true needs player:=python (ros2 bag play cannot wait for predictions)")
    sim = "true" if sim_time else "false"

    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), "launch",
                                                            "perception.launch.py"])),
        launch_arguments={
            "model_path": model_path, "namespace": namespace, "use_sim_time": sim, "rviz": "true" if rviz else "false",
            "device": _value(context, "device"), "precision": _value(context, "precision"),
            "compressed": _value(context, "compressed"),
        }.items(),
    )
    evaluator = Node(
        package=PACKAGE, executable="evaluator", name="evaluator", namespace=namespace, output="screen",
        parameters=[{"output_dir": _value(context, "output_dir"), "bag": bag, "model_path": model_path,
                     "frames": int(_value(context, "frames") or 0),
                     "idle_timeout": float(_value(context, "idle_timeout")), "use_sim_time": sim_time}],
    )
    if player_kind == "python":
        wait = [f"{namespace}/{t}" for t in ("image_raw", "depth_gt", "semantic_gt", "semantic")]
        if _flag(context, "compressed"):
            wait[0] += "/compressed"
        player = Node(
            package=PACKAGE, executable="bag_player", name="bag_player", output="screen",
            parameters=[{"bag": bag, "rate": float(_value(context, "rate")), "lockstep": lockstep,
                         "lockstep_topic": f"{namespace}/depth", "publish_clock": sim_time,
                         # The node's depth publisher appears once its model is loaded.
                         "wait_for_subscribers": wait, "wait_for_publishers": [f"{namespace}/depth"],
                         "start_delay": 1.0, "use_sim_time": False}],
        )
    else:
        command = ["ros2", "bag", "play", bag, "--rate", _value(context, "rate"),
                   "--delay", _value(context, "ros2bag_delay")]
        if sim_time:
            command.append("--clock")
        player = ExecuteProcess(cmd=command, name="ros2_bag_play", output="screen")
    actions = [perception, evaluator, player,
               # Any process that fails (a bad bag or checkpoint, no `ros2 bag`) ends the replay; the
               # evaluator still writes its report on the way out.
               RegisterEventHandler(OnProcessExit(on_exit=_stop_if_failed))]
    if not rviz:  # report written: the replay is over
        actions.append(RegisterEventHandler(OnProcessExit(target_action=evaluator,
                                                          on_exit=[EmitEvent(event=Shutdown(reason="evaluated"))])))
    return actions


def _stop_if_failed(event, context):
    if event.returncode:
        return [EmitEvent(event=Shutdown(reason=f"{event.action.name} failed (exit code {event.returncode})"))]
    return []


def generate_launch_description():
    arguments = [
        ("bag", None, "rosbag2 folder to replay (mtan-make-bag writes one; required)"),
        ("model_path", None, "Checkpoint for the perception node (mtan-train / mtan-demo; required)"),
        ("player", "python", "python: the package's bag_player; ros2bag: `ros2 bag play` (no lockstep)"),
        ("lockstep", "false", "true: send each frame only after its prediction arrived (no drops, deterministic)"),
        ("rate", "1.0", "Playback speed relative to the recording (python player: 0 = as fast as possible)"),
        ("use_sim_time", "true", "Publish /clock from the bag; node, evaluator and RViz use it"),
        ("namespace", "camera", "Namespace of the bag's camera topics, the node and the evaluator"),
        ("output_dir", "runs/replay", "Where the evaluator writes report.json and mosaic.png"),
        ("frames", "0", "Evaluator: finish after this many frames (0 = the bag's frame count)"),
        ("idle_timeout", "10.0", "Evaluator: finish after this many seconds without messages"),
        ("rviz", "false", "Start RViz2 with the package's view (the launch then stays up after the report)"),
        ("device", "", "Perception node device (auto | cpu | cuda | cuda:N); empty: config/perception.yaml"),
        ("precision", "", "Perception node precision (auto | fp32 | fp16 | bf16); empty: config/perception.yaml"),
        ("compressed", "", "true if the bag holds image_raw/compressed (mtan-make-bag --compressed)"),
        ("ros2bag_delay", "3.0", "player:=ros2bag: seconds to wait before playing, while the node loads"),
    ]
    declared = []
    for name, default, text in arguments:
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=text))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default, description=text))
    return LaunchDescription([*declared, OpaqueFunction(function=replay)])
