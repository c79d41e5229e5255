"""Synthetic street scenes with exact metric depth, for tests, the demo and benchmarks.

These scenes are NOT a substitute for Cityscapes: geometry is made of boxes and
spheres, textures are procedural and there is no real sensor. They exist so
that the whole pipeline (training, bags, the ROS node, evaluation) can run and
be tested on a machine without the dataset, with ground truth that is exact by
construction. Numbers measured on them say nothing about real-world accuracy.

How a scene is made (numpy only, no torch or OpenCV):
- a pinhole camera with Cityscapes intrinsics scaled to the requested size,
  1.2-1.5 m above a flat ground plane, pitched down by 0-3 degrees;
- a street along +Z: road with lanes and markings, kerbs, sidewalks, terrain
  strips; building blocks, walls, fences and hedges along both sides; a row of
  buildings or trees closing the street 60-180 m ahead; trees, poles with
  traffic signs and lights, parked and driving cars, trucks, buses, persons;
- every object is ray-cast per pixel (axis-aligned boxes, spheres, the ground
  plane) into a z-buffer, so occlusion is exact and depth is the z-coordinate
  in the camera frame (what stereo gives: depth = baseline * fx / disparity);
- shading is deferred: one texture pass per material over the visible pixels
  (facade windows, paving, asphalt, foliage noise, car glass and tyres, ...),
  a sun with Lambert shading, haze growing with distance, exposure, white
  balance and sensor noise that change from scene to scene.

Rays are separable (columns give the lateral direction, rows the vertical and
forward ones, since the camera only pitches), which keeps every intersection a
broadcast of a row vector against a column vector; each object is only tested
inside its projected bounding box.

Labels are Cityscapes train ids (uint8, 255 = void); the classes rider, train,
motorcycle and bicycle are never drawn. Depth is float32 metres with NaN where
there is no surface (sky) or the pixel is void (the ego-vehicle bonnet).
Everything is determined by the random generator passed in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from mtan_ros.data.camera import DEFAULT as DEFAULT_CAMERA
from mtan_ros.data.camera import CityscapesCamera

# Cityscapes train ids (fixed by the benchmark; checked against cityscapesscripts in the tests).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS = 11, 12, 13, 14, 15
VOID = 255

DRAWN_TRAIN_IDS = (ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
                   PERSON, CAR, TRUCK, BUS)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Materials (deferred shading).
(M_GROUND, M_FACADE, M_FOLIAGE, M_BARK, M_WALL, M_FENCE, M_METAL, M_SIGN, M_LIGHT,
 M_CAR, M_GLASS, M_CLOTH, M_SKIN, M_BIGCAR) = range(14)

_NOISE_SIZE = 64  # texture tile side (power of two for cheap wrapping)


@dataclass
class SyntheticScene:
    """One rendered scene.

    image: H x W x 3 uint8 RGB; labels: H x W uint8 Cityscapes train ids, 255 = void;
    depth: H x W float32 metres along the optical axis, NaN = no depth (sky, void);
    camera: intrinsics and baseline at this image size; camera_height (m) and
    pitch (rad, positive = looking down) describe the pose above the ground.
    """

    image: np.ndarray
    labels: np.ndarray
    depth: np.ndarray
    camera: CityscapesCamera
    camera_height: float
    pitch: float
    info: dict = field(default_factory=dict)


def scene_rng(seed: int, split: str = "train", index: int = 0) -> np.random.Generator:
    """The generator for scene `index` of `split` under `seed`.

    Each scene depends only on (seed, split, index), so a tree of 10 scenes is the
    first 10 scenes of a tree of 1000 and train and val never share a scene.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {tuple(SPLIT_CODES)}, got {split!r}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def generate_scene(
    rng: Union[np.random.Generator, int, None] = None,
    size: Sequence[int] = (128, 256),
    camera: Optional[CityscapesCamera] = None,
    supersample: int = 1,
) -> SyntheticScene:
    """Render one random street scene of `size` = (H, W).

    `rng` is a numpy Generator (or an int seed); the same generator state gives the
    same arrays. `camera` defaults to the Cityscapes camera scaled to `size`.
    `supersample` = s (odd) renders s x s rays per pixel: the image is their mean, as a
    real camera's optics or a downscaled larger frame would give, while labels and depth
    stay exact at each pixel's centre (the middle ray). A model trained on one-ray scenes
    sees sharper, aliased edges than a node gets from a larger camera it downscales.
    For tests, demos and benchmarks only: not a substitute for real data.
    """
    if rng is None or isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(rng)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")
    height, width = (int(s) for s in size)
    if height < 4 or width < 4:
        raise ValueError(f"scene size must be at least 4x4, got {height}x{width}")
    if not (isinstance(supersample, (int, np.integer)) and supersample >= 1 and supersample % 2 == 1):
        raise ValueError(f"supersample must be an odd whole number >= 1 (its middle ray is the pixel centre), "
                         f"got {supersample!r}")
    if camera is None:
        camera = DEFAULT_CAMERA.scaled(height, width)
    elif camera.size != (height, width):
        camera = camera.scaled(height, width)
    layout = _Layout(rng)
    if supersample == 1:
        return _Renderer(rng, camera, layout).render()
    s = int(supersample)
    fine = _Renderer(rng, camera.scaled(height * s, width * s), layout).render()
    # camera.scaled keeps pixel centres (x' = (x + 0.5) * s - 0.5): ray s // 2 of each block is the centre.
    blocks = fine.image.reshape(height, s, width, s, 3).astype(np.float32).mean(axis=(1, 3))
    middle = slice(s // 2, None, s)
    return dataclasses.replace(fine, image=np.round(blocks).astype(np.uint8),
                               labels=np.ascontiguousarray(fine.labels[middle, middle]),
                               depth=np.ascontiguousarray(fine.depth[middle, middle]), camera=camera)


# ----------------------------------------------------------------------------------------------
# Scene layout: a list of primitives in world coordinates (metres).
# X to the right, Y up (0 = ground), Z forward along the street; the camera is at (cam_x, cam_h, 0).
# ----------------------------------------------------------------------------------------------

@dataclass
class _Prim:
    kind: str  # "box" or "sphere"
    geom: tuple  # box: (x0, x1, y0, y1, z0, z1); sphere: (xc, yc, zc, r)
    material: int
    label: int
    albedo: tuple
    params: tuple = (0.0, 0.0, 0.0, 0.0)


_FACADE_COLOURS = np.array([
    (0.62, 0.58, 0.52), (0.72, 0.68, 0.60), (0.55, 0.36, 0.30), (0.48, 0.48, 0.50), (0.80, 0.76, 0.66),
    (0.66, 0.52, 0.40), (0.40, 0.40, 0.42), (0.75, 0.72, 0.74), (0.60, 0.50, 0.45), (0.52, 0.56, 0.60),
])
_CAR_COLOURS = np.array([
    (0.85, 0.85, 0.87), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58), (0.60, 0.08, 0.07), (0.10, 0.18, 0.45),
    (0.30, 0.32, 0.35), (0.75, 0.73, 0.65), (0.12, 0.30, 0.18), (0.92, 0.92, 0.90), (0.25, 0.16, 0.10),
])
_CLOTH_COLOURS = np.array([
    (0.10, 0.10, 0.12), (0.15, 0.18, 0.35), (0.50, 0.10, 0.10), (0.55, 0.55, 0.55), (0.80, 0.78, 0.72),
    (0.20, 0.35, 0.20), (0.45, 0.30, 0.20), (0.70, 0.55, 0.20), (0.30, 0.20, 0.40),
])
_SKIN_COLOURS = np.array([(0.87, 0.70, 0.58), (0.72, 0.53, 0.40), (0.50, 0.34, 0.24), (0.30, 0.20, 0.15)])
_SIGN_COLOURS = np.array([(0.80, 0.08, 0.08), (0.08, 0.25, 0.70), (0.95, 0.80, 0.10), (0.92, 0.92, 0.92)])


