"""Small building blocks shared by every SegNet-based architecture.

Each block is an ``nn.Sequential`` with named children so that state-dict
keys read as what they are (``conv``, ``bn``) and the official-weight loader
can translate them without guessing.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# SegNet (VGG-16 layout) as used by the MTAN paper: channels and 3x3 convs per stage.
SEGNET_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
SEGNET_CONVS: tuple[int, ...] = (2, 2, 3, 3, 3)
# Five 2x poolings: input height and width must divide by this.
INPUT_MULTIPLE: int = 2 ** len(SEGNET_CHANNELS)


def scaled_channels(width: float, base: Sequence[int] = SEGNET_CHANNELS) -> tuple[int, ...]:
    """Channel counts for a width multiplier, never below one channel.

    ``width`` trades accuracy for speed: 0.25 gives 16-32-64-128-128, small
    enough to train on a CPU.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise TypeError(f"width must be a number, got {type(width).__name__}")
    if not math.isfinite(width) or width <= 0:
        raise ValueError(
            f"width must be a positive finite number (1.0 = the paper's model), got {width}"
        )
    return tuple(max(1, round(c * width)) for c in base)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU: SegNet's basic layer."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class ConvStage(nn.Module):
    """One resolution level of the SegNet encoder or decoder.

    The first layer changes the channel count; the remaining ones keep it.
    Both the first layer's output and the stage output are returned because
    the attention modules read the former and gate the latter.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int) -> None:
        super().__init__()
        if num_convs < 2:
            raise ValueError(f"a stage needs at least 2 convolutions, got {num_convs}")
        self.first = ConvBNReLU(in_channels, out_channels)
        self.rest = nn.Sequential(
            *(ConvBNReLU(out_channels, out_channels) for _ in range(num_convs - 1))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.first(x)
        return first, self.rest(first)


class AttentionMask(nn.Sequential):
    """Task-specific soft mask in [0, 1]: 1x1 conv-BN-ReLU, 1x1 conv-BN-sigmoid.

    The mask is multiplied element-wise onto a shared feature map so that
    each task picks the features it needs from the shared network. A plain
    Sequential, so inference can fold each BatchNorm into its convolution.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.sigmoid = nn.Sigmoid()


class TaskHead(nn.Sequential):
    """Per-task prediction: 3x3 conv (no norm, no activation), then 1x1 conv to the outputs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.output = nn.Conv2d(in_channels, out_channels, kernel_size=1)


class IndexPooling(nn.Module):
    """SegNet's 2x2 max-pooling that remembers where each maximum was, as flat indices, and its unpooling."""

    kind = "indices"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)

    def unpool(self, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return F.max_unpool2d(x, where, kernel_size=2, stride=2)


class MaskPooling(nn.Module):
    """The same pooling with the positions as 2x2 one-hot masks instead of indices.

    Outputs are bitwise equal to IndexPooling's (ties go to the first maximum in
    raster order, as max_pool2d picks it), but the graph uses only reshapes,
    comparisons and selects, so it exports to runtimes that have no pooling
    indices (TensorRT) and runs faster in those whose indexed kernels are slow.
    """

    kind = "masks"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        windows = F.pixel_unshuffle(x, 2).reshape(n, c, 4, h // 2, w // 2)  # (0,0), (0,1), (1,0), (1,1)
        pooled = windows.amax(dim=2)
        hits = windows == pooled.unsqueeze(2)
        taken = hits[:, :, 0]
        firsts = [taken]
        for k in range(1, 4):
            firsts.append(hits[:, :, k] & ~taken)
            taken = taken | hits[:, :, k]
        return pooled, torch.stack(firsts, dim=2)

    def unpool(self, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        spread = torch.where(where, x.unsqueeze(2), torch.zeros((), dtype=x.dtype, device=x.device))
        return F.pixel_shuffle(spread.reshape(n, c * 4, h, w), 2)


POOLINGS: dict[str, type[nn.Module]] = {"indices": IndexPooling, "masks": MaskPooling}


def set_pooling(model: nn.Module, kind: str) -> nn.Module:
    """Switch every SegNet backbone in `model` to `kind` pooling ("indices" or "masks"); returns `model`.

    Weights are untouched (the pooling modules have none), so this is an
    inference-time choice: "masks" for ONNX graphs meant for TensorRT.
    """
    if kind not in POOLINGS:
        raise ValueError(f"pooling {kind!r} is not one of {', '.join(POOLINGS)}")
    for module in model.modules():
        if isinstance(module, SegNetBackbone):
            module.pool = POOLINGS[kind]()
    return model


class SegNetFeatures(NamedTuple):
    """Intermediate maps of the shared SegNet, one entry per stage.

    Encoder lists run from full resolution down; decoder lists in decoding
    order (coarsest first). ``decoder_in`` is the unpooled map entering a
    decoder stage.
    """

    encoder_first: list[torch.Tensor]
    encoder_out: list[torch.Tensor]
    decoder_in: list[torch.Tensor]
    decoder_out: list[torch.Tensor]


class SegNetBackbone(nn.Module):
    """SegNet encoder-decoder: max-pooling with indices, max-unpooling back.

    Decoder stage k (in decoding order) mirrors encoder stage ``n - 1 - k``:
    same number of convolutions, channels going back to the previous level's
    width (the last stage stays at the first level's width).
    """

    def __init__(
        self, channels: Sequence[int], convs: Sequence[int] = SEGNET_CONVS, in_channels: int = 3
    ) -> None:
        super().__init__()
        if len(channels) != len(convs):
            raise ValueError(
                f"channels {tuple(channels)} and convs {tuple(convs)} must have the same length"
            )
        self.channels = tuple(channels)
        n = len(channels)
        ins = (in_channels, *channels[:-1])
        self.encoder = nn.ModuleList(ConvStage(ins[s], channels[s], convs[s]) for s in range(n))
        self.decoder = nn.ModuleList(
            ConvStage(channels[s], channels[max(s - 1, 0)], convs[s]) for s in reversed(range(n))
        )
        self.pool: nn.Module = IndexPooling()

    def features(self, x: torch.Tensor) -> SegNetFeatures:
        encoder_first, encoder_out, indices = [], [], []
        for stage in self.encoder:
            first, out = stage(x)
            encoder_first.append(first)
            encoder_out.append(out)
            x, where = self.pool(out)
            indices.append(where)
        decoder_in, decoder_out = [], []
        for stage, idx in zip(self.decoder, reversed(indices)):
            x = self.pool.unpool(x, idx)
            decoder_in.append(x)
            _, x = stage(x)
            decoder_out.append(x)
        return SegNetFeatures(encoder_first, encoder_out, decoder_in, decoder_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).decoder_out[-1]


def init_weights(module: nn.Module) -> None:
    """The reference initialisation: Xavier-normal convolutions, zero biases, unit BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
