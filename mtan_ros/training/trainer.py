"""The training loop: the paper's protocol, resumable, single- or multi-process.

``train(TrainConfig(...))`` runs what ``mtan-train`` runs. The run is built by
`mtan_ros.training.run` (data, loaders, model, weighting, optimiser, schedule,
resume), then each epoch:

1. seed torch / numpy / random from (seed, epoch, rank) and fix the data order
   from (seed, epoch) — so an epoch draws the same batches and augmentations
   whether or not the run was interrupted before it;
2. ask the weighting for this epoch's task weights (DWA uses the epoch-averaged
   unweighted training losses of the epochs before);
3. train over all batches (`epoch.train_epoch`: Adam, the learning rate of each
   batch from the schedule, AMP when asked), then validate;
4. write ``last.pt`` (weights + everything needed to resume) and, when the
   validation score improved, ``best.pt`` (`checkpoints`); rewrite
   ``metrics.csv``, the TensorBoard scalars and ``curves.png`` (`run_log`).

At the end ``report.json`` holds the paper-style table: the mean of the last
10 validated epochs and the best epoch. Under ``torchrun`` the model is wrapped
in DistributedDataParallel, loss sums and metric accumulators are summed over
processes, and only rank 0 writes files or shows progress.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mtan_ros.errors import TrainingError  # noqa: F401 (re-exported)
from mtan_ros.training.checkpoints import save_checkpoints
from mtan_ros.training.class_balance import describe_weights
from mtan_ros.training.config import TrainConfig
from mtan_ros.training.distributed import DistContext, epoch_seed, setup_distributed
from mtan_ros.training.epoch import train_epoch, validate
from mtan_ros.training.evaluate import amp_unavailable
from mtan_ros.evaluation.report import best_score
from mtan_ros.training.rng import seed_everything
from mtan_ros.training.run import BEST, LAST, Loaders, Parts, Progress, RunData, build_parts, make_loaders, open_data, \
    prepare_output, semantic_class_weights
from mtan_ros.training.run_log import RunLog

__all__ = ["train", "TrainResult", "TrainingError"]


@dataclass
class TrainResult:
    out: Path
    last: Path
    best: Path | None
    report: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None


def train(config: TrainConfig, *, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train as configured; returns where the checkpoints are and the final report."""
    config.validate()
    ctx = setup_distributed(config.device)
    parts = None
    finished = False
    try:
        data = open_data(config)
        loaders = make_loaders(config, data, ctx)
        class_weights = semantic_class_weights(config, data)
        parts = build_parts(config, data.tasks, ctx, steps_per_epoch=len(loaders.train), class_weights=class_weights)
        run_log = RunLog(config, ctx, data, log)
        if class_weights is not None:
            run_log.message(f"semantic class weights ({config.class_weights.replace('_', ' ')}): "
                            f"{describe_weights(data.classes.names, class_weights.tolist())}")
        progress = prepare_output(config, data, parts, ctx, run_log.message)
        parts.wrap_distributed(ctx)
        result = _loop(config, ctx, data, loaders, parts, progress, run_log)
        finished = True
        return result
    finally:
        if parts is not None:
            parts.unwrap_distributed()
        ctx.close(synchronise=finished)  # after an error a peer may never reach the barrier


def _loop(cfg: TrainConfig, ctx: DistContext, data: RunData, loaders: Loaders, parts: Parts, progress: Progress,
          run_log: RunLog) -> TrainResult:
    from tqdm.auto import tqdm  # optional: pip install .[train]

    start_time = time.monotonic()
    deadline = start_time + cfg.max_minutes * 60 if cfg.max_minutes else None
    show = cfg.progress and ctx.is_main
    out = Path(cfg.out)
    run_log.start(progress.start_epoch, ctx.device)
    stopped_early = None
    amp = cfg.amp
    if amp and (reason := amp_unavailable(ctx.device)):
        run_log.message(f"--amp: {reason}; training in fp32")
        amp = False
    epochs_bar = tqdm(total=cfg.epochs, initial=progress.start_epoch, desc="training", unit="epoch",
                      disable=not show, dynamic_ncols=True)
    try:
        for epoch in range(progress.start_epoch, cfg.epochs):
            seed_everything(epoch_seed(cfg.seed, epoch, ctx.rank))
            loaders.start_epoch(cfg.seed, epoch, ctx.rank)
            weights = parts.weighting.weights(epoch, progress.loss_history)
            epoch_start = time.perf_counter()
            result = train_epoch(parts, loaders.train, data.tasks, epoch, weights, ctx, amp=amp,
                                 deadline=deadline, show=show, desc=f"epoch {epoch + 1}/{cfg.epochs}")
            for t in data.tasks:
                progress.loss_history[t].append(result.stats[f"train_loss_{t}"])
            due = result.stopped or epoch + 1 == cfg.epochs or (epoch + 1) % cfg.val_every == 0
            val = validate(parts, loaders.val, data.tasks, ctx, depth_encoding=data.depth_encoding, amp=amp,
                           show=show) if due else {}
            row = _row(epoch, parts, weights, result, val, time.perf_counter() - epoch_start)
            progress.rows.append(row)
            score = best_score(row, parts.best_metric)
            is_best = score is not None and (progress.best is None or score > progress.best["score"])
            if is_best:
                progress.best = {"epoch": epoch + 1, "score": score, "metric": parts.best_metric}
            if ctx.is_main:
                save_checkpoints(out, cfg, data, parts, progress, epoch + 1, row, is_best, ctx)
                run_log.epoch(progress.rows)
                epochs_bar.update(1)
            if result.stopped:
                stopped_early = f"time budget of {cfg.max_minutes:g} min reached during epoch {epoch + 1}"
                run_log.message(stopped_early)
                break
    finally:
        epochs_bar.close()
        run_log.close()
    report = run_log.finish(progress.rows, parts.best_metric, progress.start_epoch, stopped_early)
    best = out / BEST
    return TrainResult(out=out, last=out / LAST, best=best if best.exists() else None, report=report,
                       history=list(progress.rows), stopped_early=stopped_early)


def _row(epoch: int, parts: Parts, weights: dict[str, float], result: Any, val: dict[str, float],
         seconds: float) -> dict[str, Any]:
    """The epoch's line of metrics.csv."""
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": parts.schedule.lr(epoch, 0)}
    row.update({f"weight_{t}": float(w) for t, w in weights.items()})
    row.update(parts.weighting.log_values())
    row.update(result.stats)
    row.update(val)
    row["images_per_s"] = result.images / max(result.seconds, 1e-9)
    row["time_s"] = seconds
    if result.stopped:
        row["partial"] = True
    return row