class _Layout:
    """Random street layout: geometry, classes and materials of every object."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        r = rng
        self.cam_h = float(r.uniform(1.2, 1.5))
        self.pitch = float(np.deg2rad(r.uniform(0.0, 3.0)))
        lanes_left, lanes_right = int(r.integers(1, 3)), int(r.integers(1, 3))
        lane_w = float(r.uniform(3.0, 3.6))
        self.lane_w = lane_w
        self.road_left, self.road_right = -lanes_left * lane_w, lanes_right * lane_w
        own_lane = int(r.integers(0, lanes_right))
        self.cam_x = float((own_lane + 0.5) * lane_w + r.uniform(-0.4, 0.4))
        self.lane_centres = [(i + 0.5) * lane_w for i in range(-lanes_left, lanes_right)]
        self.walk_w = (float(r.uniform(2.0, 5.0)), float(r.uniform(2.0, 5.0)))
        self.z_end = float(r.uniform(60.0, 180.0))
        self.dash = (float(r.uniform(2.0, 4.0)), float(r.uniform(5.0, 10.0)))  # dash length, period
        self.road_albedo = float(r.uniform(0.22, 0.38))
        self.walk_albedo = np.clip(r.uniform(0.45, 0.70) * np.array([1.0, 0.97, 0.93])
                                   + r.uniform(-0.05, 0.05, 3), 0, 1)
        self.walk_tile = float(r.uniform(0.3, 0.8))
        self.terrain_albedo = np.array([0.42, 0.50, 0.22]) * r.uniform(0.8, 1.2) + r.uniform(-0.04, 0.04, 3)
        self.prims: list[_Prim] = []
        # terrain strips between sidewalk and setback: (side, z0, z1, x_from, x_to) ground regions
        self.terrain: list[tuple[float, float, float, float]] = []
        self._sides()
        self._street_end()
        self._street_furniture()
        self._vehicles()
        self._persons()
        self.hood = bool(r.random() < 0.35)
        self.hood_shape = (float(r.uniform(0.82, 0.92)), float(r.uniform(0.04, 0.10)))

    # helpers -------------------------------------------------------------------------------
    def box(self, x0, x1, y0, y1, z0, z1, material, label, albedo, params=(0.0, 0.0, 0.0, 0.0)):
        self.prims.append(_Prim("box", (min(x0, x1), max(x0, x1), y0, y1, min(z0, z1), max(z0, z1)),
                                material, label, tuple(float(a) for a in albedo), tuple(params)))

    def sphere(self, xc, yc, zc, radius, material, label, albedo, params=(0.0, 0.0, 0.0, 0.0)):
        self.prims.append(_Prim("sphere", (xc, yc, zc, radius), material, label,
                                tuple(float(a) for a in albedo), tuple(params)))

    def curb(self, side: int) -> float:
        return self.road_right if side > 0 else self.road_left

    def building_line(self, side: int) -> float:
        return self.curb(side) + side * self.walk_w[0 if side < 0 else 1]

    def pick(self, table: np.ndarray, jitter: float = 0.04) -> np.ndarray:
        colour = table[int(self.rng.integers(len(table)))]
        return np.clip(colour + self.rng.uniform(-jitter, jitter, 3), 0.0, 1.0)

    # layout pieces ---------------------------------------------------------------------------
    def _sides(self) -> None:
        r = self.rng
        for side in (-1, 1):
            line = self.building_line(side)
            z = -5.0
            while z < self.z_end:
                length = float(r.uniform(6.0, 28.0))
                z0, z1 = z, min(z + length, self.z_end + 5.0)
                kind = r.choice(["building", "building", "building", "gap_wall", "gap_fence", "hedge",
                                 "park"], p=[0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.1])
                setback = float(r.uniform(0.0, 0.8)) if kind == "building" else 0.0
                if kind == "building":
                    self._building(side, line + side * setback, z0, z1)
                elif kind in ("gap_wall", "gap_fence"):
                    wall_h = float(r.uniform(1.0, 2.5))
                    material, label = (M_WALL, WALL) if kind == "gap_wall" else (M_FENCE, FENCE)
                    albedo = r.uniform(0.45, 0.75) * np.array([1.0, 0.96, 0.9]) if kind == "gap_wall" \
                        else np.array([0.45, 0.40, 0.33]) * r.uniform(0.7, 1.3)
                    self.box(line, line + side * 0.25, 0.0, wall_h, z0, z1, material, label, albedo,
                             (float(r.uniform(0.08, 0.2)), 0.0, 0.0, 0.0))
                    back = line + side * float(r.uniform(6.0, 20.0))
                    self.terrain.append((min(line, back), max(line, back), z0, z1))  # a garden behind
                    self._building(side, back, z0 - float(r.uniform(0, 5)), z1 + float(r.uniform(0, 5)))
                elif kind == "hedge":
                    self.box(line, line + side * 1.2, 0.0, float(r.uniform(1.0, 2.5)), z0, z1, M_FOLIAGE,
                             VEGETATION, self._green())
                    back = line + side * float(r.uniform(4.0, 15.0))
                    self.terrain.append((min(line, back), max(line, back), z0, z1))
                    self._building(side, back, z0, z1)
                else:  # park: grass with trees, buildings far behind
                    far = line + side * float(r.uniform(15.0, 40.0))
                    self.terrain.append((min(line, far), max(line, far), z0, z1))
                    for _ in range(int(r.integers(1, 4))):
                        x = line + side * float(r.uniform(2.0, abs(far - line) - 3.0))
                        self._tree(x, float(r.uniform(z0, z1)))
                    self._building(side, far, z0, z1)
                z = z1

    def _building(self, side: int, x_front: float, z0: float, z1: float) -> None:
        r = self.rng
        height = float(r.uniform(5.0, 26.0))
        depth = float(r.uniform(10.0, 20.0))
        floor_h = float(r.uniform(2.8, 3.6))
        window_pitch = float(r.uniform(1.6, 3.5))
        self.box(x_front, x_front + side * depth, 0.0, height, z0, z1, M_FACADE, BUILDING,
                 self.pick(_FACADE_COLOURS, 0.05),
                 (floor_h, window_pitch, float(r.uniform(0.3, 0.6)), float(r.uniform(0, 100))))

    def _street_end(self) -> None:
        r = self.rng
        x = -160.0
        while x < 160.0:
            w = float(r.uniform(10.0, 40.0))
            z0 = self.z_end + float(r.uniform(0.0, 15.0))
            if r.random() < 0.3:
                self.box(x, x + w, 0.0, float(r.uniform(4.0, 12.0)), z0, z0 + 20.0, M_FOLIAGE, VEGETATION,
                         self._green())
            else:
                self.box(x, x + w, 0.0, float(r.uniform(6.0, 35.0)), z0, z0 + 20.0, M_FACADE, BUILDING,
                         self.pick(_FACADE_COLOURS, 0.05),
                         (float(r.uniform(2.8, 3.6)), float(r.uniform(1.6, 3.5)), 0.45, float(r.uniform(0, 100))))
            x += w

    def _green(self) -> np.ndarray:
        return np.clip(np.array([0.22, 0.38, 0.12]) * self.rng.uniform(0.7, 1.3) + self.rng.uniform(-0.04, 0.04, 3),
                       0, 1)

    def _tree(self, x: float, z: float) -> None:
        r = self.rng
        trunk_h = float(r.uniform(1.8, 3.5))
        self.box(x - 0.15, x + 0.15, 0.0, trunk_h, z - 0.15, z + 0.15, M_BARK, VEGETATION,
                 np.array([0.30, 0.22, 0.15]) * r.uniform(0.8, 1.2))
        radius = float(r.uniform(1.5, 3.2))
        green = self._green()
        for _ in range(int(r.integers(1, 4))):
            self.sphere(x + float(r.uniform(-0.6, 0.6)) * radius, trunk_h + radius * float(r.uniform(0.6, 1.1)),
                        z + float(r.uniform(-0.6, 0.6)) * radius, radius * float(r.uniform(0.7, 1.0)),
                        M_FOLIAGE, VEGETATION, green)

    def _street_furniture(self) -> None:
        r = self.rng
        for side in (-1, 1):
            curb = self.curb(side)
            z = float(r.uniform(2.0, 15.0))
            while z < self.z_end - 5:
                x = curb + side * float(r.uniform(0.4, 0.9))
                choice = r.random()
                if choice < 0.45:
                    self._tree(x + side * 0.3, z)
                else:
                    pole_h = float(r.uniform(3.0, 8.0))
                    self.box(x - 0.08, x + 0.08, 0.0, pole_h, z - 0.08, z + 0.08, M_METAL, POLE,
                             np.full(3, r.uniform(0.35, 0.6)))
                    if choice < 0.75:
                        s = float(r.uniform(0.3, 0.45))
                        y = float(r.uniform(2.0, min(3.0, pole_h - s)))
                        self.box(x - s, x + s, y - s, y + s, z - 0.1, z - 0.06, M_SIGN, SIGN,
                                 self.pick(_SIGN_COLOURS, 0.03), (x, y, s, 0.0))
                    elif choice < 0.9:
                        y = min(pole_h, float(r.uniform(2.5, 4.0)))
                        lit = float(r.integers(0, 3))
                        self.box(x - 0.18, x + 0.18, y - 0.45, y + 0.45, z - 0.35, z - 0.08, M_LIGHT, LIGHT,
                                 (0.08, 0.08, 0.08), (x, y, lit, 0.0))
                z += float(r.uniform(8.0, 25.0))

    def _car(self, x: float, z: float, heading_z: bool = True) -> None:
        r = self.rng
        length, width = float(r.uniform(3.8, 4.9)), float(r.uniform(1.65, 1.9))
        body_h, cabin_h = float(r.uniform(0.75, 1.0)), float(r.uniform(0.45, 0.6))
        colour = self.pick(_CAR_COLOURS, 0.03)
        x0, x1 = x - width / 2, x + width / 2
        z0, z1 = z - length / 2, z + length / 2
        self.box(x0, x1, 0.12, body_h + 0.12, z0, z1, M_CAR, CAR, colour, (z0, z1, 0.12, 0.0))
        inset = length * float(r.uniform(0.18, 0.28))
        self.box(x0 + 0.1, x1 - 0.1, body_h + 0.12, body_h + 0.12 + cabin_h, z0 + inset * 1.2, z1 - inset, M_GLASS,
                 CAR, colour)

    def _vehicles(self) -> None:
        r = self.rng
        for side in (-1, 1):  # parked along the kerbs
            x = self.curb(side) - side * 1.15
            # in the camera's own lane they stand further ahead, like traffic waiting
            z = float(r.uniform(12.0, 35.0)) if abs(x - self.cam_x) < 1.6 else float(r.uniform(3.0, 12.0))
            while z < self.z_end - 10:
                if r.random() < 0.65:
                    self._car(x + float(r.uniform(-0.15, 0.15)), z)
                z += float(r.uniform(5.2, 9.0))
        for lane_x in self.lane_centres:  # traffic
            if abs(lane_x - self.cam_x) < self.lane_w / 2:
                z = float(r.uniform(12.0, 40.0))
            else:
                z = float(r.uniform(4.0, 25.0))
            while z < self.z_end - 10:
                if abs(lane_x - self.road_left) < 2 or abs(lane_x - self.road_right) < 2:
                    break  # kerb lanes are parking
                if r.random() < 0.15:
                    kind = TRUCK if r.random() < 0.5 else BUS
                    length, height = float(r.uniform(7.0, 12.0)), float(r.uniform(2.8, 3.6))
                    albedo = self.pick(_CAR_COLOURS, 0.05) if kind == TRUCK else self.pick(
                        np.array([(0.85, 0.75, 0.15), (0.80, 0.12, 0.10), (0.90, 0.90, 0.90), (0.15, 0.35, 0.60)]))
                    self.box(lane_x - 1.25, lane_x + 1.25, 0.25, height, z, z + length, M_BIGCAR, kind, albedo,
                             (1.0 if kind == BUS else 0.0, 0.0, 0.0, 0.0))
                    z += length + float(r.uniform(8.0, 30.0))
                else:
                    self._car(lane_x + float(r.uniform(-0.3, 0.3)), z + 2.5)
                    z += float(r.uniform(8.0, 35.0))

    def _person(self, x: float, z: float) -> None:
        r = self.rng
        h = float(r.uniform(1.55, 1.95))
        w = float(r.uniform(0.38, 0.5))
        legs = self.pick(_CLOTH_COLOURS, 0.05)
        torso = self.pick(_CLOTH_COLOURS, 0.05)
        leg_h = 0.47 * h
        self.box(x - w * 0.4, x + w * 0.4, 0.0, leg_h, z - 0.13, z + 0.13, M_CLOTH, PERSON, legs)
        self.box(x - w / 2, x + w / 2, leg_h, 0.86 * h, z - 0.15, z + 0.15, M_CLOTH, PERSON, torso)
        head = 0.14 * h
        self.box(x - head * 0.45, x + head * 0.45, 0.86 * h, h, z - 0.11, z + 0.11, M_SKIN, PERSON,
                 self.pick(_SKIN_COLOURS, 0.03))

    def _persons(self) -> None:
        r = self.rng
        for _ in range(int(r.integers(0, 9))):
            side = -1 if r.random() < 0.5 else 1
            curb, line = self.curb(side), self.building_line(side)
            x = float(r.uniform(min(curb, line) + 0.4, max(curb, line) - 0.4))
            z = float(r.uniform(4.0, min(70.0, self.z_end - 5)))
            self._person(x, z)
            if r.random() < 0.3:  # a companion
                self._person(x + float(r.uniform(0.5, 0.8)) * -side, z + float(r.uniform(-0.4, 0.4)))
        if r.random() < 0.3:  # people crossing the road ahead
            z = float(r.uniform(8.0, 30.0))
            for _ in range(int(r.integers(1, 4))):
                self._person(float(r.uniform(self.road_left + 0.5, self.road_right - 0.5)), z + float(r.uniform(-1, 1)))


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def _tileable_noise(rng: np.random.Generator, n: int = _NOISE_SIZE) -> np.ndarray:
    """Smooth value noise on an n x n torus, zero mean, unit-ish amplitude (float32)."""
    base = rng.standard_normal((n, n)).astype(np.float32)
    for _ in range(2):  # two wrap-around box blurs
        base = (base + np.roll(base, 1, 0) + np.roll(base, -1, 0)) / 3
        base = (base + np.roll(base, 1, 1) + np.roll(base, -1, 1)) / 3
    base -= base.mean()
    base /= base.std() + 1e-6
    return base


class _Renderer:
    def __init__(self, rng: np.random.Generator, camera: CityscapesCamera, layout: _Layout):
        self.rng, self.cam, self.lay = rng, camera, layout
        self.H, self.W = camera.size
        cp, sp = np.cos(layout.pitch), np.sin(layout.pitch)
        self.cp, self.sp = cp, sp
        u = np.arange(self.W, dtype=np.float64)
        v = np.arange(self.H, dtype=np.float64)
        yd = (v - camera.v0) / camera.fy
        # Ray through pixel (u, v) in camera coordinates is (xd, yd, 1); its parameter t is the
        # camera z (depth). In the world (Y up): lateral xd, downward `down`, forward `fwd`.
        self.xd = ((u - camera.u0) / camera.fx).astype(np.float32)[None, :]
        self.down = (yd * cp + sp).astype(np.float32)[:, None]
        self.fwd = (cp - yd * sp).astype(np.float32)[:, None]
        self.cx, self.ch = np.float32(layout.cam_x), np.float32(layout.cam_h)
        self.zbuf = np.full((self.H, self.W), np.inf, dtype=np.float32)
        self.pid = np.full((self.H, self.W), -1, dtype=np.int32)
        self.face = np.zeros((self.H, self.W), dtype=np.int8)
        self.noise = _tileable_noise(rng)
        self.noise2 = _tileable_noise(rng)

    # geometry ------------------------------------------------------------------------------
    def _windows(self, bounds: np.ndarray) -> list:
        """Pixel windows (r0, r1, c0, c1) covering the projections of N world boxes (N x 6 bounds
        x0, x1, y0, y1, z0, z1), None for boxes that cannot be seen; all boxes at once."""
        x = bounds[:, [0, 1, 0, 1, 0, 1, 0, 1]] - self.lay.cam_x
        dn = self.lay.cam_h - bounds[:, [2, 2, 3, 3, 2, 2, 3, 3]]
        zs = bounds[:, [4, 4, 4, 4, 5, 5, 5, 5]]
        yc = dn * self.cp - zs * self.sp
        zc = dn * self.sp + zs * self.cp
        behind = zc <= 0.05
        safe = np.where(behind, 1.0, zc)
        u = self.cam.u0 + self.cam.fx * x / safe
        v = self.cam.v0 + self.cam.fy * yc / safe
        c0 = np.maximum(np.floor(u.min(1)) - 1, 0).astype(np.int64)
        c1 = np.minimum(np.ceil(u.max(1)) + 2, self.W).astype(np.int64)
        r0 = np.maximum(np.floor(v.min(1)) - 1, 0).astype(np.int64)
        r1 = np.minimum(np.ceil(v.max(1)) + 2, self.H).astype(np.int64)
        windows = []
        for i in range(len(bounds)):
            if behind[i].all() or bounds[i, 5] <= bounds[i, 4]:
                windows.append(None)
            elif behind[i].any():  # crosses the camera plane: test the whole image
                windows.append((0, self.H, 0, self.W))
            elif c0[i] >= c1[i] or r0[i] >= r1[i]:
                windows.append(None)
            else:
                windows.append((int(r0[i]), int(r1[i]), int(c0[i]), int(c1[i])))
        return windows

    def _commit(self, window, t, hit, pid, face):
        r0, r1, c0, c1 = window
        zwin = self.zbuf[r0:r1, c0:c1]
        upd = hit & (t < zwin)
        if not upd.any():
            return
        zwin[upd] = t[upd]
        self.pid[r0:r1, c0:c1][upd] = pid
        if face is not None:
            self.face[r0:r1, c0:c1][upd] = face[upd] if isinstance(face, np.ndarray) else face

    def _box(self, pid: int, geom, window) -> None:
        x0, x1, y0, y1, z0, z1 = geom
        z0 = max(z0, 0.5)  # nothing nearer can be seen; keeps the window finite
        r0, r1, c0, c1 = window
        xd, down, fwd = self.xd[:, c0:c1], self.down[r0:r1], self.fwd[r0:r1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (np.float32(x0) - self.cx) / xd, (np.float32(x1) - self.cx) / xd
            ya, yb = (self.ch - np.float32(y0)) / down, (self.ch - np.float32(y1)) / down
            za, zb = np.float32(z0) / fwd, np.float32(z1) / fwd
        txn, txf = np.minimum(ta, tb), np.maximum(ta, tb)
        tyn, tyf = np.minimum(ya, yb), np.maximum(ya, yb)
        trn = np.maximum(tyn, za)
        trf = np.minimum(tyf, zb)
        tn = np.maximum(txn, trn)
        tf = np.minimum(txf, trf)
        hit = (tn <= tf) & (tn > 0.3)
        face = np.where(txn >= trn, np.int8(0), np.where(tyn >= za, np.int8(1), np.int8(2)))
        self._commit(window, tn, hit, pid, face)

    def _sphere(self, pid: int, geom, window) -> None:
        xc, yc, zc, rad = geom
        r0, r1, c0, c1 = window
        xd, down, fwd = self.xd[:, c0:c1], self.down[r0:r1], self.fwd[r0:r1]
        ox, oy, oz = self.cx - np.float32(xc), self.ch - np.float32(yc), np.float32(-zc)
        a = xd * xd + (down * down + fwd * fwd)
        half_b = xd * ox + (-down * oy + fwd * oz)
        c = np.float32(ox * ox + oy * oy + oz * oz - rad * rad)
        disc = half_b * half_b - a * c
        hit = disc >= 0
        t = (-half_b - np.sqrt(np.maximum(disc, 0))) / a
        hit &= t > 0.3
        self._commit(window, t, hit, pid, 3)

    def _ground(self) -> None:
        with np.errstate(divide="ignore"):
            t = np.where(self.down > 1e-6, self.ch / self.down, np.inf).astype(np.float32)  # H x 1
        t = np.where(t * self.fwd < self.lay.z_end + 40.0, t, np.inf)
        self.zbuf[:] = t
        self.pid[:] = np.where(np.isfinite(t), 0, -1)
        self.face[:] = 1

    # shading ---------------------------------------------------------------------------------
    def _tex(self, s, t, scale, which=0):
        """Bilinearly interpolated tileable noise at world coordinates (s, t) * scale."""
        tile = (self.noise if which == 0 else self.noise2).ravel()
        n = _NOISE_SIZE
        s = np.asarray(s, dtype=np.float32) * np.float32(scale)
        t = np.asarray(t, dtype=np.float32) * np.float32(scale)
        s0, t0 = np.floor(s), np.floor(t)
        fs, ft = s - s0, t - t0
        i0 = (s0.astype(np.int32) & (n - 1)) * n
        j0 = t0.astype(np.int32) & (n - 1)
        i1, j1 = (i0 + n) & (n * n - 1), (j0 + 1) & (n - 1)
        a, b = tile.take(i0 + j0), tile.take(i0 + j1)
        c, d = tile.take(i1 + j0), tile.take(i1 + j1)
        top = a + (b - a) * ft
        return top + (c + (d - c) * ft - top) * fs

    def render(self) -> SyntheticScene:
        lay, rng = self.lay, self.rng
        H, W = self.H, self.W
        self._ground()
        prims = [_Prim("ground", (), M_GROUND, ROAD, (0, 0, 0))] + lay.prims
        bounds = np.empty((len(prims) - 1, 6), dtype=np.float64)
        for i, prim in enumerate(prims[1:]):
            if prim.kind == "box":
                x0, x1, y0, y1, z0, z1 = prim.geom
                bounds[i] = (x0, x1, y0, y1, max(z0, 0.5), z1)
            else:
                xc, yc, zc, rad = prim.geom
                bounds[i] = (xc - rad, xc + rad, yc - rad, yc + rad, zc - rad, zc + rad)
        for pid, (prim, window) in enumerate(zip(prims[1:], self._windows(bounds)), start=1):
            if window is None:
                continue
            if prim.kind == "box":
                self._box(pid, prim.geom, window)
            else:
                self._sphere(pid, prim.geom, window)

        # Per-primitive tables for the shading pass.
        n = len(prims)
        p_mat = np.array([p.material for p in prims], dtype=np.int16)
        p_lab = np.array([p.label for p in prims], dtype=np.uint8)
        p_alb = np.array([p.albedo for p in prims], dtype=np.float32).reshape(n, 3)
        p_par = np.array([p.params for p in prims], dtype=np.float32).reshape(n, 4)
        p_geo = np.zeros((n, 6), dtype=np.float32)
        for i, p in enumerate(prims[1:], start=1):
            p_geo[i, :len(p.geom)] = p.geom

        valid = self.pid >= 0
        flat = np.flatnonzero(valid)
        rows = flat // W
        cols = flat - rows * W
        pid = self.pid.ravel().take(flat)
        t = self.zbuf.ravel().take(flat)
        X = self.cx + t * self.xd[0].take(cols)
        Y = self.ch - t * self.down[:, 0].take(rows)
        Z = t * self.fwd[:, 0].take(rows)
        face = self.face.ravel().take(flat)
        mat = p_mat.take(pid)
        labels = np.full((H, W), SKY, dtype=np.uint8)
        lab = p_lab[pid].copy()
        albedo = p_alb[pid].copy()
        tex = np.ones(len(pid), dtype=np.float32)  # brightness modulation

        # Ground: road, kerb and sidewalk, terrain.
        g = np.nonzero(mat == M_GROUND)[0]
        if len(g):
            gx, gz = X[g], Z[g]
            on_road = (gx >= lay.road_left) & (gx <= lay.road_right)
            glab = np.where(on_road, ROAD, SIDEWALK).astype(np.uint8)
            for x0, x1, z0, z1 in lay.terrain:
                glab[(gx >= x0) & (gx <= x1) & (gz >= z0) & (gz <= z1) & ~on_road] = TERRAIN
            ga = np.empty((len(g), 3), dtype=np.float32)
            n1 = self._tex(gx, gz, 6.0) * 0.08 + self._tex(gx, gz, 0.35, 1) * 0.07
            road = glab == ROAD
            ga[road] = lay.road_albedo * (1.0 + n1[road])[:, None]
            # lane markings: dashed between lanes, solid near the kerbs
            mark = np.zeros(len(g), dtype=bool)
            dash_len, period = lay.dash
            for k, lx in enumerate(np.arange(lay.road_left + lay.lane_w, lay.road_right - 0.1, lay.lane_w)):
                mark |= (np.abs(gx - lx) < 0.08) & (np.mod(gz + k * 1.3, period) < dash_len)
            mark |= (np.abs(gx - (lay.road_left + 0.3)) < 0.07) | (np.abs(gx - (lay.road_right - 0.3)) < 0.07)
            mark &= road
            ga[mark] = 0.85
            walk = glab == SIDEWALK
            tile = lay.walk_tile
            joint = (np.mod(gx[walk], tile) < 0.03) | (np.mod(gz[walk], tile) < 0.03)
            kerb = (np.abs(gx[walk] - lay.road_left) < 0.2) | (np.abs(gx[walk] - lay.road_right) < 0.2)
            wa = lay.walk_albedo[None, :] * (1.0 + n1[walk, None] * 0.8)
            wa = np.where(joint[:, None], wa * 0.7, wa)
            wa = np.where(kerb[:, None], 0.75, wa)
            ga[walk] = wa
            ter = glab == TERRAIN
            shade = (1.0 + 0.25 * self._tex(gx[ter], gz[ter], 4.0)[:, None]
                     + 0.15 * self._tex(gx[ter], gz[ter], 0.5, 1)[:, None])
            ga[ter] = lay.terrain_albedo[None, :] * shade
            lab[g] = glab
            albedo[g] = ga

        # Building facades: floors, window grid, shop fronts.
        f = np.nonzero(mat == M_FACADE)[0]
        if len(f):
            par = p_par[pid[f]]
            along = np.where(face[f] == 0, Z[f], X[f])
            y = Y[f]
            fy = np.mod(y, par[:, 0]) / par[:, 0]
            fs = np.mod(along + par[:, 3], par[:, 1]) / par[:, 1]
            win = (fy > 0.3) & (fy < 0.8) & (np.abs(fs - 0.5) < par[:, 2] * 0.5) & (y > 0.8) & (face[f] != 1)
            shop = (y < 3.0) & (y > 0.3) & (np.abs(fs - 0.5) < 0.42) & (face[f] != 1)
            glass = win | (shop & (par[:, 3] > 50))
            tex[f] = 1.0 + 0.06 * self._tex(along, y, 8.0) + 0.05 * self._tex(along, y, 0.7, 1)
            albedo[f[glass]] = np.array([0.10, 0.13, 0.17], dtype=np.float32) + 0.08 * self._tex(
                along[glass], y[glass], 0.5, 1)[:, None]
            roof = face[f] == 1
            albedo[f[roof]] *= 0.6

        # Foliage and bark: high-frequency leaf noise.
        v = np.nonzero((mat == M_FOLIAGE) | (mat == M_BARK))[0]
        if len(v):
            s = X[v] + Z[v]
            tex[v] = np.clip(1.0 + 0.35 * self._tex(s, Y[v], 9.0) + 0.2 * self._tex(X[v] - Z[v], Y[v], 2.5, 1),
                             0.3, 1.8)

        # Walls and fences.
        w = np.nonzero(mat == M_WALL)[0]
        if len(w):
            tex[w] = 1.0 + 0.1 * self._tex(Z[w], Y[w], 5.0) - 0.25 * (np.mod(Y[w], 0.6) < 0.04)
        fe = np.nonzero(mat == M_FENCE)[0]
        if len(fe):
            slat = p_par[pid[fe], 0]
            tex[fe] = np.where(np.mod(Z[fe] + X[fe], slat) < slat * 0.35, 0.45, 1.0) * (
                1.0 + 0.1 * self._tex(Z[fe], Y[fe], 6.0))

        # Signs: coloured plate with a white rim (front), grey back.
        s_ = np.nonzero(mat == M_SIGN)[0]
        if len(s_):
            par = p_par[pid[s_]]
            rel = np.maximum(np.abs(X[s_] - par[:, 0]), np.abs(Y[s_] - par[:, 1])) / par[:, 2]
            rim = rel > 0.8
            albedo[s_[rim]] = 0.9
        li = np.nonzero(mat == M_LIGHT)[0]
        if len(li):
            par = p_par[pid[li]]
            dy = (Y[li] - par[:, 1]) / 0.3  # lamp slots at -1, 0, 1
            slot = np.rint(dy)
            near = (np.hypot(X[li] - par[:, 0], (dy - slot) * 0.3) < 0.11) & (face[li] == 2)
            lamp_cols = np.array([(0.9, 0.1, 0.05), (0.95, 0.7, 0.05), (0.1, 0.85, 0.3)], dtype=np.float32)
            idx = np.clip(slot + 1, 0, 2).astype(np.int64)
            on = (idx == par[:, 2].astype(np.int64))
            col = lamp_cols[idx] * np.where(on, 1.0, 0.25)[:, None]
            albedo[li[near]] = col[near]

        # Cars: body with dark tyres near the axles; cabin glass with a roof in body colour.
        c = np.nonzero(mat == M_CAR)[0]
        if len(c):
            par = p_par[pid[c]]
            length = par[:, 1] - par[:, 0]
            rel = (Z[c] - par[:, 0]) / length
            tyre = (Y[c] < 0.55) & ((np.abs(rel - 0.18) < 0.09) | (np.abs(rel - 0.82) < 0.09)) & (face[c] == 0)
            albedo[c[tyre]] = 0.05
            lamps = (face[c] == 2) & (Y[c] > 0.55) & (Y[c] < 0.75)
            albedo[c[lamps]] = np.array([0.7, 0.1, 0.08], dtype=np.float32)
            tex[c] = 1.0 + 0.03 * self._tex(X[c], Z[c], 3.0)
        gl = np.nonzero(mat == M_GLASS)[0]
        if len(gl):
            roof = face[gl] == 1
            glass_col = np.array([0.12, 0.15, 0.2], dtype=np.float32) + 0.06 * self._tex(X[gl], Y[gl], 2.0)[:, None]
            albedo[gl[~roof]] = glass_col[~roof]
        big = np.nonzero(mat == M_BIGCAR)[0]
        if len(big):
            bus = p_par[pid[big], 0] > 0.5
            band = (Y[big] > 1.3) & (Y[big] < 2.4) & (face[big] != 1) & (bus | (face[big] == 2))
            albedo[big[band]] = np.array([0.1, 0.12, 0.16], dtype=np.float32)
            tyre = (Y[big] < 0.9) & (face[big] == 0) & (np.mod(Z[big], 4.0) < 1.0)
            albedo[big[tyre]] = 0.05
        cl = np.nonzero(mat == M_CLOTH)[0]
        if len(cl):
            tex[cl] = 1.0 + 0.08 * self._tex(X[cl] + Z[cl], Y[cl], 12.0)
        sk = np.nonzero(mat == M_SKIN)[0]
        if len(sk):
            hair = (Y[sk] > p_geo[pid[sk], 3] - 0.06) | (face[sk] == 1)
            albedo[sk[hair]] = np.array([0.12, 0.08, 0.05], dtype=np.float32)

        # Lighting: sun (Lambert) + sky ambient, per scene.
        overcast = rng.random() < 0.35
        elev = rng.uniform(0.2, 1.1)
        azim = rng.uniform(-np.pi, np.pi)
        sun = np.array([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)], dtype=np.float32)
        ambient = rng.uniform(0.55, 0.8) if overcast else rng.uniform(0.3, 0.5)
        # n . sun per face kind: 0 = X face (faces the camera side), 1 = top or bottom (and the
        # ground), 2 = the face towards the camera (-Z), 3 = sphere (normal from the centre).
        lambert = np.empty(len(pid), dtype=np.float32)
        f0 = np.flatnonzero(face == 0)
        lambert[f0] = -np.sign(self.xd[0].take(cols[f0])) * sun[0]
        f1 = np.flatnonzero(face == 1)
        top = (mat[f1] == M_GROUND) | (Y[f1] > 0.5 * (p_geo[pid[f1], 2] + p_geo[pid[f1], 3]))
        lambert[f1] = np.where(top, sun[1], -sun[1])
        lambert[face == 2] = -sun[2]
        f3 = np.flatnonzero(face == 3)
        if len(f3):
            geo = p_geo[pid[f3]]
            lambert[f3] = ((X[f3] - geo[:, 0]) * sun[0] + (Y[f3] - geo[:, 1]) * sun[1]
                           + (Z[f3] - geo[:, 2]) * sun[2]) / np.maximum(geo[:, 3], 1e-3)
        np.clip(lambert, 0.0, 1.0, out=lambert)
        light = ambient + (1.0 - ambient) * (0.6 if overcast else 1.0) * 1.6 * lambert
        colour = albedo * (tex * light)[:, None]

        # Sky: gradient from horizon to zenith with soft clouds; also the haze colour.
        zenith = np.array([0.25, 0.45, 0.85]) * rng.uniform(0.8, 1.1) if not overcast else \
            np.full(3, rng.uniform(0.6, 0.8))
        horizon = np.array([0.75, 0.82, 0.92]) * rng.uniform(0.9, 1.1) if not overcast else \
            np.full(3, rng.uniform(0.75, 0.9))
        if rng.random() < 0.15:  # low sun
            horizon = np.array([0.95, 0.7, 0.45])
        # elevation of each row's ray above the horizon
        elev_rows = np.clip(-self.down[:, 0] / np.sqrt(self.down[:, 0] ** 2 + self.fwd[:, 0] ** 2), 0, 1)
        mix = np.sqrt(elev_rows)[:, None]
        sky_rows = ((1 - mix) * horizon + mix * zenith).astype(np.float32)  # H x 3
        image = np.empty((H * W, 3), dtype=np.float32)
        sky = np.flatnonzero(~valid.ravel())
        if len(sky):
            srow = sky // W
            clouds = self._tex((sky - srow * W) * np.float32(128.0 / W), srow * np.float32(64.0 / H), 0.35, 1)
            image[sky] = sky_rows[srow] + (np.clip(clouds, 0, None) * (0.25 if not overcast else 0.1))[:, None]
        haze = (0.6 * horizon + 0.4 * np.array([0.8, 0.8, 0.8])).astype(np.float32)
        fog_dist = rng.uniform(120.0, 600.0)
        fog = (1.0 - np.exp(-t / np.float32(fog_dist))).astype(np.float32)[:, None]
        image[flat] = colour + (haze[None, :] - colour) * fog
        image = image.reshape(H, W, 3)
        labels.ravel()[flat] = lab

        depth = np.where(valid, self.zbuf, np.float32(np.nan)).astype(np.float32)

        # Ego-vehicle bonnet at the bottom of some scenes: void in labels and depth.
        if lay.hood:
            top, bulge = lay.hood_shape
            xn = (np.arange(W, dtype=np.float32) - W / 2) / (W / 2)
            edge = (top + bulge * xn ** 2) * H
            hood = np.arange(H, dtype=np.float32)[:, None] >= edge[None, :]
            if hood.any():
                labels[hood] = VOID
                depth[hood] = np.nan
                rows_h = np.nonzero(hood)[0].astype(np.float32)
                image[hood] = np.array([0.10, 0.10, 0.12], dtype=np.float32) + (0.1 * rows_h / H)[:, None]

        # Camera: exposure, white balance, vignetting, gamma (a lookup table), sensor noise.
        gain = rng.uniform(0.75, 1.25)
        balance = np.clip(1.0 + rng.uniform(-0.08, 0.08, 3), 0.8, 1.2)
        xn = (np.arange(W, dtype=np.float32) - W / 2) / (W / 2)
        yn = (np.arange(H, dtype=np.float32) - H / 2) / (H / 2)
        vignette = 1.0 - 0.075 * (xn[None, :] ** 2 + yn[:, None] ** 2)
        image *= vignette[..., None]
        image *= (gain * balance).astype(np.float32)
        levels = 1024
        tone = (np.linspace(0.0, 1.0, levels, dtype=np.float32) ** np.float32(rng.uniform(0.85, 1.1))) * 255.0
        index = np.clip(image, 0.0, 1.0)
        index *= levels - 1
        image = tone.take(index.astype(np.int32))
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(255.0 * rng.uniform(0.004, 0.02))
        image += 0.5
        image_u8 = np.clip(image, 0.0, 255.0).astype(np.uint8)

        info = {"objects": len(prims) - 1, "z_end": lay.z_end, "overcast": bool(overcast)}
        return SyntheticScene(image=image_u8, labels=labels, depth=depth, camera=self.cam,
                              camera_height=lay.cam_h, pitch=lay.pitch, info=info)
