"""How a depth map's stored values relate to metres.

Datasets and models keep depth in whatever unit they were trained in (metres
for raw Cityscapes and synthetic scenes, inverse depth for the preprocessed
Cityscapes release). Everything that publishes or reports metres goes through
one `DepthEncoding`, which a checkpoint records, so the unit is never guessed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Cityscapes stereo rig (camera json, averaged over cities): baseline 0.209313 m,
# fx 2262.52 px at 2048x1024. The preprocessed release stores disparity_png / 65535,
# and a disparity PNG value p means (p - 1) / 256 px, so metres ~= baseline * fx / 256 / value.
# This is an assumption about that release (its unit is undocumented); override the scale
# where a copy is known to differ.
CITYSCAPES_BASELINE_M = 0.209313
CITYSCAPES_FX_PX = 2262.52
CITYSCAPES_INVERSE_SCALE = CITYSCAPES_BASELINE_M * CITYSCAPES_FX_PX / 256.0

KINDS = ("metric", "inverse")


@dataclass(frozen=True)
class DepthEncoding:
    """metric: metres = value * scale; inverse: metres = scale / value. 0 means no value."""

    kind: str = "metric"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"depth encoding kind {self.kind!r} is not one of {KINDS}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"depth encoding scale must be a positive number, got {self.scale!r}")

    def to_metres(self, values: Any) -> Any:
        """Stored values (numpy array or torch tensor) to metres, NaN where there is no value."""
        if _is_torch(values):
            # torch: +1.3 s, measured with -X importtime; this module stays numpy-only (a tensor means torch is loaded)
            import torch

            values = values.float()
            valid = torch.isfinite(values) & (values > 0)
            safe = torch.where(valid, values, torch.ones_like(values))
            metres = safe * self.scale if self.kind == "metric" else self.scale / safe
            return torch.where(valid, metres, torch.full_like(metres, float("nan")))
        values = np.asarray(values, dtype=np.float32)
        valid = np.isfinite(values) & (values > 0)
        safe = np.where(valid, values, np.float32(1.0))
        metres = safe * np.float32(self.scale) if self.kind == "metric" else np.float32(self.scale) / safe
        return np.where(valid, metres, np.float32(np.nan)).astype(np.float32, copy=False)

    def from_metres(self, metres: Any) -> Any:
        """Metres to stored values, 0 where the metres are NaN, infinite or not positive."""
        if _is_torch(metres):
            import torch  # torch: +1.3 s, as in to_metres; only reached with a tensor

            metres = metres.float()
            valid = torch.isfinite(metres) & (metres > 0)
            safe = torch.where(valid, metres, torch.ones_like(metres))
            values = safe / self.scale if self.kind == "metric" else self.scale / safe
            return torch.where(valid, values, torch.zeros_like(values))
        metres = np.asarray(metres, dtype=np.float32)
        valid = np.isfinite(metres) & (metres > 0)
        safe = np.where(valid, metres, np.float32(1.0))
        values = safe / np.float32(self.scale) if self.kind == "metric" else np.float32(self.scale) / safe
        return np.where(valid, values, np.float32(0.0)).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DepthEncoding":
        return cls(kind=str(data["kind"]), scale=float(data["scale"]))


METRIC = DepthEncoding("metric", 1.0)
CITYSCAPES_INVERSE = DepthEncoding("inverse", CITYSCAPES_INVERSE_SCALE)


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")
