"""mtan_ros: a Multi-Task Attention Network for depth and semantics, as a ROS 2 node."""

__version__ = "0.1.0"
