"""Depth + colours + labels -> sensor_msgs/PointCloud2 in the camera's optical frame.

Why a small dedicated module: the back-projection is pure numpy (rays are cached
per image size, stride and intrinsics, so a frame costs a few vector operations),
and it is easy to get the conventions wrong. Conventions used (REP 103/105, and
what RViz and PCL expect):
- the cloud is in the image's frame_id (an optical frame: x right, y down, z forward);
- x = (u - cx) / fx * z, y = (v - cy) / fy * z with z the depth in metres; the
  image is assumed rectified (distortion coefficients are not applied);
- fields x, y, z (float32), rgb (float32 carrying 0x00RRGGBB, the PCL/RViz packing),
  label (uint8 class id); little-endian, 20-byte points;
- only pixels with a finite positive depth become points (an unorganised, dense cloud),
  or, `organized`, every sampled pixel in image order (height x width, NaN xyz where
  there is no depth): with stride 1 pixel-aligned with `semantic` and `confidence`,
  as Nav2's semantic segmentation layer needs.
"""
from __future__ import annotations

import array
import math
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField

POINT_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb", "label"],
        "formats": ["<f4", "<f4", "<f4", "<u4", "u1"],
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20,
    }
)
# A calibration for fewer pixels than this per side is not a camera's.
MIN_CALIBRATED_SIZE = 4


def point_fields() -> list[PointField]:
    return [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
        PointField(name="label", offset=16, datatype=PointField.UINT8, count=1),
    ]


def camera_info_problem(info: CameraInfo) -> str | None:
    """Why `info` cannot place pixels in space (None when it can).

    Uncalibrated drivers send K = 0; a damaged or hostile message can carry inf/NaN or a
    calibration for a 1x1 image, which would turn every point into nonsense.
    """
    values = [float(v) for v in (*info.k, *info.p, *info.d)]
    if not all(math.isfinite(v) for v in values):
        return "has non-finite values in K, P or D"
    fx, cx, fy, cy = float(info.k[0]), float(info.k[2]), float(info.k[4]), float(info.k[5])
    if not (fx > 0 and fy > 0):
        return f"has no focal length (fx {fx:g}, fy {fy:g}); calibrate the camera"
    width, height = int(info.width), int(info.height)
    if (width, height) != (0, 0):
        if width < MIN_CALIBRATED_SIZE or height < MIN_CALIBRATED_SIZE:
            return f"is calibrated for a {width}x{height} image, too small to be a camera"
        if not (0.0 <= cx <= width and 0.0 <= cy <= height):
            return f"puts the principal point ({cx:g}, {cy:g}) outside its {width}x{height} image"
    return None


def intrinsics_for(info: CameraInfo, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of `info`, scaled when the image size differs from the calibration size.

    Raises ValueError for a camera_info without a usable K (all zeros, as uncalibrated drivers send).
    """
    problem = camera_info_problem(info)
    if problem is not None:
        raise ValueError(f"camera_info {problem}")
    fx, cx, fy, cy = float(info.k[0]), float(info.k[2]), float(info.k[4]), float(info.k[5])
    if info.width and info.height and (info.width, info.height) != (width, height):
        sx, sy = width / float(info.width), height / float(info.height)
        fx, cx, fy, cy = fx * sx, (cx + 0.5) * sx - 0.5, fy * sy, (cy + 0.5) * sy - 0.5
    return fx, fy, cx, cy


def scaled_camera_info(info: CameraInfo, header: Any, width: int, height: int) -> CameraInfo:
    """A copy of `info` with the image's header and size (K, P scaled if the size differs)."""
    out = CameraInfo()
    out.header = header
    out.width, out.height = int(width), int(height)
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = list(info.r)
    out.binning_x, out.binning_y, out.roi = info.binning_x, info.binning_y, info.roi
    k, p = np.array(info.k, dtype=float), np.array(info.p, dtype=float)
    if info.width and info.height and (info.width, info.height) != (width, height):
        sx, sy = width / float(info.width), height / float(info.height)
        k[[0, 1, 2]] *= sx
        k[[3, 4, 5]] *= sy
        k[2] += 0.5 * sx - 0.5
        k[5] += 0.5 * sy - 0.5
        p[[0, 1, 2, 3]] *= sx
        p[[4, 5, 6, 7]] *= sy
        p[2] += 0.5 * sx - 0.5
        p[6] += 0.5 * sy - 0.5
    out.k, out.p = k.tolist(), p.tolist()
    return out


class PointCloudBuilder:
    """Builds clouds; caches the per-pixel ray factors for the last (size, stride, intrinsics)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._rays: tuple[np.ndarray, np.ndarray] | None = None

    def _ray_factors(self, width: int, height: int, stride: int, intrinsics: tuple) -> tuple[np.ndarray, np.ndarray]:
        key = (width, height, stride, intrinsics)
        if key != self._key:
            fx, fy, cx, cy = intrinsics
            xs = ((np.arange(0, width, stride, dtype=np.float32) - cx) / fx).astype(np.float32)
            ys = ((np.arange(0, height, stride, dtype=np.float32) - cy) / fy).astype(np.float32)
            self._key, self._rays = key, (xs, ys)
        assert self._rays is not None
        return self._rays

    def build(
        self,
        header: Any,
        depth: np.ndarray,
        rgb: np.ndarray,
        labels: np.ndarray,
        info: CameraInfo,
        stride: int = 1,
        organized: bool = False,
    ) -> PointCloud2:
        """A cloud of every `stride`-th pixel (both directions) with a valid depth; all of them if `organized`."""
        height, width = depth.shape
        if rgb.shape[:2] != (height, width) or labels.shape != (height, width):
            raise ValueError(f"depth {depth.shape}, rgb {rgb.shape} and labels {labels.shape} differ in size")
        stride = max(1, int(stride))
        xs, ys = self._ray_factors(width, height, stride, intrinsics_for(info, width, height))
        z = depth[::stride, ::stride]
        valid = np.isfinite(z) & (z > 0)
        if organized:
            z = np.where(valid, z, np.float32(np.nan))
            valid = np.ones(z.shape, bool)
        count = int(np.count_nonzero(valid))

        cloud = PointCloud2()
        cloud.header = header
        cloud.height, cloud.width = z.shape if organized else (1, count)
        cloud.fields = point_fields()
        cloud.is_bigendian = False
        cloud.point_step = POINT_DTYPE.itemsize
        cloud.row_step = POINT_DTYPE.itemsize * cloud.width
        cloud.is_dense = not organized or bool(np.isfinite(z).all())
        cloud.data = array.array("B", b"\0") * (POINT_DTYPE.itemsize * count)
        if count == 0:
            return cloud
        points = np.frombuffer(cloud.data, dtype=POINT_DTYPE)  # the buffer the message kept
        zv = z[valid]
        points["z"] = zv
        points["x"] = np.broadcast_to(xs[None, :], z.shape)[valid] * zv
        points["y"] = np.broadcast_to(ys[:, None], z.shape)[valid] * zv
        colours = rgb[::stride, ::stride][valid].astype(np.uint32)
        points["rgb"] = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
        points["label"] = labels[::stride, ::stride][valid]
        return cloud


def cloud_to_array(cloud: PointCloud2) -> np.ndarray:
    """A PointCloud2 built here back as a structured array (x, y, z, rgb, label)."""
    if cloud.point_step != POINT_DTYPE.itemsize or [f.name for f in cloud.fields] != list(POINT_DTYPE.names):
        raise ValueError("not a cloud with this module's x, y, z, rgb, label layout")
    return np.frombuffer(cloud.data, dtype=POINT_DTYPE, count=cloud.width * cloud.height)
