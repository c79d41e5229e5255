"""Building a training run: data, loaders, model and optimiser, and the state to resume from.

Each piece is made by one function from explicit inputs and returned as a small
dataclass, so what a run consists of is visible in one place:

* `open_data`: both splits, their classes, tasks, image size and depth encoding;
* `make_loaders`: the data loaders, whose order depends only on (seed, epoch, rank);
* `build_parts`: model, task weighting, optimiser, learning-rate schedule, loss scaler;
* `prepare_output`: refuses to overwrite a run by accident, or loads ``last.pt`` into
  the parts and returns the progress (epoch, loss history, rows, best) to continue from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mtan_ros.data import open_dataset
from mtan_ros.data.loader import DataLoader
from mtan_ros.errors import TrainingError
from mtan_ros.model import INPUT_MULTIPLE, build_model
from mtan_ros.model.checkpoint import ModelSpec, check_input_size, load_checkpoint

from mtan_ros.training.class_balance import class_frequencies, median_frequency_weights
from mtan_ros.training.config import CONFIG_NAME, TrainConfig
from mtan_ros.training.distributed import DistContext, ShardSampler, epoch_seed
from mtan_ros.training.rng import seed_worker, set_rng_state
from mtan_ros.training.schedule import LearningRateSchedule
from mtan_ros.training.weighting import Weighting, build_weighting, load_weighting_state, shared_parameters

__all__ = ["RunData", "Loaders", "Parts", "Progress", "LAST", "BEST", "open_data", "make_loaders", "build_parts",
           "resolve_best_metric", "model_spec", "prepare_output", "build_schedule", "semantic_class_weights"]

LAST = "last.pt"
BEST = "best.pt"


@dataclass
class RunData:
    """Both splits (limited as configured) and what they say about the run."""

    train_set: Any
    val_set: Any
    epoch_source: Any  # the training split itself (a StreetDataset): set_epoch selects the epoch's augmentations
    classes: Any
    tasks: dict[str, int]
    image_size: tuple[int, int]
    depth_encoding: Any


def open_data(cfg: TrainConfig) -> RunData:
    """Open the configured splits and check that they fit together and the network."""
    extra = {"depth_scale": cfg.depth_scale} if cfg.depth_scale is not None else {}
    # augment_seed: item i of epoch e gets the same crop and flip in any worker layout and after a resume.
    augment = {"augment": True, "augment_seed": cfg.seed} if cfg.augment else {}
    train_set = open_dataset(cfg.data, split=cfg.train_split, format=cfg.format, **augment, **extra)
    val_set = open_dataset(cfg.data, split=cfg.val_split, format=cfg.format, augment=False, **extra)
    classes = train_set.classes
    if list(val_set.classes.names) != list(classes.names):
        raise TrainingError(f"the {cfg.train_split} split has classes {classes.names} but the "
                            f"{cfg.val_split} split has {val_set.classes.names}; use one label set")
    image_size = tuple(int(v) for v in train_set.image_size)
    if any(v % INPUT_MULTIPLE for v in image_size):
        raise TrainingError(f"images are {image_size[0]}x{image_size[1]}; the SegNet encoder needs "
                            f"height and width divisible by {INPUT_MULTIPLE} (e.g. 128x256)")
    try:  # checked now, not when the first checkpoint is saved after an epoch
        check_input_size(image_size)
    except ValueError as exc:
        raise TrainingError(f"'{cfg.data}': {exc}") from None
    if len(train_set) == 0 or len(val_set) == 0:
        raise TrainingError(f"'{cfg.data}' has {len(train_set)} {cfg.train_split} and "
                            f"{len(val_set)} {cfg.val_split} images; both splits need at least one")
    available = {"semantic": classes.num_classes, "depth": 1}
    if "normal" in train_set[0]:
        available["normal"] = 3
    if cfg.task is not None:
        if cfg.task not in available:
            raise TrainingError(f"--task {cfg.task}: the dataset has no '{cfg.task}' ground truth "
                                f"(it has {', '.join(available)})")
        tasks = {cfg.task: available[cfg.task]}
    else:
        tasks = available
    limited_train, limited_val = train_set, val_set
    if cfg.limit_train:
        limited_train = torch.utils.data.Subset(train_set, range(min(cfg.limit_train, len(train_set))))
    if cfg.limit_val:
        limited_val = torch.utils.data.Subset(val_set, range(min(cfg.limit_val, len(val_set))))
    return RunData(train_set=limited_train, val_set=limited_val, epoch_source=train_set, classes=classes,
                   tasks=tasks, image_size=image_size, depth_encoding=train_set.depth_encoding)


@dataclass
class Loaders:
    """The run's data loaders; `start_epoch` fixes an epoch's order and worker seeds."""

    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    sampler: torch.utils.data.DistributedSampler
    generator: torch.Generator
    epoch_source: Any

    def start_epoch(self, seed: int, epoch: int, rank: int) -> None:
        self.sampler.set_epoch(epoch)
        self.epoch_source.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(seed, epoch, rank))


def make_loaders(cfg: TrainConfig, data: RunData, ctx: DistContext) -> Loaders:
    """Training loader (each process its shard, reshuffled per epoch) and validation loader (fixed shards)."""
    pin = ctx.device.type == "cuda"
    sampler = torch.utils.data.DistributedSampler(data.train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                                  shuffle=True, seed=cfg.seed)
    generator = torch.Generator()
    # mtan_ros's DataLoader: a bad file read by a worker process ends the run with its one-line DataError.
    train = DataLoader(
        data.train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, pin_memory=pin,
        worker_init_fn=seed_worker, generator=generator, drop_last=False)
    val = DataLoader(
        data.val_set, batch_size=cfg.batch_size, sampler=ShardSampler(len(data.val_set), ctx.rank, ctx.world_size),
        num_workers=cfg.workers, pin_memory=pin, worker_init_fn=seed_worker)
    return Loaders(train=train, val=val, sampler=sampler, generator=generator, epoch_source=data.epoch_source)


@dataclass
class Parts:
    """What is trained and how: model, weighting, optimiser, schedule and (CUDA AMP) loss scaler."""

    model: torch.nn.Module  # the bare model: what checkpoints hold and validation runs
    network: torch.nn.Module  # what training calls: the model, or its DistributedDataParallel wrapper
    weighting: Weighting
    shared_parameters: list[torch.nn.Parameter]  # what every task's gradient reaches (gradient-level weightings)
    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule
    scaler: torch.amp.GradScaler
    use_scaler: bool
    best_metric: str
    class_weights: torch.Tensor | None = None  # of the semantic loss, on the device; None: unweighted

    def wrap_distributed(self, ctx: DistContext) -> None:
        """Wrap the model in DistributedDataParallel when the run has several processes."""
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.network = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def unwrap_distributed(self) -> None:
        """Drop the DistributedDataParallel wrapper, whose reducer holds the process group open."""
        self.network = self.model


def resolve_best_metric(cfg: TrainConfig, tasks: dict[str, int]) -> str:
    """What makes best.pt best: the configured metric, or by default mIoU / depth error / loss."""
    metric = cfg.best_metric
    if metric == "auto":
        metric = "miou" if "semantic" in tasks else ("abs_err" if "depth" in tasks else "loss")
    if metric in ("miou", "pixel_accuracy") and "semantic" not in tasks or \
            metric in ("abs_err", "rel_err") and "depth" not in tasks:
        raise TrainingError(f"--best-metric {metric} needs a task this run does not train ({', '.join(tasks)})")
    return metric


def build_schedule(cfg: TrainConfig, steps_per_epoch: int) -> LearningRateSchedule:
    """The configured learning-rate schedule for epochs of ``steps_per_epoch`` batches."""
    return LearningRateSchedule(kind=cfg.schedule, base_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
                                step_epochs=cfg.resolved_lr_step, gamma=cfg.lr_gamma, warmup=cfg.warmup)


def build_parts(cfg: TrainConfig, tasks: dict[str, int], ctx: DistContext, steps_per_epoch: int,
                class_weights: torch.Tensor | None = None) -> Parts:
    """A freshly initialised model (seeded from cfg.seed) and everything that trains it."""
    device = ctx.device
    try:  # what checkpoints will record must be valid before anything is trained
        model_spec(cfg, tasks)
    except ValueError as exc:
        raise TrainingError(f"cannot train this model: {exc}") from None
    torch.manual_seed(cfg.seed)
    # channels_last: ~30% more images/s on CPU convolutions (oneDNN), and what CUDA tensor cores prefer.
    model = build_model(cfg.arch, tasks, cfg.width).to(device, memory_format=torch.channels_last)
    weighting = build_weighting(cfg.weighting, list(tasks), cfg.temperature, cfg.uncert_init, cfg.seed).to(device)
    if ctx.distributed and not weighting.supports_distributed:
        raise TrainingError(f"--weighting {cfg.weighting} needs each task's gradient of the whole batch and runs in "
                            "one process; start it without torchrun, or choose another --weighting")
    optimizer = torch.optim.Adam(list(model.parameters()) + list(weighting.parameters()), lr=cfg.lr)
    schedule = build_schedule(cfg, steps_per_epoch)
    use_scaler = cfg.amp and device.type == "cuda"
    return Parts(model=model, network=model, weighting=weighting, shared_parameters=shared_parameters(model, tasks),
                 optimizer=optimizer, schedule=schedule, scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
                 use_scaler=use_scaler, best_metric=resolve_best_metric(cfg, tasks),
                 class_weights=None if class_weights is None else class_weights.to(device))


def semantic_class_weights(cfg: TrainConfig, data: RunData) -> torch.Tensor | None:
    """The semantic loss's class weights as configured (None for unweighted), counted on the training split."""
    if cfg.class_weights == "none" or "semantic" not in data.tasks:
        return None
    try:
        frequencies = class_frequencies(data.train_set, data.tasks["semantic"])
    except ValueError as exc:
        raise TrainingError(f"--class-weights {cfg.class_weights}: {exc}") from None
    return torch.as_tensor(median_frequency_weights(frequencies), dtype=torch.float32)


