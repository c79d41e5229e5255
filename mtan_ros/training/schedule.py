"""Learning-rate schedules as closed forms of the run's position.

The rate of every batch is computed from (epoch, batch index) and the run's
settings alone, never from a scheduler's stored counters, so a resumed run
follows exactly the rates of an uninterrupted one, and a run continued with a
larger ``--epochs`` stretches its schedule to the new length.

* ``step`` (the paper): ``lr * gamma ** (epoch // step_epochs)``, constant within
  an epoch (by default halved once, at the midpoint).
* ``cosine``: linear warm-up from 0 over the first ``warmup`` fraction of the
  run's batches, then ``lr * (1 + cos(pi * q)) / 2`` as q goes from 0 to 1 at the
  end of the run. Short runs (a demo's few minutes) gain most from it: a high
  rate early, a small one for the last batches.
* ``onecycle`` (Smith & Topin 2019, the shape of PyTorch's OneCycleLR): cosine
  rise from ``lr / 25`` to ``lr`` over the ``warmup`` fraction, then cosine
  decay to ``lr * 1e-4``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SCHEDULES", "LearningRateSchedule"]

SCHEDULES = ("step", "cosine", "onecycle")

_ONECYCLE_START = 1 / 25  # OneCycleLR's div_factor
_ONECYCLE_END = 1e-4


@dataclass(frozen=True)
class LearningRateSchedule:
    """The learning rate of each batch of a run of ``epochs`` epochs of ``steps_per_epoch`` batches."""

    kind: str
    base_lr: float
    epochs: int
    steps_per_epoch: int
    step_epochs: int = 1
    gamma: float = 0.5
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warm-up must be a fraction of the run in [0, 1), got {self.warmup!r}")

    @property
    def total_steps(self) -> int:
        return max(1, self.epochs * self.steps_per_epoch)

    def factor(self, epoch: int, batch: int = 0) -> float:
        """Multiplier of the base rate for batch ``batch`` of epoch ``epoch`` (both 0-based)."""
        if self.kind == "step":
            return self.gamma ** (epoch // self.step_epochs)
        step = epoch * self.steps_per_epoch + batch
        warmup_steps = round(self.warmup * self.total_steps)
        if step < warmup_steps:
            if self.kind == "cosine":
                return (step + 1) / warmup_steps
            rise = 0.5 * (1 - math.cos(math.pi * step / warmup_steps))
            return _ONECYCLE_START + (1 - _ONECYCLE_START) * rise
        q = min(1.0, (step - warmup_steps) / max(1, self.total_steps - warmup_steps))
        fall = 0.5 * (1 + math.cos(math.pi * q))
        return fall if self.kind == "cosine" else _ONECYCLE_END + (1 - _ONECYCLE_END) * fall

    def lr(self, epoch: int, batch: int = 0) -> float:
        return self.base_lr * self.factor(epoch, batch)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, batch: int = 0) -> float:
        """Set every parameter group's rate for this batch; returns it."""
        lr = self.lr(epoch, batch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def describe(self) -> str:
        if self.kind == "step":
            return f"decays by {self.gamma:g} every {self.step_epochs} epochs"
        return (f"{self.kind} over {self.epochs} epochs of {self.steps_per_epoch} batches "
                f"({self.warmup:.0%} warm-up)")

    def state(self) -> dict[str, Any]:
        """The settings, saved with a checkpoint so that a resume can say when they changed."""
        return {"kind": self.kind, "step_epochs": self.step_epochs, "gamma": self.gamma, "epochs": self.epochs,
                "warmup": self.warmup}

    def changed_from(self, saved: dict[str, Any]) -> bool:
        """Whether `saved` (a `state()`, or torch StepLR's state from older checkpoints) set other rates."""
        kind = saved.get("kind", "step")
        if kind != self.kind:
            return True
        if kind == "step":
            return (saved.get("step_epochs", saved.get("step_size")), saved.get("gamma")) != \
                (self.step_epochs, self.gamma)
        return (saved.get("epochs"), saved.get("warmup")) != (self.epochs, self.warmup)
