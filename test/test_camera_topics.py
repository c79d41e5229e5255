"""Camera names and the remaps perception.launch.py builds from `cameras:=` and a camera_topics file (no ROS)."""
from __future__ import annotations

import pytest

from mtan_ros.errors import ConfigError
from mtan_ros.ros.node.camera_topics import (
    camera_name_problem,
    camera_remappings,
    parse_cameras,
    read_camera_topics,
)


@pytest.mark.parametrize("text,names", [
    ("[front, rear]", ["front", "rear"]),
    ("front,rear", ["front", "rear"]),
    ("['front']", ["front"]),
    ("[left/rgb, _aux2]", ["left/rgb", "_aux2"]),
    ("  ", []),
])
def test_the_cameras_argument_is_read_as_a_list_of_names(text, names):
    assert parse_cameras(text) == names


@pytest.mark.parametrize("text,words", [
    ("[front, front]", "cameras lists 'front' more than once"),
    ("[/front]", "camera name '/front' must be relative"),
    ("[front/]", "camera name 'front/' may hold only letters"),
    ("[2nd]", "camera name '2nd' may hold only letters"),
    ("{front: 1}", "is not a list of camera names"),
    ("[front, 3]", "is not a list of camera names"),
])
def test_unusable_cameras_arguments_are_one_line_errors(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_cameras(text)


def test_a_good_name_has_no_problem():
    assert camera_name_problem("front") is None and camera_name_problem("left/rgb_2") is None


def test_camera_topics_remap_each_cameras_inputs_to_its_driver(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text("front: /front_camera/color/image_raw\n"
                    "rear: {image: /rear/image_rect, camera_info: /rear/calibration}\n")
    topics = read_camera_topics(path)
    assert topics == {"front": {"image": "/front_camera/color/image_raw",
                                "camera_info": "/front_camera/color/camera_info"},
                      "rear": {"image": "/rear/image_rect", "camera_info": "/rear/calibration"}}
    assert camera_remappings(["front", "rear", "side"], topics) == [
        ("front/image_raw", "/front_camera/color/image_raw"),
        ("front/image_raw/compressed", "/front_camera/color/image_raw/compressed"),
        ("front/camera_info", "/front_camera/color/camera_info"),
        ("rear/image_raw", "/rear/image_rect"),
        ("rear/image_raw/compressed", "/rear/image_rect/compressed"),
        ("rear/camera_info", "/rear/calibration"),
    ]  # side has no entry: it keeps side/image_raw and side/camera_info


@pytest.mark.parametrize("content,words", [
    ("front: [a, b]\n", "camera 'front' needs an image topic"),
    ("front: {image: /a, info: /b}\n", "camera 'front' needs an image topic"),
    ("- front\n", "must map each camera name to its image topic"),
    ("'/front': /a/image_raw\n", "camera name '/front' must be relative"),
    ("front: [\n", "cannot read camera_topics"),
])
def test_unusable_camera_topics_files_are_one_line_errors(tmp_path, content, words):
    path = tmp_path / "cameras.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=words):
        read_camera_topics(path)


def test_a_camera_topics_entry_for_an_unlisted_camera_is_refused():
    topics = {"back": {"image": "/b/image_raw", "camera_info": "/b/camera_info"}}
    with pytest.raises(ConfigError, match="camera_topics names 'back', which cameras does not list"):
        camera_remappings(["front"], topics)
