"""Pinhole intrinsics and stereo baseline of the Cityscapes camera.

Cityscapes stores one `camera/<split>/<city>/<frame>_camera.json` per frame with
`intrinsic.fx/fy/u0/v0` in pixels of the 2048x1024 images and
`extrinsic.baseline` in metres. Data, synthetic scenes and the bag writer's
camera_info all come from this one class, so metric depth and published
intrinsics agree at every stored resolution.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtan_ros.data.errors import DataError


@dataclass(frozen=True)
class CityscapesCamera:
    """Intrinsics (pixels of a `width` x `height` image) and stereo baseline (metres).

    Pixel coordinates follow OpenCV: (0, 0) is the centre of the top-left pixel.
    """

    fx: float
    fy: float
    u0: float
    v0: float
    baseline: float
    width: int = 2048
    height: int = 1024

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "baseline"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"camera {name} must be a positive number, got {value!r}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera image size must be positive, got {self.width}x{self.height}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image these intrinsics describe."""
        return int(self.height), int(self.width)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the camera matrix
        """3x3 camera matrix (float64), as in sensor_msgs/CameraInfo.k."""
        return np.array([[self.fx, 0.0, self.u0], [0.0, self.fy, self.v0], [0.0, 0.0, 1.0]])

    def scaled(self, height: int, width: int) -> "CityscapesCamera":
        """The same camera for the image resized to `height` x `width`.

        Pixel centres map as in cv2.resize (x' = (x + 0.5) * s - 0.5), so the principal
        point stays on the same scene point; the baseline does not change.
        """
        height, width = int(height), int(width)
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        sx, sy = width / self.width, height / self.height
        return CityscapesCamera(
            fx=self.fx * sx,
            fy=self.fy * sy,
            u0=(self.u0 + 0.5) * sx - 0.5,
            v0=(self.v0 + 0.5) * sy - 0.5,
            baseline=self.baseline,
            width=width,
            height=height,
        )

    def depth_from_disparity(self, disparity: np.ndarray) -> np.ndarray:
        """Metric depth (float32 metres) from disparity in pixels of this image; 0 where disparity <= 0."""
        disparity = np.asarray(disparity, dtype=np.float64)
        valid = np.isfinite(disparity) & (disparity > 0)
        depth = np.zeros(disparity.shape, dtype=np.float64)
        depth[valid] = self.baseline * self.fx / disparity[valid]
        return depth.astype(np.float32)

    def disparity_from_depth(self, depth: np.ndarray) -> np.ndarray:
        """Disparity in pixels of this image from metric depth; 0 where depth is invalid."""
        depth = np.asarray(depth, dtype=np.float64)
        valid = np.isfinite(depth) & (depth > 0)
        disparity = np.zeros(depth.shape, dtype=np.float64)
        disparity[valid] = self.baseline * self.fx / depth[valid]
        return disparity

    def to_json_dict(self, **extrinsic: float) -> dict[str, Any]:
        """The Cityscapes camera json layout, plus the image size the intrinsics refer to.

        Real Cityscapes files have no size entry (their intrinsics are for 2048x1024);
        `from_json` assumes that when it is absent. Keyword arguments fill the other
        extrinsic entries (pitch, roll, yaw in radians; x, y, z in metres), 0 by default.
        """
        pose = {"pitch": 0.0, "roll": 0.0, "yaw": 0.0, "x": 0.0, "y": 0.0, "z": 0.0}
        unknown = set(extrinsic) - set(pose)
        if unknown:
            raise TypeError(f"unknown extrinsic entries {sorted(unknown)}; expected some of {sorted(pose)}")
        pose.update({k: float(v) for k, v in extrinsic.items()})
        return {
            "extrinsic": {"baseline": self.baseline, **pose},
            "intrinsic": {"fx": self.fx, "fy": self.fy, "u0": self.u0, "v0": self.v0},
            "image_size": {"width": int(self.width), "height": int(self.height)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "camera json") -> "CityscapesCamera":
        try:
            intrinsic, extrinsic = data["intrinsic"], data["extrinsic"]
            size = data.get("image_size") or {}
            return cls(
                fx=float(intrinsic["fx"]),
                fy=float(intrinsic["fy"]),
                u0=float(intrinsic["u0"]),
                v0=float(intrinsic["v0"]),
                baseline=float(extrinsic["baseline"]),
                width=int(size.get("width", 2048)),
                height=int(size.get("height", 1024)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                source,
                f"camera json is missing or has a bad field ({exc})",
                "extrinsic.baseline and intrinsic.fx/fy/u0/v0 as positive numbers",
            ) from None

    @classmethod
    def from_json(cls, path: "str | os.PathLike[str]") -> "CityscapesCamera":
        """Read a Cityscapes `*_camera.json`; raises DataError naming the file if it is bad."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise DataError(path, "camera file not found", "a Cityscapes *_camera.json for this frame") from None
        except (OSError, ValueError) as exc:
            raise DataError(path, f"cannot read camera json ({exc})", "a valid JSON file") from None
        if not isinstance(data, dict):
            raise DataError(path, "camera json is not an object", "a Cityscapes camera json object")
        return cls.from_dict(data, source=path)

    def to_json(self, path: "str | os.PathLike[str]", **extrinsic: float) -> None:
        """Write a Cityscapes-style camera json (see `to_json_dict`)."""
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json_dict(**extrinsic), handle, indent=2)
            handle.write("\n")


# Averages of the per-city Cityscapes camera files (pixels at 2048x1024, metres).
DEFAULT = CityscapesCamera(fx=2262.52, fy=2265.30, u0=1096.98, v0=513.137, baseline=0.209313)
DEFAULT_CAMERA = DEFAULT
