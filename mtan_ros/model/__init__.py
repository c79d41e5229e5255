"""SegNet-based multi-task models: MTAN and its Split / Single baselines.

All take ``(tasks: dict[str, int], width: float = 1.0)`` and map an
N x 3 x H x W batch (H, W multiples of INPUT_MULTIPLE) to a dict of per-task
outputs.
"""

from mtan_ros.model.baselines import SegNetSingle, SegNetSplit
from mtan_ros.model.blocks import INPUT_MULTIPLE, POOLINGS, set_pooling
from mtan_ros.model.factory import ARCHITECTURES, build_model
from mtan_ros.model.official import load_official_state_dict
from mtan_ros.model.segnet_mtan import SegNetMTAN

__all__ = [
    "ARCHITECTURES",
    "INPUT_MULTIPLE",
    "POOLINGS",
    "SegNetMTAN",
    "SegNetSingle",
    "SegNetSplit",
    "build_model",
    "load_official_state_dict",
    "set_pooling",
]
