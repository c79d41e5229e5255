"""The training loop: the paper's protocol, resumable, single- or multi-process.

``train(TrainConfig(...))`` runs what ``mtan-train`` runs. One epoch:

1. seed torch / numpy / random from (seed, epoch, rank) and fix the data order
   from (seed, epoch) — so an epoch draws the same batches and augmentations
   whether or not the run was interrupted before it;
2. ask the weighting for this epoch's task weights (DWA uses the epoch-averaged
   unweighted training losses of the epochs before);
3. train over all batches (Adam; AMP when asked), then validate;
4. step the learning-rate schedule (halved at the midpoint by default);
5. write ``last.pt`` (weights + everything needed to resume) and, when the
   validation score improved, ``best.pt``; rewrite ``metrics.csv``, the
   TensorBoard scalars and ``curves.png``.

At the end ``report.json`` holds the paper-style table: the mean of the last
10 validated epochs and the best epoch. Under ``torchrun`` the model is wrapped
in DistributedDataParallel, loss sums and metric accumulators are summed over
processes, and only rank 0 writes files or shows progress.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import TrainingError  # noqa: F401 (re-exported)
from .config import CONFIG_NAME, TrainConfig, save_config
from .distributed import DistContext, ShardSampler, epoch_seed, setup_distributed
from .evaluate import autocast_context, evaluate, to_device
from .losses import task_losses
from .metrics import ConfusionMatrix, DepthErrors
from .report import best_score, build_report, depth_units, format_table, write_json
from .weighting import build_weighting, load_weighting_state, weighting_state

__all__ = ["train", "TrainResult", "TrainingError"]

LAST = "last.pt"
BEST = "best.pt"


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
    try:
        return _Run(config, ctx, log).run()
    finally:
        ctx.close()


# ----------------------------------------------------------------------------- state helpers

def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    """Data-loader workers: numpy and random follow the worker's torch seed (set per epoch)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and lists (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [version, list(internal), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _finite_metrics(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# ----------------------------------------------------------------------------- the run

