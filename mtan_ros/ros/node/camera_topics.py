"""How the cameras of one perception node are named, and pointed at their drivers' topics.

Camera `front` reads `front/image_raw` (or `front/image_raw/compressed`) and
`front/camera_info`, relative to the node, so a namespace moves them all and a
remap points each at its driver. perception.launch.py builds those remaps from a
small YAML file (name -> the driver's image topic), the way its `image:=` argument
does for one camera; nothing here needs ROS, so it is checked without launch.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import yaml

from mtan_ros.common.text import quote
from mtan_ros.errors import ConfigError

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def camera_name_problem(name: str) -> Optional[str]:
    """Why `name` cannot name a camera (its topics are `<name>/image_raw`, ... under the node), or None."""
    if name.startswith(("/", "~")):
        return "must be relative (its topics live under the node's namespace, where remaps and namespaces apply)"
    if not all(_PART.match(part) for part in name.split("/")):
        return ("may hold only letters, digits and underscores (and / between parts), no part empty or starting "
                "with a digit")
    return None


def parse_cameras(text: str) -> list[str]:
    """The launch argument `cameras:="[front, rear]"` (or `front,rear`) as names; [] when empty."""
    text = text.strip()
    if not text:
        return []
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\s]+", value) if part]
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise ConfigError(f"cameras:={quote(text)} is not a list of camera names; write e.g. "
                          "cameras:=\"[front, rear]\"")
    check_camera_names(value)
    return value


def check_camera_names(names: list[str]) -> None:
    """ConfigError (one line) unless every name is usable and listed once."""
    for name in names:
        problem = camera_name_problem(name)
        if problem is not None:
            raise ConfigError(f"camera name {quote(name)} {problem}, e.g. cameras:=\"[front, rear]\"")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"cameras lists {', '.join(map(quote, repeated))} more than once; give every camera a "
                          "distinct name")


def read_camera_topics(path: str | Path) -> dict[str, dict[str, str]]:
    """A camera_topics file: `name: /driver/image_raw` or `name: {image: ..., camera_info: ...}` per camera.

    Returns name -> {"image": topic, "camera_info": topic}; camera_info defaults to
    the image topic's sibling (`/cam/image_raw` -> `/cam/camera_info`), as drivers
    publish it.
    """
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read camera_topics {quote(str(path))}: {exc}") from None
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"camera_topics {quote(str(path))} must map each camera name to its image topic, e.g. "
                          "`front: /front_camera/image_raw`")
    topics = {}
    for name, entry in document.items():
        topics[str(name)] = _entry_topics(str(name), entry, path)
    check_camera_names(list(topics))
    return topics


def _entry_topics(name: str, entry: Any, path: str | Path) -> dict[str, str]:
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"].strip() \
            or set(entry) - {"image", "camera_info"}:
        raise ConfigError(f"camera_topics {quote(str(path))}: camera {quote(name)} needs an image topic, as "
                          f"`{name}: /driver/image_raw` or `{name}: {{image: ..., camera_info: ...}}`")
    image = entry["image"].strip().rstrip("/")
    camera_info = str(entry.get("camera_info") or "").strip() or "/".join([*image.split("/")[:-1], "camera_info"])
    return {"image": image, "camera_info": camera_info}


def camera_remappings(cameras: list[str], topics: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """Remaps of each listed camera's inputs to its driver's topics (cameras without an entry keep theirs)."""
    unknown = sorted(set(topics) - set(cameras))
    if unknown:
        raise ConfigError(f"camera_topics names {', '.join(map(quote, unknown))}, which cameras does not list "
                          f"({', '.join(cameras) or 'none'})")
    remaps = []
    for name in cameras:
        if name in topics:
            image, camera_info = topics[name]["image"], topics[name]["camera_info"]
            remaps += [(f"{name}/image_raw", image), (f"{name}/image_raw/compressed", f"{image}/compressed"),
                       (f"{name}/camera_info", camera_info)]
    return remaps
