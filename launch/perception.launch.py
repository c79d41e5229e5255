"""Start the mtan_ros perception node (and RViz with rviz:=true).

  ros2 launch mtan_ros perception.launch.py model_path:=/path/to/best.pt image:=/camera/image_raw

Parameter defaults live in config/perception.yaml only. model_path, device,
precision and compressed override that file when given; left empty they keep the
file's values. One camera per include: give each its own namespace (see README).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mtan_ros"
# Launch argument -> node parameter, passed only when the argument is not empty.
OVERRIDES = {"model_path": "model_path", "device": "device", "precision": "precision",
             "compressed": "compressed_input"}
# Set by the user: Fast DDS is theirs to configure (see config/fastdds_shm.xml).
USER_TRANSPORT_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                            "FASTDDS_BUILTIN_TRANSPORTS")


def share(*parts):
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def large_image_transport(context):
    """Shared memory big enough for 2 Mpx images, unless the user configured Fast DDS already."""
    if any(context.environment.get(name) for name in USER_TRANSPORT_VARIABLES):
        return []
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", share("config", "fastdds_shm.xml"))]


def perception_node(context):
    overrides = {}
    for argument, parameter in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context).strip()
        if value:
            overrides[parameter] = value.lower() in ("true", "1", "yes") if argument == "compressed" else value
    overrides["use_sim_time"] = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    image = LaunchConfiguration("image").perform(context)
    return [Node(
        package=PACKAGE,
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("image_raw", image), ("image_raw/compressed", image + "/compressed"),
                    ("camera_info", LaunchConfiguration("camera_info"))],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    arguments = [
        ("params_file", share("config", "perception.yaml"),
         "Parameter file; its values are the node's defaults (copy config/perception.yaml to change them)"),
        ("model_path", "", "Checkpoint to load (mtan-train / mtan-demo write one); empty: params_file's value"),
        ("device", "", "auto | cpu | cuda | cuda:N; empty: params_file's value"),
        ("precision", "", "auto | fp32 | fp16 | bf16; empty: params_file's value"),
        ("image", "image_raw", "Camera image topic that image_raw is remapped to (<image>/compressed when compressed)"),
        ("camera_info", "camera_info", "CameraInfo topic of that camera (needed for points)"),
        ("namespace", "", "Namespace of the node and its outputs; one per camera"),
        ("use_sim_time", "false", "Use /clock, e.g. when replaying a rosbag"),
        ("compressed", "", "true: subscribe to <image>/compressed (JPEG/PNG); empty: params_file's value"),
        ("rviz", "false", "Start RViz2 with config/mtan_ros.rviz"),
    ]
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in arguments],
        OpaqueFunction(function=large_image_transport),
        OpaqueFunction(function=perception_node),
        Node(
            package="rviz2",
            executable="rviz2",
            namespace=LaunchConfiguration("namespace"),
            arguments=["-d", share("config", "mtan_ros.rviz")],
            parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
