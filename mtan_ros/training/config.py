"""Training configuration: one dataclass, settable from YAML and from the command line.

Precedence, lowest first: the defaults below (the paper's protocol), the run's
own ``config.yaml`` when resuming, a ``--config file.yaml``, then flags given on
the command line. The resolved configuration is written as ``config.yaml`` in
the output folder, so every run records exactly what it did.
"""
from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mtan_ros.common.files import write_text
from mtan_ros.errors import ConfigError  # noqa: F401 (re-exported)

from mtan_ros.data import FORMATS as _DATA_FORMATS
from mtan_ros.model import ARCHITECTURES

from mtan_ros.training.class_balance import CLASS_WEIGHTS
from mtan_ros.training.losses import LOSSES
from mtan_ros.training.schedule import SCHEDULES
from mtan_ros.training.weighting import WEIGHTINGS as _WEIGHTING_CLASSES

__all__ = ["TrainConfig", "ConfigError", "build_parser", "parse_train_args", "load_yaml", "save_config",
           "config_from_dict", "CONFIG_NAME"]

CONFIG_NAME = "config.yaml"
# Choices come from the registries they select from (model.factory, losses, weighting, data).
ARCHS = ARCHITECTURES
TASKS = tuple(LOSSES)
WEIGHTINGS = tuple(_WEIGHTING_CLASSES)
FORMATS = tuple(f for f in _DATA_FORMATS if f != "synthetic")  # on-disk layouts; synthetic scenes have no folder
BEST_METRICS = ("auto", "miou", "pixel_accuracy", "abs_err", "rel_err", "loss")


def _opt(default, help: str, choices=None, flags=(), metavar=None):
    return field(default=default, metadata={"help": help, "choices": choices, "flags": flags, "metavar": metavar})


