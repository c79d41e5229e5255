"""ament_python package definition; also installs with plain pip into a venv.

Dependencies that a ROS 2 installation provides through rosdep (numpy, OpenCV,
PyYAML, rclpy and the message packages) are extras, so that console scripts
keep working under colcon where they come from the system instead of PyPI.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mtan_ros"

EXTRAS = {
    # What a plain Python environment needs to run the model and the Predictor.
    "core": ["numpy>=1.24", "opencv-python-headless>=4.8", "pyyaml>=6", "simplejpeg>=1.8", "torch>=2.3"],
    # ROS 2 Kilted from PyPI wheels, for machines without a ROS distribution.
    "ros": [
        "ros-kilted-rclpy",
        "ros-kilted-rmw-fastrtps-cpp",
        "ros-kilted-sensor-msgs",
        "ros-kilted-std-msgs",
        "ros-kilted-diagnostic-msgs",
        "ros-kilted-rosgraph-msgs",
        "ros-kilted-geometry-msgs",
        "ros-kilted-rcl-interfaces",
    ],
    "train": ["tqdm>=4.60", "tensorboard>=2.10", "matplotlib>=3.6", "cityscapesscripts>=2.2"],
    # ONNX export (mtan-export --format onnx) and the Predictor's onnxruntime backend (CPU provider;
    # a CUDA machine installs onnxruntime-gpu instead for the CUDA and TensorRT providers).
    "onnx": ["onnx>=1.16", "onnxscript>=0.1", "onnxruntime>=1.17"],
    "bags": ["rosbags>=0.10", "rosbags-image>=0.9", "mcap>=1.1", "mcap-ros2-support>=0.5"],
    # launch_testing's pytest plugin does not load under pytest 9.
    "test": ["pytest>=7,<9", "pytest-timeout>=2", "import-linter>=2.1", "pytest-randomly>=3.15"],
    # The ament linters that `colcon test` runs, with the flake8 plugins a ROS system ships them with.
    "lint": [
        "ros-kilted-ament-flake8",
        "ros-kilted-ament-pep257",
        "flake8>=6",
        "flake8-blind-except",
        "flake8-builtins",
        "flake8-class-newline",
        "flake8-comprehensions",
        "flake8-deprecated",
        "flake8-docstrings",
        "flake8-import-order",
        "flake8-quotes",
    ],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
    ],
    install_requires=["setuptools"],
    extras_require=EXTRAS,
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="mtan_ros maintainers",
    maintainer_email="maintainers@mtan-ros.invalid",
    description="Multi-Task Attention Network (MTAN) depth + semantic segmentation as a ROS 2 node",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "mtan-train = mtan_ros.training.train_cli:main",
            "mtan-eval = mtan_ros.training.eval_cli:main",
            "mtan-export = mtan_ros.inference.export:main",
            "mtan-make-bag = mtan_ros.bags.make_bag:main",
            "mtan-demo = mtan_ros.demo:main",
            # Through mtan_ros.ros.executables: quiet on Ctrl-C / SIGTERM while the node still imports.
            "perception_node = mtan_ros.ros.executables:perception_node",
            "bag_player = mtan_ros.ros.executables:bag_player",
            "evaluator = mtan_ros.ros.executables:evaluator",
        ],
    },
)
