"""What a training run writes after each epoch: best.pt (when improved) and last.pt.

``last.pt`` holds the weights and the training state a resume needs (optimiser,
schedule settings, loss scaler, weighting, loss history, rows, best epoch, every
RNG); ``best.pt`` only the weights and metadata.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mtan_ros.model.checkpoint import CheckpointMeta, save_checkpoint
from mtan_ros.training.config import TrainConfig
from mtan_ros.training.distributed import DistContext
from mtan_ros.training.rng import rng_state
from mtan_ros.training.run import BEST, LAST, Parts, Progress, RunData, model_spec
from mtan_ros.training.weighting import weighting_state

__all__ = ["checkpoint_meta", "training_state", "save_checkpoints"]


def _finite_metrics(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def checkpoint_meta(cfg: TrainConfig, data: RunData, metrics: dict[str, Any], epoch: int,
                    best: dict[str, Any] | None):
    """The self-description every checkpoint of the run carries."""
    return CheckpointMeta(
        model=model_spec(cfg, data.tasks),
        class_names=list(data.classes.names),
        class_colors=[tuple(int(c) for c in col) for col in data.classes.colors],
        input_size=data.image_size,
        depth=data.depth_encoding,
        metrics=_finite_metrics(metrics),
        info={"epoch": epoch, "weighting": cfg.weighting, "data": str(cfg.data),
              "best_epoch": best["epoch"] if best else None, "config": cfg.to_dict()},
    )


def training_state(cfg: TrainConfig, parts: Parts, progress: Progress, epoch: int,
                   ctx: DistContext) -> dict[str, Any]:
    """Everything a resume needs after `epoch` epochs (plain data and tensors: loads with weights_only)."""
    return {
        "epoch": epoch,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.schedule.state(),
        "scaler": parts.scaler.state_dict() if parts.use_scaler else {},
        "weighting": weighting_state(parts.weighting),
        "loss_history": {t: list(v) for t, v in progress.loss_history.items()},
        "history": [dict(r) for r in progress.rows],
        "best": dict(progress.best) if progress.best else None,
        "rng": rng_state(),
        "world_size": ctx.world_size,
        "config": cfg.to_dict(),
    }


def save_checkpoints(out: Path, cfg: TrainConfig, data: RunData, parts: Parts, progress: Progress, epoch: int,
                     row: dict[str, Any], is_best: bool, ctx: DistContext) -> None:
    """Write best.pt (when `is_best`) and last.pt for the epoch that produced `row`."""
    metrics = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    meta = checkpoint_meta(cfg, data, metrics, epoch, progress.best)
    state_dict = parts.model.state_dict()
    state = training_state(cfg, parts, progress, epoch, ctx)
    # best.pt first: a kill between the two writes leaves last.pt at the previous epoch, which a
    # resume repeats (deterministically), instead of a last.pt whose best.pt never got written.
    if is_best:
        save_checkpoint(out / BEST, state_dict, meta)
    save_checkpoint(out / LAST, state_dict, meta, state)
