"""Start the mtan_ros perception node, a managed (lifecycle) node (and RViz with rviz:=true).

  ros2 launch mtan_ros perception.launch.py model_path:=/path/to/best.pt image:=/camera/image_raw

Parameter defaults live in config/perception.yaml only. model_path, device,
precision, compressed and autostart override that file when given; left empty they
keep the file's values. With autostart (the file's default) the node configures
and activates itself; with autostart:=false it waits for `ros2 lifecycle set
<node> configure` / `activate` or a lifecycle manager. Several cameras, one model:

  ros2 launch mtan_ros perception.launch.py model_path:=... cameras:="[front, rear]" camera_topics:=cameras.yaml

where cameras.yaml maps each name to its driver's image topic (`front: /front_camera/image_raw`;
camera_info next to it, or `front: {image: ..., camera_info: ...}`); outputs appear
under each name (front/depth, ...). Unless you configured Fast DDS yourself, the
node uses the package's shared-memory profile (config/fastdds_shm.xml).
"""
import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mtan_ros"
TRUE = ("true", "1", "yes", "on")
# Launch argument -> node parameter, passed only when the argument is not empty.
OVERRIDES = {"model_path": "model_path", "device": "device", "precision": "precision",
             "compressed": "compressed_input", "autostart": "autostart"}
BOOLEAN_ARGUMENTS = ("compressed", "autostart")


def share(*parts):
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def large_image_transport(context):
    """The package's shared-memory profile for the node (and RViz), unless the user configured Fast DDS."""
    from mtan_ros.ros.camera.transport import large_image_env

    return [SetEnvironmentVariable(name, value) for name, value in large_image_env(context.environment).items()]


def perception_node(context):
    overrides = {}
    for argument, parameter in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context).strip()
        if value:
            overrides[parameter] = value.lower() in TRUE if argument in BOOLEAN_ARGUMENTS else value
    overrides["use_sim_time"] = LaunchConfiguration("use_sim_time").perform(context).lower() in TRUE
    image = LaunchConfiguration("image").perform(context)
    # Like image_transport: a camera's CameraInfo is the sibling of its image topic.
    camera_info = LaunchConfiguration("camera_info").perform(context).strip() or \
        "/".join([*image.split("/")[:-1], "camera_info"])
    cameras, camera_remaps = several_cameras(context)
    if cameras:
        overrides["cameras"] = cameras
    return [LifecycleNode(
        package=PACKAGE,
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("image_raw", image), ("image_raw/compressed", image + "/compressed"),
                    ("camera_info", camera_info), *camera_remaps],
        output="screen",
        emulate_tty=True,
    )]


def several_cameras(context):
    """The cameras argument (else the camera_topics file's names) and the remaps of their inputs."""
    from mtan_ros.ros.node.camera_topics import camera_remappings, parse_cameras, read_camera_topics

    cameras = parse_cameras(LaunchConfiguration("cameras").perform(context))
    path = LaunchConfiguration("camera_topics").perform(context).strip()
    topics = read_camera_topics(path) if path else {}
    cameras = cameras or list(topics)
    return cameras, camera_remappings(cameras, topics)


def rviz(context):
    """RViz2 with the package's view, or a clear line when it is not installed (the node keeps running)."""
    if LaunchConfiguration("rviz").perform(context).strip().lower() not in TRUE:
        return []
    from mtan_ros.ros.launch_checks import rviz_problem

    problem = rviz_problem("the perception node runs without it", context.environment)
    if problem is not None:
        launch.logging.get_logger("perception.launch").error(problem)
        return []
    return [Node(
        package="rviz2",
        executable="rviz2",
        namespace=LaunchConfiguration("namespace"),
        arguments=["-d", share("config", "mtan_ros.rviz")],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in TRUE}],
    )]


def generate_launch_description():
    arguments = [
        ("params_file", share("config", "perception.yaml"),
         "Parameter file; its values are the node's defaults (copy config/perception.yaml to change them)"),
        ("model_path", "", "Checkpoint to load (mtan-train / mtan-demo write one); empty: params_file's value"),
        ("device", "", "auto | cpu | cuda | cuda:N; empty: params_file's value"),
        ("precision", "", "auto | fp32 | fp16 | bf16; empty: params_file's value"),
        ("image", "image_raw", "Camera image topic that image_raw is remapped to (<image>/compressed when compressed)"),
        ("camera_info", "", "CameraInfo topic of that camera (needed for points); empty: camera_info next to "
                            "image (image:=/cam/image_raw reads /cam/camera_info)"),
        ("namespace", "", "Namespace of the node and its outputs"),
        ("cameras", "", "Camera names served by one model, e.g. \"[front, rear]\": inputs <name>/image_raw and "
                        "<name>/camera_info, outputs under <name>/; empty: camera_topics' names, else params_file's"),
        ("camera_topics", "", "YAML file: camera name -> its driver's image topic (camera_info next to it), or "
                              "name -> {image: ..., camera_info: ...}; remaps each camera's inputs"),
        ("use_sim_time", "false", "Use /clock, e.g. when replaying a rosbag"),
        ("compressed", "", "true: subscribe to <image>/compressed (JPEG/PNG); empty: params_file's value"),
        ("autostart", "", "false: the node waits for `ros2 lifecycle set` or a lifecycle manager; "
                          "empty: params_file's value (true)"),
        ("rviz", "false", "Start RViz2 with config/mtan_ros.rviz"),
    ]
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in arguments],
        OpaqueFunction(function=large_image_transport),
        OpaqueFunction(function=perception_node),
        OpaqueFunction(function=rviz),
    ])
