"""rviz:=true without rviz2: the launch files get a line naming the fix instead of an action that cannot start."""
from __future__ import annotations

import os
import stat

from mtan_ros.ros.launch_checks import package_installed, rviz_problem


def test_missing_rviz2_is_named_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # no sourced ROS 2 installation
    environ = {"PATH": str(tmp_path)}
    assert not package_installed("rviz2", environ)
    problem = rviz_problem("the replay runs without it", environ)
    assert problem.startswith("rviz:=true, but rviz2 is not installed here")
    assert "install ros-$ROS_DISTRO-rviz2" in problem and problem.endswith("; the replay runs without it")


def test_rviz2_on_path_counts_as_installed(tmp_path, monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    program = tmp_path / "rviz2"
    program.write_text("#!/bin/sh\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    environ = {"PATH": os.pathsep.join(["/nonexistent", str(tmp_path)])}
    assert package_installed("rviz2", environ)
    assert rviz_problem("anything", environ) is None
