"""Task definitions shared by the architectures: validation and output conventions.

A task is a name and a number of output channels. The name decides how the
raw head output is finished: ``normal`` is scaled to unit vectors, every
other task (``semantic`` logits, ``depth``, anything else) is returned raw.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mtan_ros.model.blocks import INPUT_MULTIPLE

# Channel counts that a task name implies; other names take any positive count.
FIXED_CHANNELS: dict[str, int] = {"depth": 1, "normal": 3}


def validate_tasks(tasks: Mapping[str, int]) -> dict[str, int]:
    """Return ``tasks`` as a plain dict, or raise ValueError saying what is wrong."""
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(
            f"tasks must be a non-empty dict of task name -> output channels, "
            f'e.g. {{"semantic": 7, "depth": 1}}; got {tasks!r}'
        )
    out: dict[str, int] = {}
    for name, channels in tasks.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"task names must be non-empty strings without '.', got {name!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(
                f"task {name!r} needs a positive integer channel count, got {channels!r}"
            )
        fixed = FIXED_CHANNELS.get(name)
        if fixed is not None and channels != fixed:
            raise ValueError(
                f"task {name!r} has {fixed} output channel(s) by definition, got {channels}"
            )
        out[name] = channels
    return out


def check_input(x: torch.Tensor) -> None:
    """Reject inputs the SegNet cannot take, before they fail deep inside with a shape error.

    Only shapes are inspected (never values), so this stays friendly to
    torch.compile and export.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an N x 3 x H x W RGB batch, got shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    if h % INPUT_MULTIPLE != 0 or w % INPUT_MULTIPLE != 0:
        m = INPUT_MULTIPLE
        raise ValueError(
            f"input height and width must be multiples of {m} (five 2x poolings), got {h}x{w}; "
            f"resize or pad to e.g. {-(-h // m) * m}x{-(-w // m) * m}"
        )


def finish_output(name: str, raw: torch.Tensor) -> torch.Tensor:
    """Apply the task's output convention to a head's raw output."""
    if name == "normal":
        # Same as dividing by the L2 norm; the epsilon only avoids 0/0. Computed
        # in float32 so that half-precision inference keeps unit length.
        return F.normalize(raw.float(), p=2.0, dim=1).to(raw.dtype)
    return raw
