"""SegNet-MTAN: the Multi-Task Attention Network of Liu, Johns and Davison (CVPR 2019).

One shared SegNet produces features for all tasks. Each task owns an
attention branch: at every encoder and decoder stage a soft mask, computed
from the shared features and the branch's own previous output, gates the
shared stage output. Between stages the branch passes through 3x3 conv
blocks that are shared by all tasks (pooling in the encoder, bilinear 2x
upsampling in the decoder). A small head per task turns the branch's last
map into predictions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mtan_ros.model.blocks import (
    SEGNET_CONVS,
    AttentionMask,
    ConvBNReLU,
    SegNetBackbone,
    TaskHead,
    init_weights,
    scaled_channels,
)
from mtan_ros.model.tasks import check_input, finish_output, validate_tasks


class SegNetMTAN(nn.Module):
    """Multi-task SegNet with per-task attention.

    Args:
        tasks: task name -> output channels, e.g. ``{"semantic": 7, "depth": 1}``.
            ``normal`` outputs are unit vectors; all others are raw (semantic
            logits, not log-probabilities).
        width: channel multiplier; 1.0 is the paper's model (64-128-256-512-512).

    Input: N x 3 x H x W with H and W multiples of 32.
    Output: dict task name -> N x C x H x W.
    """

    def __init__(self, tasks: Mapping[str, int], width: float = 1.0) -> None:
        super().__init__()
        self.tasks = validate_tasks(tasks)
        self.width = width
        ch = scaled_channels(width)
        n = len(ch)
        self.backbone = SegNetBackbone(ch, SEGNET_CONVS)
        # Channels of the decoder stages' outputs, in decoding order.
        dec_out = [ch[max(s - 1, 0)] for s in reversed(range(n))]
        dec_in = [ch[s] for s in reversed(range(n))]

        # Shared blocks between attention stages. Encoder: widen to the next level.
        self.encoder_shared = nn.ModuleList(
            ConvBNReLU(ch[s], ch[min(s + 1, n - 1)]) for s in range(n)
        )
        # Decoder: bring the upsampled branch to the width of the stage it gates.
        self.decoder_shared = nn.ModuleList(ConvBNReLU(dec_in[k], dec_out[k]) for k in range(n))

        # Per-task masks. The first encoder mask sees only the shared map; later
        # ones see it concatenated with the branch (same width, hence 2x).
        self.encoder_attention = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    AttentionMask(ch[s] if s == 0 else 2 * ch[s], ch[s]) for s in range(n)
                )
                for name in self.tasks
            }
        )
        self.decoder_attention = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    AttentionMask(dec_in[k] + dec_out[k], dec_out[k]) for k in range(n)
                )
                for name in self.tasks
            }
        )
        self.heads = nn.ModuleDict({name: TaskHead(ch[0], c) for name, c in self.tasks.items()})
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x)
        shared = self.backbone.features(x)
        outputs: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            branch = self._attend_encoder(
                self.encoder_attention[name], shared.encoder_first, shared.encoder_out
            )
            branch = self._attend_decoder(
                self.decoder_attention[name], shared.decoder_in, shared.decoder_out, branch
            )
            outputs[name] = finish_output(name, head(branch))
        return outputs

    def _attend_encoder(
        self, masks: nn.ModuleList, firsts: list[torch.Tensor], outs: list[torch.Tensor]
    ) -> torch.Tensor:
        branch = None
        for mask, shared_conv, first, out in zip(masks, self.encoder_shared, firsts, outs):
            mask_in = first if branch is None else torch.cat((first, branch), dim=1)
            branch = shared_conv(mask(mask_in) * out)
            branch = F.max_pool2d(branch, kernel_size=2, stride=2)
        return branch

    def _attend_decoder(
        self,
        masks: nn.ModuleList,
        ins: list[torch.Tensor],
        outs: list[torch.Tensor],
        branch: torch.Tensor,
    ) -> torch.Tensor:
        for mask, shared_conv, up, out in zip(masks, self.decoder_shared, ins, outs):
            branch = F.interpolate(branch, scale_factor=2.0, mode="bilinear", align_corners=True)
            branch = shared_conv(branch)
            branch = mask(torch.cat((up, branch), dim=1)) * out
        return branch

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, width={self.width}"