@dataclass
class TrainConfig:
    """Every setting of a training run; defaults follow the MTAN paper on Cityscapes."""

    data: str | None = _opt(None, "dataset folder (preprocessed .npy tree or raw Cityscapes)", metavar="DIR")
    format: str = _opt("auto", "dataset layout", FORMATS)
    out: str = _opt("runs/train", "output folder: checkpoints, config.yaml, metrics.csv, curves, report",
                    metavar="DIR")
    epochs: int = _opt(200, "number of epochs (paper: 200)", metavar="N")
    batch_size: int = _opt(8, "images per batch and process (paper: 8)", metavar="B")
    lr: float = _opt(1e-4, "Adam learning rate (paper: 1e-4)")
    schedule: str = _opt("step", "learning-rate schedule: step (the paper: times --lr-gamma every --lr-step "
                                 "epochs), cosine (linear warm-up, then cosine decay to 0 at the end of the run) "
                                 "or onecycle (cosine rise from lr/25, then decay to lr*1e-4), per batch",
                         SCHEDULES)
    warmup: float = _opt(0.05, "cosine / onecycle: fraction of the run's batches spent rising to --lr",
                         metavar="FRACTION")
    lr_step: int | None = _opt(None, "epochs between learning-rate decays (default: half of --epochs, "
                                     "i.e. one halving at the midpoint like the paper)", metavar="N")
    lr_gamma: float = _opt(0.5, "learning-rate factor at each decay")
    width: float = _opt(1.0, "channel width multiplier of the network (1.0 = paper)", metavar="W")
    arch: str = _opt("mtan", "architecture: MTAN, shared SegNet with task heads, or one SegNet per task",
                     ARCHS)
    task: str | None = _opt(None, "train on this one task only (default: every task the data has)", TASKS)
    weighting: str = _opt("equal", "task weighting: loss-level equal, DWA or uncertainty; gradient-level PCGrad "
                                   "(projects conflicting task gradients; one process)", WEIGHTINGS)
    class_weights: str = _opt("none", "semantic loss class weights: none (the paper), or median_frequency (median "
                                      "class frequency over the class's own, counted on up to 200 training images "
                                      "and printed at the start; SegNet's balancing)",
                              CLASS_WEIGHTS)
    temperature: float = _opt(2.0, "DWA temperature T (paper: 2)", metavar="T")
    uncert_init: float = _opt(-0.5, "initial log-variance of uncertainty weighting")
    resume: bool = _opt(False, "continue from OUT/last.pt with its optimiser, scheduler, weighting and RNG state")
    amp: bool = _opt(False, "mixed precision (bfloat16 on CPUs with bf16 instructions, fp32 on others; float16 "
                            "with loss scaling on CUDA)")
    augment: bool = _opt(False, "random scale-crop and horizontal flip, as the reference code")
    workers: int = _opt(2, "data-loading worker processes (0 = load in the training process)", metavar="N")
    seed: int = _opt(0, "seed of weights, data order and augmentation", metavar="S")
    device: str = _opt("auto", "auto (CUDA when available), cpu, cuda or cuda:N", metavar="DEVICE")
    max_minutes: float | None = _opt(None, "time budget: stop (after validating and saving) once this many "
                                           "minutes have passed", flags=("--time-budget",), metavar="MIN")
    val_every: int = _opt(1, "validate every N epochs (and always after the last)", metavar="N")
    limit_train: int | None = _opt(None, "use only the first N training images", metavar="N")
    limit_val: int | None = _opt(None, "use only the first N validation images", metavar="N")
    train_split: str = _opt("train", "split to train on", metavar="SPLIT")
    val_split: str = _opt("val", "split to validate on", metavar="SPLIT")
    best_metric: str = _opt("auto", "what makes best.pt best (auto: val mIoU, or depth abs err "
                                    "without a semantic task)", BEST_METRICS)
    report_last: int = _opt(10, "report the mean over this many last validated epochs (paper: 10)", metavar="N")
    depth_scale: float | None = _opt(None, "override the dataset's depth scale (metres = scale / value for "
                                           "inverse depth, value * scale for metric)", metavar="SCALE")
    tensorboard: bool = _opt(True, "write TensorBoard logs to OUT/tensorboard")
    progress: bool = _opt(True, "show progress bars")
    plots: bool = _opt(True, "draw OUT/curves.png every epoch")
    config: str | None = _opt(None, "YAML file with any of these settings (flags given here win)",
                              metavar="FILE")

    def to_dict(self) -> dict[str, Any]:
        """The settings worth recording (without the YAML path and the resume switch)."""
        data = asdict(self)
        data.pop("config")
        data.pop("resume")
        return data

    def validate(self) -> "TrainConfig":
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
        if not self.data:
            raise ConfigError("no dataset given: pass --data DIR (or set 'data:' in the --config YAML)")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "width": self.width,
                    "temperature": self.temperature, "val_every": self.val_every, "report_last": self.report_last,
                    "lr_gamma": self.lr_gamma}
        for name in ("lr_step", "max_minutes", "limit_train", "limit_val", "depth_scale"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be positive; got {value!r}")
        if not (math.isfinite(self.warmup) and 0 <= self.warmup < 1):
            raise ConfigError(f"warmup must be a fraction in [0, 1); got {self.warmup!r}")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 or more; got {self.workers!r}")
        return self

    @property
    def resolved_lr_step(self) -> int:
        """Epochs between decays; by default half the run (rounded up), so the rate is halved once,
        at the midpoint, as in the paper (200 epochs, StepLR(100, 0.5))."""
        return self.lr_step if self.lr_step is not None else max(1, math.ceil(self.epochs / 2))


def _field_type(f) -> tuple[type, bool]:
    """(base type, optional) of a dataclass field, whatever form its annotation has."""
    hints = typing.get_type_hints(TrainConfig)
    hint = hints[f.name]
    optional = False
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        optional = type(None) in args
        hint = next(a for a in args if a is not type(None))
    return hint, optional


def _coerce(name: str, value: Any, source: str) -> Any:
    """A YAML/CLI value converted to the field's type, or a ConfigError saying what was wrong."""
    f = _FIELDS[name]
    kind, optional = _field_type(f)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~") and kind is not str):
        if optional:
            return None
        raise ConfigError(f"{source}: {name} cannot be empty")
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be {kind.__name__}{' or null' if optional else ''}; "
                          f"got {value!r}") from None


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def config_from_dict(values: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check the keys of a settings mapping and convert its values; dashes or underscores both work."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of setting: value, got {type(values).__name__}")
    result = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name == "time_budget":
            name = "max_minutes"
        if name not in _FIELDS or name == "config":
            known = ", ".join(sorted(n for n in _FIELDS if n != "config"))
            raise ConfigError(f"{source}: unknown setting {key!r}; known settings: {known}")
        result[name] = _coerce(name, value, source)
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML file (a flat mapping; empty file = no settings)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(exc).split())}") from None
    return config_from_dict(data, source=str(path))


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved settings as YAML (atomically: a kill never leaves half a file)."""
    path = Path(path)
    return write_text(path, "# resolved mtan-train settings; rerun with: mtan-train --config " + path.name + "\n"
                      + yaml.safe_dump(config.to_dict(), sort_keys=False))


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags generated from TrainConfig: one flag per field, no defaults filled in."""
    parser = argparse.ArgumentParser(
        prog="mtan-train",
        description="Train MTAN (or the split / single-task baselines) for semantic segmentation and depth. "
                    "Every flag can also be set in a YAML file given with --config; flags on the command "
                    "line win over the file.",
        argument_default=argparse.SUPPRESS,
    )
    for f in fields(TrainConfig):
        kind, optional = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *f.metadata.get("flags", ())]
        default = f.default
        help_text = f.metadata["help"] + ("" if default in (None, False) or kind is bool
                                          else f" (default: {default})")
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                help=help_text + (" (default: on)" if default else ""))
            continue
        parser.add_argument(*names, dest=f.name, type=_cli_type(f.name), choices=f.metadata.get("choices"),
                            metavar=f.metadata.get("metavar"), help=help_text)
    return parser


def _cli_type(name: str):
    def convert(text: str):
        try:
            return _coerce(name, text, "command line")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = _field_type(_FIELDS[name])[0].__name__
    return convert


def parse_train_args(argv: list[str] | None = None) -> TrainConfig:
    """Resolve defaults < OUT/config.yaml (with --resume) < --config YAML < command-line flags."""
    cli = vars(build_parser().parse_args(argv))
    file_values = load_yaml(cli["config"]) if cli.get("config") else {}
    merged: dict[str, Any] = {}
    if cli.get("resume", file_values.get("resume", False)):
        out = cli.get("out", file_values.get("out", TrainConfig.out))
        saved = Path(out) / CONFIG_NAME
        if saved.is_file():
            merged.update(load_yaml(saved))
    merged.update(file_values)
    merged.update(cli)
    return TrainConfig(**merged).validate()