def model_spec(cfg: TrainConfig, tasks: dict[str, int]):
    """The architecture record that checkpoints carry."""
    return ModelSpec(arch=cfg.arch, tasks=dict(tasks), width=float(cfg.width))


@dataclass
class Progress:
    """Where the loop stands: the next epoch, the loss history DWA reads, the rows so far, the best epoch."""

    start_epoch: int = 0
    loss_history: dict[str, list[float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    @classmethod
    def fresh(cls, tasks: dict[str, int]) -> "Progress":
        return cls(loss_history={t: [] for t in tasks})


def prepare_output(cfg: TrainConfig, data: RunData, parts: Parts, ctx: DistContext,
                   log: Callable[[str], None]) -> Progress:
    """Refuse to overwrite a run by accident; with --resume load last.pt into `parts` and return its progress."""
    out = Path(cfg.out)
    last = out / LAST
    if not cfg.resume:
        if last.exists():
            raise TrainingError(f"'{out}' already holds a training run ({LAST}); continue it with "
                                "--resume, or choose another --out")
        return Progress.fresh(data.tasks)
    if not last.is_file():
        raise TrainingError(f"--resume: there is no '{last}' to continue from; run without --resume to "
                            f"start a new run in '{out}', or point --out at the run to continue")
    ckpt = load_checkpoint(last)  # CheckpointError says what is wrong with the file
    state = ckpt.training_state
    if not state or "optimizer" not in state:
        raise TrainingError(f"'{last}' holds weights but no training state, so it cannot be resumed")
    spec, want = ckpt.meta.model, model_spec(cfg, data.tasks)
    if (spec.arch, dict(spec.tasks), float(spec.width)) != (want.arch, dict(want.tasks), float(want.width)):
        raise TrainingError(
            f"'{last}' was trained as arch={spec.arch}, tasks={dict(spec.tasks)}, width={spec.width}, but "
            f"this run asks for arch={want.arch}, tasks={dict(want.tasks)}, width={want.width}; resume with "
            f"the run's own settings (in {out / CONFIG_NAME}) or choose another --out")
    if list(ckpt.meta.class_names) != list(data.classes.names):
        raise TrainingError(f"'{last}' was trained on classes {ckpt.meta.class_names}, the data has "
                            f"{data.classes.names}; resume on the same dataset")
    if state.get("world_size", 1) != ctx.world_size:
        log(f"note: resuming a {state.get('world_size', 1)}-process run with {ctx.world_size} "
            "process(es): the data order from here on differs from an uninterrupted run")
    try:  # first: another weighting also changes the optimiser's parameter list
        load_weighting_state(parts.weighting, state["weighting"])
    except ValueError as exc:
        raise TrainingError(f"'{last}': {exc}; resume with --weighting {state['weighting'].get('name')}") from None
    parts.model.load_state_dict(ckpt.state_dict)
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.use_scaler and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    progress = Progress(
        start_epoch=int(state["epoch"]),
        loss_history={t: [float(v) for v in state["loss_history"].get(t, [])] for t in data.tasks},
        rows=[dict(r) for r in state.get("history", [])],
        best=dict(state["best"]) if state.get("best") else None)
    if parts.schedule.changed_from(state.get("scheduler") or {}):
        log(f"learning-rate schedule now {parts.schedule.describe()}; rate for epoch {progress.start_epoch + 1}: "
            f"{parts.schedule.lr(progress.start_epoch):.3g}")
    if state.get("rng"):
        set_rng_state(state["rng"])
    log(f"resuming '{last}' after epoch {progress.start_epoch}")
    return progress
