"""Load weights trained with the reference SegNet-MTAN code (lorenmt/mtan, ``im2im_pred``).

The reference model names its modules by position (``encoder_att.<task>.<stage>``,
``pred_task1``) and indexes its decoder from the finest level up; ours names
them by task and runs the decoder coarsest first. This module translates the
keys, checks every key and shape, and loads, so that our outputs equal the
reference's (log-softmax of our semantic logits is its first output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mtan_ros.model.blocks import AttentionMask, ConvBNReLU, ConvStage, TaskHead
from mtan_ros.model.segnet_mtan import SegNetMTAN

# Task order of the reference: pred_task1 / attention index 0 is semantic, and so on.
REFERENCE_TASK_ORDER: tuple[str, ...] = ("semantic", "depth", "normal")
# Reference parameters that are not part of the network (uncertainty-weighting log-variances).
IGNORED_KEYS: frozenset[str] = frozenset({"logsigma"})
# Entries the reference may lack without changing outputs (older PyTorch BN had no counter).
_OPTIONAL_SUFFIXES: tuple[str, ...] = ("num_batches_tracked",)
_MAX_LISTED = 20

# Child name in our block -> position in the reference's nn.Sequential.
_CHILD_INDEX: dict[type, dict[str, str]] = {
    ConvBNReLU: {"conv": "0", "bn": "1"},
    AttentionMask: {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4"},
    TaskHead: {"hidden": "0", "output": "1"},
}


def _block_keys(module: nn.Module, ours: str, ref: str) -> dict[str, str]:
    """Map every state-dict key of one block from our name to the reference's."""
    table = _CHILD_INDEX[type(module)]
    out = {}
    for key in module.state_dict():
        child, leaf = key.split(".", 1)
        out[f"{ours}.{key}"] = f"{ref}.{table[child]}.{leaf}"
    return out


def _stage_keys(stage: ConvStage, ours: str, ref_first: str, ref_rest: str) -> dict[str, str]:
    # The reference keeps a stage's first conv apart from the rest; a single
    # remaining conv is stored bare, several are wrapped in another Sequential.
    keys = _block_keys(stage.first, f"{ours}.first", ref_first)
    for r, block in enumerate(stage.rest):
        ref = ref_rest if len(stage.rest) == 1 else f"{ref_rest}.{r}"
        keys.update(_block_keys(block, f"{ours}.rest.{r}", ref))
    return keys


def official_key_map(
    model: SegNetMTAN, task_order: Sequence[str] = REFERENCE_TASK_ORDER
) -> dict[str, str]:
    """Our state-dict key -> the reference's key, for every entry of ``model``."""
    n = len(model.backbone.encoder)
    keys: dict[str, str] = {}
    for s, stage in enumerate(model.backbone.encoder):
        keys.update(_stage_keys(
            stage, f"backbone.encoder.{s}", f"encoder_block.{s}", f"conv_block_enc.{s}"
        ))
    for k, stage in enumerate(model.backbone.decoder):
        s = n - 1 - k  # the reference indexes decoder stages by the encoder level they mirror
        keys.update(_stage_keys(
            stage, f"backbone.decoder.{k}", f"decoder_block.{s}", f"conv_block_dec.{s}"
        ))
    for s, block in enumerate(model.encoder_shared):
        keys.update(_block_keys(block, f"encoder_shared.{s}", f"encoder_block_att.{s}"))
    for k, block in enumerate(model.decoder_shared):
        keys.update(_block_keys(block, f"decoder_shared.{k}", f"decoder_block_att.{n - 1 - k}"))
    for t, name in enumerate(task_order):
        for s, mask in enumerate(model.encoder_attention[name]):
            keys.update(_block_keys(mask, f"encoder_attention.{name}.{s}", f"encoder_att.{t}.{s}"))
        for k, mask in enumerate(model.decoder_attention[name]):
            keys.update(_block_keys(
                mask, f"decoder_attention.{name}.{k}", f"decoder_att.{t}.{n - 1 - k}"
            ))
        keys.update(_block_keys(model.heads[name], f"heads.{name}", f"pred_task{t + 1}"))
    return keys


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f", ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}): {', '.join(shown)}{more}"


def load_official_state_dict(
    model: SegNetMTAN,
    state_dict: Mapping[str, torch.Tensor] | nn.Module,
    task_order: Sequence[str] = REFERENCE_TASK_ORDER,
) -> SegNetMTAN:
    """Load a reference SegNet-MTAN state dict into ``model`` and return it.

    Args:
        model: a width-1.0 :class:`SegNetMTAN` whose task names are those of
            ``task_order`` (the semantic class count may differ from 13 if the
            reference was trained with another one).
        state_dict: the reference model's ``state_dict()`` (or the model
            itself); a ``module.`` prefix from DataParallel is removed.
            ``logsigma`` is ignored: task weighting is part of training.
        task_order: our task name for the reference's task 1, 2, 3.

    Raises:
        ValueError: wrong model, or keys missing, unexpected or of the wrong
            shape; the message lists them all.
    """
    if not isinstance(model, SegNetMTAN):
        raise ValueError(
            f"reference SegNet-MTAN weights load into a SegNetMTAN, got {type(model).__name__}"
        )
    if sorted(model.tasks) != sorted(task_order):
        raise ValueError(
            f"the reference model has tasks {list(task_order)} (in that order); "
            f"build SegNetMTAN with exactly those tasks, got {list(model.tasks)}"
        )
    if isinstance(state_dict, nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            "expected a state dict (mapping of name -> tensor), "
            f"got {type(state_dict).__name__}"
        )
    given = dict(state_dict)
    if given and all(k.startswith("module.") for k in given):
        given = {k[len("module."):]: v for k, v in given.items()}
    for key in IGNORED_KEYS:
        given.pop(key, None)

    key_map = official_key_map(model, task_order)
    ours = model.state_dict()
    missing, wrong_shape = [], []
    translated: dict[str, torch.Tensor] = {}
    for our_key, ref_key in key_map.items():
        value = given.get(ref_key)
        if value is None:
            if our_key.endswith(_OPTIONAL_SUFFIXES):
                translated[our_key] = torch.zeros_like(ours[our_key])
            else:
                missing.append(ref_key)
        elif not isinstance(value, torch.Tensor) or value.shape != ours[our_key].shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            wrong_shape.append(f"{ref_key} {got} != expected {tuple(ours[our_key].shape)}")
        else:
            translated[our_key] = value
    expected = set(key_map.values())
    unexpected = [k for k in given if k not in expected]

    if missing or unexpected or wrong_shape:
        lines = [
            "the state dict does not match the reference SegNet-MTAN "
            f"for tasks {list(task_order)} "
            f"at width {model.width} (reference: width 1.0, 13 semantic classes):"
        ]
        if missing:
            lines.append(_listing("missing keys", missing))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        if wrong_shape:
            lines.append(_listing("wrong shapes", wrong_shape))
        raise ValueError("\n".join(lines))

    model.load_state_dict(translated, strict=True)
    return model
