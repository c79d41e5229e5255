"""Replay a bag through the perception node and score it: player + node + evaluator (+ RViz).

  ros2 launch mtan_ros replay.launch.py bag:=runs/demo/val_bag model_path:=runs/demo/checkpoint/best.pt
      [lockstep:=true] [rate:=1.0] [player:=python|ros2bag] [rviz:=true] [output_dir:=runs/replay]

What runs, with which parameters, is mtan_ros.ros.replay.replay_graph (mtan-demo starts the same
graph without launch); every argument below is a field of its ReplayOptions, with its
default. This file only turns the graph into actions: the perception node as a managed
(lifecycle) node with config/perception.yaml plus the overrides, which drives itself to
active (its autostart parameter), the evaluator, and the player.

The bag's topics (mtan-make-bag: /camera/image_raw, camera_info, depth_gt, semantic_gt) live
in `namespace` (default camera), like the node and the evaluator. With use_sim_time (default
true) the player publishes /clock from the bag and the node, the evaluator and RViz follow it.
player:=python (the package's bag_player) waits until the node is active and the evaluator
listens; lockstep:=true sends each frame only after its prediction arrived. player:=ros2bag
uses `ros2 bag play` (recorded rate only, after a fixed ros2bag_delay).

When the evaluator has written report.json and mosaic.png (output_dir) the launch ends, unless
RViz is open. A process that fails (a bad bag or checkpoint, no `ros2 bag`) ends the replay
with an error line and a non-zero exit code; the evaluator still writes its report.
"""
import dataclasses

import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from mtan_ros.errors import NodeStartupError, PlayerError
from mtan_ros.ros.launch_checks import rviz_problem
from mtan_ros.ros.replay.replay_graph import TRUE_WORDS, ReplayOptions, replay_nodes, ros2_bag_problem

PACKAGE = "mtan_ros"
LOGGER = "replay.launch.py"


def _action(spec):
    """A NodeSpec as a launch action: LifecycleNode, Node, or ExecuteProcess for a plain command."""
    common = {"output": "screen", "additional_env": spec.env, "sigterm_timeout": str(spec.stop_timeout)}
    if spec.command:
        return ExecuteProcess(cmd=list(spec.command), name=spec.name, **common)
    kind = LifecycleNode if spec.lifecycle else Node
    return kind(package=spec.package, executable=spec.executable, name=spec.name, namespace=spec.namespace or None,
                parameters=[*spec.params_files, spec.parameters], remappings=list(spec.remappings),
                emulate_tty=True, **common)


def replay(context):
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ReplayOptions.descriptions()}
    options = ReplayOptions.from_strings(values)
    rviz = LaunchConfiguration("rviz").perform(context).strip().lower() in TRUE_WORDS
    rviz_missing = rviz_problem("the replay runs without it and ends after the report",
                                context.environment) if rviz else None
    if rviz_missing is not None:
        launch.logging.get_logger(LOGGER).error(rviz_missing)
        rviz = False
    problem = ros2_bag_problem(context.environment) if options.player == "ros2bag" else None
    actions, by_role = [], {}
    for spec in replay_nodes(options, environ=context.environment):
        if problem is not None:
            if spec.role != "evaluator":
                continue
            # Nothing can be played: only the evaluator runs and finishes on its own at once, so that
            # it writes its (empty) report; a signal could come before Python can handle it.
            spec = dataclasses.replace(spec, parameters={**spec.parameters, "start_timeout": 0.1})
        by_role[spec.role] = _action(spec)
        actions.append(by_role[spec.role])
    evaluator = by_role["evaluator"]
    if problem is not None:
        launch.logging.get_logger(LOGGER).error(problem)
        actions.append(RegisterEventHandler(OnProcessExit(target_action=evaluator,
                                                          on_exit=lambda event, ctx: _fail(problem))))
    actions.append(RegisterEventHandler(OnProcessExit(on_exit=_fail_if_failed)))
    if rviz:
        actions.append(Node(package="rviz2", executable="rviz2", namespace=options.node_namespace,
                            arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config",
                                                                   "mtan_ros.rviz"])],
                            parameters=[{"use_sim_time": options.use_sim_time}]))
    else:  # report written: the replay is over
        actions.append(RegisterEventHandler(OnProcessExit(target_action=evaluator, on_exit=_end_replay)))
    return actions


def _end_replay(event, context):
    if context.is_shutdown:  # already stopping (Ctrl-C, a failure): a second Shutdown makes launch_ros fail
        return None
    return [EmitEvent(event=Shutdown(reason="evaluated"))]


def _fail(message):
    """An exception makes launch log the message, stop every process (SIGINT) and exit with code 1."""
    raise PlayerError(message)


def _fail_if_failed(event, context):
    if not event.returncode:
        return None
    if context.is_shutdown:  # stopping anyway: say it, without a second shutdown
        launch.logging.get_logger(LOGGER).error(f"{event.action.name} did not stop cleanly (exit code "
                                                f"{event.returncode})")
        return None
    raise NodeStartupError(f"{event.action.name} failed (exit code {event.returncode}; its output above says "
                           "why): the replay stops, the evaluator writes its report")


def generate_launch_description():
    arguments = [*ReplayOptions.descriptions(),
                 ("rviz", "false", "Start RViz2 with the package's view (the launch then stays up after the report)")]
    declared = []
    for name, default, text in arguments:
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=text))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default, description=text))
    return LaunchDescription([*declared, OpaqueFunction(function=replay)])
