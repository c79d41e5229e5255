"""Whether optional ROS 2 programs can start here, checked before a launch file adds them.

A launch action for a package that is not installed makes `ros2 launch` fail and exit,
leaving the processes it had already started running on their own; so the launch
files ask first and say what to install instead.
"""
from __future__ import annotations

import os
import shutil
from typing import Mapping, Optional


def package_installed(name: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """In the ament index (a sourced ROS 2 installation), or at least an executable of that name on PATH."""
    try:
        from ament_index_python.packages import get_package_prefix  # optional: only on a ROS installation

        get_package_prefix(name)
        return True
    except Exception:  # PackageNotFoundError, or no ament index at all
        environ = os.environ if environ is None else environ
        return shutil.which(name, path=environ.get("PATH")) is not None


def rviz_problem(without_it: str, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """One line for rviz:=true when rviz2 is missing (`without_it`: what goes on), or None when it can start."""
    if package_installed("rviz2", environ):
        return None
    return ("rviz:=true, but rviz2 is not installed here (install ros-$ROS_DISTRO-rviz2, or open RViz on another "
            f"machine of the same ROS domain); {without_it}")
