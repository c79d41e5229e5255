"""Baselines from the MTAN paper, built from the same blocks as SegNetMTAN.

``SegNetSplit``: one shared SegNet, a head per task (the paper's "Split,
Standard"). ``SegNetSingle``: a whole SegNet per task, i.e. independent
single-task networks behind the same multi-task interface.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mtan_ros.model.blocks import SEGNET_CONVS, SegNetBackbone, TaskHead, init_weights, scaled_channels
from mtan_ros.model.tasks import check_input, finish_output, validate_tasks


class SegNetSplit(nn.Module):
    """Shared SegNet encoder-decoder with task-specific heads.

    Same arguments, input and output as :class:`SegNetMTAN`.
    """

    def __init__(self, tasks: Mapping[str, int], width: float = 1.0) -> None:
        super().__init__()
        self.tasks = validate_tasks(tasks)
        self.width = width
        ch = scaled_channels(width)
        self.backbone = SegNetBackbone(ch, SEGNET_CONVS)
        self.heads = nn.ModuleDict({name: TaskHead(ch[0], c) for name, c in self.tasks.items()})
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x)
        features = self.backbone(x)
        return {name: finish_output(name, head(features)) for name, head in self.heads.items()}

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, width={self.width}"


class SegNetSingle(nn.Module):
    """One independent SegNet (backbone + head) per task.

    Same arguments, input and output as :class:`SegNetMTAN`; with one task it
    is the paper's single-task baseline.
    """

    def __init__(self, tasks: Mapping[str, int], width: float = 1.0) -> None:
        super().__init__()
        self.tasks = validate_tasks(tasks)
        self.width = width
        ch = scaled_channels(width)
        self.networks = nn.ModuleDict(
            {
                name: nn.Sequential(SegNetBackbone(ch, SEGNET_CONVS), TaskHead(ch[0], c))
                for name, c in self.tasks.items()
            }
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x)
        return {name: finish_output(name, net(x)) for name, net in self.networks.items()}

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, width={self.width}"
