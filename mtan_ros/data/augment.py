"""Training augmentation as in the MTAN reference: random scale-crop and horizontal flip.

`random_scale_crop` picks a scale sc from (1.0, 1.2, 1.5), crops a random
H/sc x W/sc window and enlarges it back to H x W (image bilinear, labels and
depth nearest so that no class id or depth value is invented). Enlarging a crop
by sc looks like the same camera standing sc times closer to the scene, so the
depth targets must change to stay consistent with what the image shows:
  - metric depth (metres, or any value proportional to distance) is divided by sc;
  - inverse depth (proportional to disparity = baseline * fx / depth) is multiplied by sc.
(Equivalently the crop multiplies the focal length by sc, and disparity grows
with fx.) Invalid depth (0) stays 0 either way. Getting the direction wrong
would teach the network that larger-looking objects are farther away.

The reference divides by sc, which is right for its metric NYUv2 depth; here
the direction follows the dataset's DepthEncoding.

All randomness comes from the generator passed in (a numpy Generator or a torch
Generator), so a seeded generator reproduces the same crops and flips.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from mtan_ros.depth_encoding import METRIC, DepthEncoding

Rng = Union[np.random.Generator, torch.Generator]
DEFAULT_SCALES = (1.0, 1.2, 1.5)


def _randint(rng: Rng, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    if isinstance(rng, torch.Generator):
        return int(torch.randint(low, high + 1, (1,), generator=rng).item())
    raise TypeError(f"rng must be a numpy Generator or a torch Generator, got {type(rng).__name__}")


def _uniform(rng: Rng) -> float:
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    if isinstance(rng, torch.Generator):
        return float(torch.rand((1,), generator=rng).item())
    raise TypeError(f"rng must be a numpy Generator or a torch Generator, got {type(rng).__name__}")


def scale_depth(depth: torch.Tensor, scale: float, encoding: DepthEncoding) -> torch.Tensor:
    """Depth targets after enlarging the image by `scale` (see the module doc for the direction)."""
    if encoding.kind == "metric":
        return depth / scale
    if encoding.kind == "inverse":
        return depth * scale
    raise ValueError(f"unknown depth encoding kind {encoding.kind!r}")


def random_scale_crop(image: torch.Tensor, semantic: torch.Tensor, depth: torch.Tensor, rng: Rng,
                      scales: Sequence[float] = DEFAULT_SCALES, depth_encoding: DepthEncoding = METRIC):
    """Crop a random 1/sc window and resize it back; returns (image, semantic, depth).

    image 3 x H x W float, semantic H x W int (-1 void), depth 1 x H x W in `depth_encoding`.
    """
    height, width = image.shape[-2:]
    sc = float(scales[_randint(rng, 0, len(scales) - 1)])
    if sc < 1.0:
        raise ValueError(f"augmentation scales must be >= 1 (crops enlarge), got {sc}")
    h, w = max(1, int(height / sc)), max(1, int(width / sc))
    top, left = _randint(rng, 0, height - h), _randint(rng, 0, width - w)
    size = (int(height), int(width))
    image = F.interpolate(image[None, :, top:top + h, left:left + w].float(), size=size, mode="bilinear",
                          align_corners=False)[0]
    labels = F.interpolate(semantic[None, None, top:top + h, left:left + w].double(), size=size,
                           mode="nearest-exact")[0, 0].to(semantic.dtype)
    depth = F.interpolate(depth[None, :, top:top + h, left:left + w].float(), size=size, mode="nearest-exact")[0]
    return image, labels, scale_depth(depth, sc, depth_encoding)


def random_flip(image: torch.Tensor, semantic: torch.Tensor, depth: torch.Tensor, rng: Rng,
                probability: float = 0.5):
    """Mirror all three left-right together with the given probability."""
    if _uniform(rng) < probability:
        return image.flip(-1), semantic.flip(-1), depth.flip(-1)
    return image, semantic, depth


def augment_sample(item: dict[str, Any], rng: Rng, depth_encoding: DepthEncoding,
                   scales: Sequence[float] = DEFAULT_SCALES, flip_probability: float = 0.5) -> dict[str, Any]:
    """Scale-crop then flip one dataset item {"image", "semantic", "depth"}; other keys are kept."""
    image, semantic, depth = random_scale_crop(item["image"], item["semantic"], item["depth"], rng, scales,
                                               depth_encoding)
    image, semantic, depth = random_flip(image, semantic, depth, rng, flip_probability)
    out = dict(item)
    out.update(image=image.contiguous(), semantic=semantic.contiguous(), depth=depth.contiguous())
    return out
