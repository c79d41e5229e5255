"""launch_testing test of launch/perception.launch.py (needs a ROS 2 installation with launch_testing).

Starts the installed launch file with a namespace, a remapped camera topic and a
small checkpoint, then checks that frames published on the remapped topic produce
depth/semantic/points in the namespace, that parameters come from config/perception.yaml
except those given as launch arguments, and that the node exits with code 0 on shutdown.

Skips with the reason when launch_testing, the installed mtan_ros package (ament index)
or a checkpoint are not available. The checkpoint is made here with torch, or taken from
MTAN_ROS_TEST_CHECKPOINT (for environments whose test Python has no torch).
"""
from __future__ import annotations

import array
import os
import sys
import tempfile
import time
import unittest

import pytest

# `launch_test test/test_ros_launch.py` does not run conftest.py: make ros_helpers (and the
# conftest it uses) importable from this file's own folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _requirements() -> str | None:
    """None when the launch test can run, else why not."""
    try:
        import launch_testing  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError as exc:
        return f"launch_testing/launch_ros not installed ({exc}); they come with a ROS 2 installation"
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("mtan_ros")
    except Exception as exc:  # PackageNotFoundError, or no AMENT_PREFIX_PATH at all
        return f"mtan_ros is not installed in an ament prefix ({type(exc).__name__}); colcon build and source it"
    if not os.environ.get("MTAN_ROS_TEST_CHECKPOINT"):
        try:
            import torch  # noqa: F401
        except ImportError:
            return "no torch here to make a checkpoint and MTAN_ROS_TEST_CHECKPOINT is not set"
    return None


SKIP_REASON = _requirements()
NAMESPACE = "launch_test_cam"
CAMERA_TOPIC = f"/{NAMESPACE}/camera/image"
HEIGHT, WIDTH = 48, 96


def _domain_id() -> int:
    import zlib

    return 1 + (zlib.crc32(b"test_ros_launch") + os.getpid()) % 100


def _checkpoint() -> str:
    given = os.environ.get("MTAN_ROS_TEST_CHECKPOINT")
    if given:
        return given
    from ros_helpers import make_random_checkpoint

    folder = tempfile.mkdtemp(prefix="mtan_launch_test_")
    return make_random_checkpoint(os.path.join(folder, "tiny.pt"), width=0.125, input_size=(64, 128))


if SKIP_REASON is not None:

    def test_perception_launch_file():
        pytest.skip(SKIP_REASON)