class _Run:
    def __init__(self, cfg: TrainConfig, ctx: DistContext, log: Callable[[str], None] | None):
        self.cfg = cfg
        self.ctx = ctx
        self.device = ctx.device
        self.out = Path(cfg.out)
        self.show = cfg.progress and ctx.is_main
        self._log = log
        self.start_time = time.monotonic()
        self.deadline = self.start_time + cfg.max_minutes * 60 if cfg.max_minutes else None

    def log(self, text: str) -> None:
        if not self.ctx.is_main:
            return
        if self._log is not None:
            self._log(text)
        else:
            from tqdm.auto import tqdm

            tqdm.write(text)

    # --- setup ------------------------------------------------------------------------------
    def _open_data(self) -> None:
        from mtan_ros.data import open_dataset

        cfg = self.cfg
        extra = {"depth_scale": cfg.depth_scale} if cfg.depth_scale is not None else {}
        # augment_seed: item i of epoch e gets the same crop and flip in any worker layout and after a resume.
        augment = {"augment": True, "augment_seed": cfg.seed} if cfg.augment else {}
        self.train_set = open_dataset(cfg.data, split=cfg.train_split, format=cfg.format, **augment, **extra)
        self.train_base = self.train_set
        self.val_set = open_dataset(cfg.data, split=cfg.val_split, format=cfg.format, augment=False, **extra)
        self.classes = self.train_set.classes
        if list(self.val_set.classes.names) != list(self.classes.names):
            raise TrainingError(f"the {cfg.train_split} split has classes {self.classes.names} but the "
                                f"{cfg.val_split} split has {self.val_set.classes.names}; use one label set")
        self.depth_encoding = self.train_set.depth_encoding
        self.image_size = tuple(int(v) for v in self.train_set.image_size)
        from mtan_ros.model import INPUT_MULTIPLE

        if any(v % INPUT_MULTIPLE for v in self.image_size):
            raise TrainingError(f"images are {self.image_size[0]}x{self.image_size[1]}; the SegNet encoder needs "
                                f"height and width divisible by {INPUT_MULTIPLE} (e.g. 128x256)")
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise TrainingError(f"'{cfg.data}' has {len(self.train_set)} {cfg.train_split} and "
                                f"{len(self.val_set)} {cfg.val_split} images; both splits need at least one")
        available = {"semantic": self.classes.num_classes, "depth": 1}
        if "normal" in self.train_set[0]:
            available["normal"] = 3
        if cfg.task is not None:
            if cfg.task not in available:
                raise TrainingError(f"--task {cfg.task}: the dataset has no '{cfg.task}' ground truth "
                                    f"(it has {', '.join(available)})")
            self.tasks = {cfg.task: available[cfg.task]}
        else:
            self.tasks = available
        if cfg.limit_train:
            self.train_set = torch.utils.data.Subset(self.train_set, range(min(cfg.limit_train, len(self.train_set))))
        if cfg.limit_val:
            self.val_set = torch.utils.data.Subset(self.val_set, range(min(cfg.limit_val, len(self.val_set))))

    def _loaders(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        pin = self.device.type == "cuda"
        self.train_sampler = torch.utils.data.DistributedSampler(
            self.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
        self.loader_generator = torch.Generator()
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=cfg.batch_size, sampler=self.train_sampler, num_workers=cfg.workers,
            pin_memory=pin, worker_init_fn=_seed_worker, generator=self.loader_generator, drop_last=False)
        self.val_loader = torch.utils.data.DataLoader(
            self.val_set, batch_size=cfg.batch_size,
            sampler=ShardSampler(len(self.val_set), ctx.rank, ctx.world_size),
            num_workers=cfg.workers, pin_memory=pin, worker_init_fn=_seed_worker)

    def _build(self) -> None:
        from mtan_ros.model import build_model

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.arch, self.tasks, cfg.width).to(self.device)
        self.weighting = build_weighting(cfg.weighting, list(self.tasks), cfg.temperature, cfg.uncert_init)
        if isinstance(self.weighting, torch.nn.Module):
            self.weighting.to(self.device)
        params = list(self.model.parameters()) + list(self.weighting.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.resolved_lr_step,
                                                         gamma=cfg.lr_gamma)
        self.use_scaler = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)
        self.loss_history: dict[str, list[float]] = {t: [] for t in self.tasks}
        self.rows: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.start_epoch = 0
        self.best_metric = cfg.best_metric
        if self.best_metric == "auto":
            self.best_metric = "miou" if "semantic" in self.tasks else ("abs_err" if "depth" in self.tasks
                                                                        else "loss")
        if self.best_metric in ("miou", "pixel_accuracy") and "semantic" not in self.tasks or \
                self.best_metric in ("abs_err", "rel_err") and "depth" not in self.tasks:
            raise TrainingError(f"--best-metric {self.best_metric} needs a task this run does not train "
                                f"({', '.join(self.tasks)})")

    def _spec(self):
        from mtan_ros.inference.checkpoint import ModelSpec

        return ModelSpec(arch=self.cfg.arch, tasks=dict(self.tasks), width=float(self.cfg.width))

    def _prepare_output(self) -> None:
        """Refuse to overwrite a run by accident; load last.pt when resuming."""
        from mtan_ros.inference.checkpoint import load_checkpoint

        last = self.out / LAST
        if not self.cfg.resume:
            if last.exists():
                raise TrainingError(f"'{self.out}' already holds a training run ({LAST}); continue it with "
                                    "--resume, or choose another --out")
            return
        if not last.is_file():
            raise TrainingError(f"--resume: there is no '{last}' to continue from; run without --resume to "
                                f"start a new run in '{self.out}', or point --out at the run to continue")
        ckpt = load_checkpoint(last)  # CheckpointError says what is wrong with the file
        state = ckpt.training_state
        if not state or "optimizer" not in state:
            raise TrainingError(f"'{last}' holds weights but no training state, so it cannot be resumed")
        spec, want = ckpt.meta.model, self._spec()
        if (spec.arch, dict(spec.tasks), float(spec.width)) != (want.arch, dict(want.tasks), float(want.width)):
            raise TrainingError(
                f"'{last}' was trained as arch={spec.arch}, tasks={dict(spec.tasks)}, width={spec.width}, but "
                f"this run asks for arch={want.arch}, tasks={dict(want.tasks)}, width={want.width}; resume with "
                f"the run's own settings (in {self.out / CONFIG_NAME}) or choose another --out")
        if list(ckpt.meta.class_names) != list(self.classes.names):
            raise TrainingError(f"'{last}' was trained on classes {ckpt.meta.class_names}, the data has "
                                f"{self.classes.names}; resume on the same dataset")
        if state.get("world_size", 1) != self.ctx.world_size:
            self.log(f"note: resuming a {state.get('world_size', 1)}-process run with {self.ctx.world_size} "
                     "process(es): the data order from here on differs from an uninterrupted run")
        try:  # first: another weighting also changes the optimiser's parameter list
            load_weighting_state(self.weighting, state["weighting"])
        except ValueError as exc:
            raise TrainingError(f"'{last}': {exc}; resume with --weighting {state['weighting'].get('name')}") \
                from None
        self.model.load_state_dict(ckpt.state_dict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._follow_schedule()
        if self.use_scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loss_history = {t: [float(v) for v in state["loss_history"].get(t, [])] for t in self.tasks}
        self.rows = [dict(r) for r in state.get("history", [])]
        self.best = dict(state["best"]) if state.get("best") else None
        self.start_epoch = int(state["epoch"])
        if state.get("rng"):
            _set_rng_state(state["rng"])
        self.log(f"resuming '{last}' after epoch {self.start_epoch}")

    def _follow_schedule(self) -> None:
        """After loading: the decay follows this run's --epochs / --lr-step / --lr-gamma.

        The learning rate is set from the closed form base_lr * gamma ** (epoch // step), so
        a run extended with a larger --epochs moves its midpoint halving accordingly.
        """
        sched = self.scheduler
        changed = (sched.step_size, sched.gamma) != (self.cfg.resolved_lr_step, self.cfg.lr_gamma)
        sched.step_size, sched.gamma = self.cfg.resolved_lr_step, self.cfg.lr_gamma
        lrs = [base * sched.gamma ** (sched.last_epoch // sched.step_size) for base in sched.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = list(lrs)
        if changed:
            self.log(f"learning-rate schedule now decays by {sched.gamma:g} every {sched.step_size} epochs; "
                     f"rate for epoch {sched.last_epoch + 1}: {lrs[0]:.3g}")

    # --- one epoch --------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, weights: dict[str, float]) -> tuple[dict[str, float], bool, int, float]:
        from tqdm.auto import tqdm

        cfg, ctx = self.cfg, self.ctx
        self.model.train()
        names = list(self.tasks)
        confusion = ConfusionMatrix(self.tasks["semantic"], self.device) if "semantic" in self.tasks else None
        depth = DepthErrors(self.device) if "depth" in self.tasks else None
        sums = torch.zeros(len(names) + 3, dtype=torch.float64, device=self.device)  # losses, total, batches, images
        shared_params = list(self.weighting.parameters()) if ctx.distributed else []
        stopped = False
        begin = time.perf_counter()
        seen = 0
        bar = tqdm(self.train_loader, total=len(self.train_loader), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="batch", leave=False, disable=not self.show, dynamic_ncols=True)
        for step, batch in enumerate(bar):
            batch = to_device(batch, self.device)
            images = batch["image"]
            with autocast_context(self.device, cfg.amp):
                outputs = self.model(images)
            losses = task_losses(outputs, batch)
            total = self.weighting.combine(losses, weights)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            for p in shared_params:  # parameters outside DDP (uncertainty log-variances)
                if p.grad is not None:
                    ctx.all_reduce_sum(p.grad)
                    p.grad /= ctx.world_size
            self.scaler.step(self.optimizer)
            self.scaler.update()
            values = torch.stack([losses[t].detach().double() for t in names] + [total.detach().double()])
            if not bool(torch.isfinite(values).all()):
                raise TrainingError(
                    f"epoch {epoch + 1}, batch {step + 1}: a loss became {values.tolist()}; lower --lr"
                    + (" or train without --amp" if cfg.amp else "") + ", and check the data for bad values")
            sums[:len(names) + 1] += values
            sums[len(names) + 1] += 1
            sums[len(names) + 2] += images.shape[0]
            seen += images.shape[0]
            if confusion is not None:
                confusion.update(outputs["semantic"].detach().argmax(1), batch["semantic"])
            if depth is not None:
                depth.update(outputs["depth"].detach().float(), batch["depth"].reshape(outputs["depth"].shape))
            if self.show:
                done = max(float(sums[len(names) + 1]), 1.0)
                elapsed = time.perf_counter() - begin
                bar.set_postfix({**{t[:5]: f"{float(sums[i]) / done:.4f}" for i, t in enumerate(names)},
                                 "img/s": f"{seen * ctx.world_size / max(elapsed, 1e-9):.1f}"}, refresh=False)
            if self.deadline is not None and ctx.any(time.monotonic() > self.deadline):
                stopped = True
                break
        bar.close()
        seconds = time.perf_counter() - begin
        ctx.all_reduce_sum(sums)
        for acc in (confusion, depth):
            if acc is not None:
                acc.all_reduce()
        batches = max(float(sums[len(names) + 1]), 1.0)
        stats = {f"train_loss_{t}": float(sums[i]) / batches for i, t in enumerate(names)}
        stats["train_loss"] = float(sums[len(names)]) / batches
        if confusion is not None:
            stats["train_miou"] = confusion.miou()
            stats["train_pixel_accuracy"] = confusion.pixel_accuracy()
        if depth is not None:
            stats["train_abs_err"] = depth.abs_err()
            stats["train_rel_err"] = depth.rel_err()
        return stats, stopped, int(sums[len(names) + 2]), seconds

    def _validate(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        model = self._bare_model()
        self.ctx.broadcast_buffers(model)
        with tqdm(total=len(self.val_loader), desc="validation", unit="batch", leave=False,
                  disable=not self.show, dynamic_ncols=True) as bar:
            result = evaluate(model, self.val_loader, self.tasks, self.device, depth_encoding=self.depth_encoding,
                              amp=self.cfg.amp, dist=self.ctx, progress=bar)
        return {f"val_{k}": v for k, v in result.metrics.items()}

    def _bare_model(self) -> torch.nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    # --- files ------------------------------------------------------------------------------
    def _meta(self, metrics: dict[str, float], epoch: int):
        from mtan_ros.inference.checkpoint import CheckpointMeta

        return CheckpointMeta(
            model=self._spec(),
            class_names=list(self.classes.names),
            class_colors=[tuple(int(c) for c in col) for col in self.classes.colors],
            input_size=self.image_size,
            depth=self.depth_encoding,
            metrics=_finite_metrics(metrics),
            info={"epoch": epoch, "weighting": self.cfg.weighting, "data": str(self.cfg.data),
                  "best_epoch": self.best["epoch"] if self.best else None, "config": self.cfg.to_dict()},
        )

    def _save(self, epoch: int, row: dict[str, Any], is_best: bool) -> None:
        from mtan_ros.inference.checkpoint import save_checkpoint

        metrics = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
        meta = self._meta(metrics, epoch)
        state_dict = self._bare_model().state_dict()
        training_state = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_scaler else {},
            "weighting": weighting_state(self.weighting),
            "loss_history": {t: list(v) for t, v in self.loss_history.items()},
            "history": [dict(r) for r in self.rows],
            "best": dict(self.best) if self.best else None,
            "rng": _rng_state(),
            "world_size": self.ctx.world_size,
            "config": self.cfg.to_dict(),
        }
        # best.pt first: a kill between the two writes leaves last.pt at the previous epoch, which a
        # resume repeats (deterministically), instead of a last.pt whose best.pt never got written.
        if is_best:
            save_checkpoint(self.out / BEST, state_dict, meta)
        save_checkpoint(self.out / LAST, state_dict, meta, training_state)

    def _write_logs(self, row: dict[str, Any]) -> None:
        from .logs import write_csv
        from .plots import plot_curves

        write_csv(self.rows, self.out / "metrics.csv")
        if self.tb is not None:
            self.tb.log(row, int(row["epoch"]))
        if self.cfg.plots:
            plot_curves(self.rows, self.out / "curves.png",
                        title=f"{self.cfg.arch} {self.cfg.weighting} width {self.cfg.width}")

    # --- main -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, ctx = self.cfg, self.ctx
        self._open_data()
        self._build()
        self._prepare_output()
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self._loaders()
        self.tb = None
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / CONFIG_NAME)
            if cfg.tensorboard:
                from .logs import TensorBoardLog

                self.tb = TensorBoardLog(self.out / "tensorboard", purge_step=self.start_epoch + 1)
            tasks = ", ".join(f"{t}[{n}]" for t, n in self.tasks.items())
            self.log(f"training {cfg.arch} (width {cfg.width}) on {tasks}"
                     f" with {cfg.weighting} weighting: {len(self.train_set)} train / {len(self.val_set)} val images "
                     f"at {self.image_size[0]}x{self.image_size[1]}, batch {cfg.batch_size}"
                     f"{f' x {ctx.world_size} processes' if ctx.distributed else ''}, device {self.device}"
                     f"{', AMP' if cfg.amp else ''}; writing to {self.out}")
        stopped_early = None
        epochs_bar = tqdm(total=cfg.epochs, initial=self.start_epoch, desc="training", unit="epoch",
                          disable=not self.show, dynamic_ncols=True)
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                _seed_everything(epoch_seed(cfg.seed, epoch, ctx.rank))
                self.train_sampler.set_epoch(epoch)
                if hasattr(self.train_base, "set_epoch"):
                    self.train_base.set_epoch(epoch)
                self.loader_generator.manual_seed(epoch_seed(cfg.seed, epoch, ctx.rank))
                weights = self.weighting.weights(epoch, self.loss_history)
                lr = self.optimizer.param_groups[0]["lr"]
                epoch_start = time.perf_counter()
                stats, stopped, images, seconds = self._train_epoch(epoch, weights)
                for t in self.tasks:
                    self.loss_history[t].append(stats[f"train_loss_{t}"])
                last_epoch = epoch + 1 == cfg.epochs
                val = self._validate() if stopped or last_epoch or (epoch + 1) % cfg.val_every == 0 else {}
                self.scheduler.step()
                row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
                row.update({f"weight_{t}": float(w) for t, w in weights.items()})
                if hasattr(self.weighting, "log_variances"):
                    row.update({f"logvar_{t}": v for t, v in self.weighting.log_variances().items()})
                row.update(stats)
                row.update(val)
                row["images_per_s"] = images / max(seconds, 1e-9)
                row["time_s"] = time.perf_counter() - epoch_start
                if stopped:
                    row["partial"] = True
                self.rows.append(row)
                score = best_score(row, self.best_metric)
                is_best = score is not None and (self.best is None or score > self.best["score"])
                if is_best:
                    self.best = {"epoch": epoch + 1, "score": score, "metric": self.best_metric}
                if ctx.is_main:
                    self._save(epoch + 1, row, is_best)
                    self._write_logs(row)
                    self.log(self._summary(row))
                    epochs_bar.update(1)
                if stopped:
                    stopped_early = f"time budget of {cfg.max_minutes:g} min reached during epoch {epoch + 1}"
                    self.log(stopped_early)
                    break
        finally:
            epochs_bar.close()
            if self.tb is not None:
                self.tb.close()
        return self._finish(stopped_early)

    def _summary(self, row: dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']:>3d}/{self.cfg.epochs}"]
        parts.append("train " + " ".join(f"{t} {row[f'train_loss_{t}']:.4f}" for t in self.tasks))
        if "val_miou" in row:
            parts.append(f"val mIoU {row['val_miou'] * 100:.2f} acc {row['val_pixel_accuracy'] * 100:.2f}")
        if "val_abs_err" in row:
            parts.append(f"abs {row['val_abs_err']:.4f} rel {row['val_rel_err'] * 100:.2f}%")
            if "val_abs_err_m" in row:
                metres = row["val_abs_err_m"]
                parts.append(f"abs {metres:.2f} m" if math.isfinite(metres) else "abs - m (no positive depth)")
        if self.cfg.weighting != "equal":
            parts.append("w " + "/".join(f"{row[f'weight_{t}']:.3f}" for t in self.tasks))
        parts.append(f"{row['images_per_s']:.1f} img/s, {row['time_s']:.0f} s")
        return " | ".join(parts)

    def _finish(self, stopped_early: str | None) -> TrainResult:
        cfg = self.cfg
        info = {"arch": cfg.arch, "weighting": cfg.weighting, "width": cfg.width, "tasks": dict(self.tasks),
                "image_size": list(self.image_size), "world_size": self.ctx.world_size,
                "stopped_early": stopped_early, "checkpoint": str(self.out / BEST),
                "depth_encoding": self.depth_encoding.to_dict()}
        report = build_report(self.rows, best_metric=self.best_metric, last_n=cfg.report_last,
                              depth_encoding=self.depth_encoding, info=info)
        if self.ctx.is_main and self.start_epoch >= cfg.epochs:
            self.log(f"nothing to train: '{self.out}' already holds {self.start_epoch} epochs and --epochs is "
                     f"{cfg.epochs}; pass a larger --epochs to continue")
        if self.ctx.is_main and self.rows:
            write_json(report, self.out / "report.json")
            n = len(report["last_n"]["epochs"])
            table = {f"mean of last {n} epoch{'s' if n != 1 else ''}": report["last_n"]}
            if report["best"]:
                table[f"best epoch ({report['best']['epoch']})"] = report["best"]
            self.log(format_table(table, depth_units(self.depth_encoding)))
            self.log(f"checkpoints: {self.out / BEST} (best), {self.out / LAST} (last); "
                     f"report: {self.out / 'report.json'}; curves: {self.out / 'curves.png'}")
        best = self.out / BEST
        return TrainResult(out=self.out, last=self.out / LAST, best=best if best.exists() else None,
                           report=report, history=list(self.rows), stopped_early=stopped_early)
