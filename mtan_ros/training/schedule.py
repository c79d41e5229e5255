"""Learning-rate schedules as closed forms of the run's position.

The rate of every batch is computed from (epoch, batch index) and the run's
settings alone, never from a scheduler's stored counters, so a resumed run
follows exactly the rates of an uninterrupted one, and a run continued with a
larger ``--epochs`` stretches its schedule to the new length.

* ``step`` (the paper): ``lr * gamma ** (epoch // step_epochs)``, constant within
  an epoch (by default halved once, at the midpoint).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SCHEDULES", "LearningRateSchedule"]

SCHEDULES = ("step",)


@dataclass(frozen=True)
class LearningRateSchedule:
    """The learning rate of each batch of a run of ``epochs`` epochs of ``steps_per_epoch`` batches."""

    kind: str
    base_lr: float
    epochs: int
    steps_per_epoch: int
    step_epochs: int = 1
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")

    def factor(self, epoch: int, batch: int = 0) -> float:
        """Multiplier of the base rate for batch ``batch`` of epoch ``epoch`` (both 0-based)."""
        return self.gamma ** (epoch // self.step_epochs)

    def lr(self, epoch: int, batch: int = 0) -> float:
        return self.base_lr * self.factor(epoch, batch)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, batch: int = 0) -> float:
        """Set every parameter group's rate for this batch; returns it."""
        lr = self.lr(epoch, batch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def describe(self) -> str:
        return f"decays by {self.gamma:g} every {self.step_epochs} epochs"