else:
    import launch_testing
    import launch_testing.asserts
    import rclpy
    import rclpy.executors
    from launch import LaunchDescription
    from launch.actions import GroupAction, IncludeLaunchDescription, SetEnvironmentVariable
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare
    from rcl_interfaces.srv import GetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from mtan_ros.ros.lifecycle_client import wait_for_state

    DOMAIN_ID = _domain_id()

    @pytest.mark.launch_test
    @pytest.mark.timeout(180)
    def generate_test_description():
        launch_file = PathJoinSubstitution([FindPackageShare("mtan_ros"), "launch", "perception.launch.py"])
        include = IncludeLaunchDescription(
            PythonLaunchDescriptionSource(launch_file),
            launch_arguments={
                "model_path": _checkpoint(),
                "namespace": NAMESPACE,
                "image": CAMERA_TOPIC,  # camera_info is not given: the one next to it is read
                "device": "cpu",
            }.items(),
        )
        isolated = GroupAction(
            [SetEnvironmentVariable("ROS_DOMAIN_ID", str(DOMAIN_ID)), include], scoped=True, forwarding=True
        )
        return LaunchDescription([isolated, launch_testing.actions.ReadyToTest()])

    class TestPerceptionLaunch(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.context = rclpy.Context()
            rclpy.init(context=cls.context, domain_id=DOMAIN_ID)
            cls.node = rclpy.create_node("launch_tester", context=cls.context)
            cls.executor = rclpy.executors.SingleThreadedExecutor(context=cls.context)
            cls.executor.add_node(cls.node)

        @classmethod
        def tearDownClass(cls):
            cls.executor.shutdown()
            cls.node.destroy_node()
            cls.context.try_shutdown()

        def wait_until_active(self):
            """The node's lifecycle state says it is ready (its log text is not a readiness signal)."""
            wait_for_state(self.node, f"/{NAMESPACE}/perception_node", "active", timeout=120,
                           executor=self.executor)

        def spin_until(self, predicate, timeout, what):
            end = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > end:
                    self.fail(f"timed out waiting for {what}")
                self.executor.spin_once(timeout_sec=0.05)

        def test_remapped_camera_gives_outputs_in_the_namespace(self):
            self.wait_until_active()
            got = {}
            reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
            for name, kind in (("depth", Image), ("semantic", Image), ("points", PointCloud2)):
                self.node.create_subscription(kind, f"/{NAMESPACE}/{name}",
                                              lambda msg, name=name: got.__setitem__(name, msg), reliable)
            image_pub = self.node.create_publisher(Image, CAMERA_TOPIC, 10)
            info_pub = self.node.create_publisher(CameraInfo, f"/{NAMESPACE}/camera/camera_info", 10)
            self.spin_until(lambda: image_pub.get_subscription_count() > 0, 60, "the node to subscribe")

            image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
            image.header.frame_id = "launch_test_optical_frame"
            image.header.stamp.sec = 42
            image.data = array.array("B", bytes((i * 7) % 256 for i in range(HEIGHT * WIDTH * 3)))
            info = CameraInfo(width=WIDTH, height=HEIGHT)
            info.k = [50.0, 0.0, WIDTH / 2, 0.0, 50.0, HEIGHT / 2, 0.0, 0.0, 1.0]
            end = time.monotonic() + 90
            while len(got) < 3 and time.monotonic() < end:
                info_pub.publish(info)
                image_pub.publish(image)
                self.executor.spin_once(timeout_sec=0.5)
            self.assertEqual(set(got), {"depth", "semantic", "points"})
            depth = got["depth"]
            self.assertEqual((depth.encoding, depth.height, depth.width), ("32FC1", HEIGHT, WIDTH))
            self.assertEqual(depth.header.frame_id, "launch_test_optical_frame")
            self.assertEqual(depth.header.stamp.sec, 42)
            self.assertEqual(got["semantic"].encoding, "mono8")
            self.assertEqual([f.name for f in got["points"].fields], ["x", "y", "z", "rgb", "label"])

        def test_parameters_come_from_the_yaml_and_the_arguments(self):
            self.wait_until_active()
            client = self.node.create_client(GetParameters, f"/{NAMESPACE}/perception_node/get_parameters")
            self.spin_until(client.service_is_ready, 60, "the parameter service")
            future = client.call_async(GetParameters.Request(names=["device", "overlay_alpha", "points_stride"]))
            self.spin_until(future.done, 30, "get_parameters")
            device, alpha, stride = future.result().values
            self.assertEqual(device.string_value, "cpu")           # launch argument
            self.assertEqual(alpha.double_value, 0.5)              # config/perception.yaml
            self.assertEqual(stride.integer_value, 4)              # config/perception.yaml

        def test_node_gets_the_large_image_transport_unless_the_user_chose_one(self, proc_info):
            self.wait_until_active()
            (node,) = [p for p in proc_info.processes() if "perception_node" in p.process_details["name"]]
            with open(f"/proc/{node.process_details['pid']}/environ", "rb") as handle:
                environ = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
            user = {k: os.environ[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                                               "FASTDDS_BUILTIN_TRANSPORTS") if os.environ.get(k)}
            profile = environ.get(b"FASTDDS_DEFAULT_PROFILES_FILE", b"").decode()
            if user:  # the user's own setting reaches the node untouched
                for key, value in user.items():
                    self.assertEqual(environ.get(key.encode(), b"").decode(), value)
            else:
                self.assertTrue(profile.endswith("fastdds_shm.xml") and os.path.isfile(profile), profile)

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):
        def test_node_exits_cleanly(self, proc_info, proc_output):
            launch_testing.asserts.assertExitCodes(proc_info)
            for output in proc_output:
                self.assertNotIn("Traceback", output.text.decode(errors="replace"))
