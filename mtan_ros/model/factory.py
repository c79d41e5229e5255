"""Build a model by architecture name, as checkpoints and command lines name them."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from mtan_ros.model.baselines import SegNetSingle, SegNetSplit
from mtan_ros.model.segnet_mtan import SegNetMTAN

_CLASSES: dict[str, type[nn.Module]] = {
    "mtan": SegNetMTAN,
    "split": SegNetSplit,
    "single": SegNetSingle,
}
ARCHITECTURES: tuple[str, ...] = tuple(_CLASSES)


def build_model(arch: str, tasks: Mapping[str, int], width: float = 1.0) -> nn.Module:
    """Return a freshly initialised model of architecture ``arch`` (one of ARCHITECTURES)."""
    try:
        cls = _CLASSES[arch]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None
    return cls(tasks, width)
