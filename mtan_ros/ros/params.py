"""The perception node's parameters: descriptions and ranges here, default values in config/perception.yaml.

Why split it this way: node and launch defaults that disagree are a classic source
of "works with ros2 launch, not with ros2 run" bugs. The values live in one file,
`config/perception.yaml`, which the launch file passes as its params file and which
the node also reads at start-up as its declared defaults, so `ros2 run` without a
params file behaves the same. This module holds what the YAML cannot: the type,
description, range and whether a change at run time can be applied.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtan_ros.errors import ConfigError  # noqa: F401 (re-exported)

PACKAGE = "mtan_ros"
DEFAULTS_RELATIVE = Path("config") / "perception.yaml"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type  # bool, int, float or str
    description: str
    range: tuple[float, float] | None = None
    # False: the node refuses a change while running (with `restart_reason`).
    runtime: bool = True
    restart_reason: str = ""


_RESTART = "takes effect only when the node starts: restart it with the new value"

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", str, "Checkpoint file to load (written by mtan-train / mtan-demo).",
              runtime=False, restart_reason=_RESTART + " (the model is loaded once at start-up)"),
    ParamSpec("device", str, "auto | cpu | cuda | cuda:N. auto picks the GPU when there is one, else the CPU.",
              runtime=False, restart_reason=_RESTART),
    ParamSpec("precision", str, "auto | fp32 | fp16 | bf16. auto: fp16 on CUDA, fp32 on the CPU.",
              runtime=False, restart_reason=_RESTART),
    ParamSpec("compile", bool,
              "Compile the model with torch.compile at start-up: 10-25% faster on CPUs, 20-60 s longer start.",
              runtime=False, restart_reason=_RESTART),
    ParamSpec("compressed_input", bool,
              "Subscribe to image_raw/compressed (JPEG/PNG, sensor_msgs/CompressedImage) instead of image_raw.",
              runtime=False, restart_reason=_RESTART + " (the subscription type changes)"),
    ParamSpec("publish_depth", bool, "Publish depth (32FC1 metres) and depth/camera_info."),
    ParamSpec("publish_semantic", bool, "Publish semantic (mono8 class ids)."),
    ParamSpec("publish_semantic_color", bool, "Publish semantic_color (rgb8, the checkpoint's class colours)."),
    ParamSpec("publish_overlay", bool, "Publish overlay (rgb8, camera image blended with the class colours)."),
    ParamSpec("publish_points", bool,
              "Publish points (PointCloud2 xyz + rgb + label) once camera_info has arrived."),
    ParamSpec("overlay_alpha", float, "Weight of the class colours in overlay (0 = image only, 1 = colours only).",
              range=(0.0, 1.0)),
    ParamSpec("points_stride", int, "Use every N-th pixel in both directions for points.", range=(1, 64)),
    ParamSpec("max_depth", float, "Depth beyond this many metres is published as NaN (no estimate).",
              range=(0.1, 10000.0)),
    ParamSpec("max_input_pixels", int,
              "Images declaring more pixels than this are refused before anything is allocated.",
              range=(1, 1_000_000_000)),
    ParamSpec("diagnostics_period", float, "Seconds between /diagnostics messages.", range=(0.1, 60.0),
              runtime=False, restart_reason=_RESTART),
    ParamSpec("warning_period", float, "Seconds between two warnings about the same kind of bad input.",
              range=(0.0, 3600.0)),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def defaults_file() -> Path:
    """config/perception.yaml: next to the sources (checkout, editable install), else the installed share."""
    candidates = [Path(__file__).resolve().parents[2] / DEFAULTS_RELATIVE]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / DEFAULTS_RELATIVE)
    except Exception:  # not in an ament index (plain pip install), or ament_index_python absent
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / DEFAULTS_RELATIVE)
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "cannot find the parameter defaults config/perception.yaml (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); reinstall the package"
    )


def load_defaults(path: Path | str | None = None, node_name: str = "perception_node") -> dict[str, Any]:
    """The node's parameter values from a ROS params YAML (`/**:` or `<node_name>:` sections).

    Every declared parameter must have a value of the declared type, and the file may hold
    nothing else for this node, so that a typo there fails loudly instead of being ignored.
    """
    path = Path(path) if path is not None else defaults_file()
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read parameter defaults {path}: {exc}") from None
    values: dict[str, Any] = {}
    for section in ("/**", node_name, "/" + node_name):
        params = (document.get(section) or {}).get("ros__parameters") or {}
        values.update(params)
    values.pop("use_sim_time", None)
    missing = [s.name for s in SPECS if s.name not in values]
    unknown = sorted(set(values) - set(SPEC_BY_NAME))
    if missing or unknown:
        raise ConfigError(f"{path}: missing parameters {missing}, unknown parameters {unknown}")
    for spec in SPECS:
        values[spec.name] = coerce(spec, values[spec.name], source=str(path))
    return values


def coerce(spec: ParamSpec, value: Any, source: str = "") -> Any:
    """`value` as the spec's type (an int is accepted for a float); ConfigError otherwise."""
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or (spec.kind is int and isinstance(value, bool)):
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}parameter {spec.name} must be {KIND_WORDS[spec.kind]}, got {value!r} ({type(value).__name__})"
        )
    return value
