"""Task weighting: how per-task losses become the one loss that is minimised.

Three methods from the MTAN paper, each a small object with explicit inputs:

* ``EqualWeighting``: total = sum_k L_k.
* ``DynamicWeightAverage`` (DWA, Liu et al. 2019, eq. 7): per epoch t,
  lambda_k(t) = K exp(w_k(t-1) / T) / sum_i exp(w_i(t-1) / T) with
  w_k(t-1) = L_k(t-1) / L_k(t-2), where L_k is task k's *unweighted* training
  loss averaged over epoch t's batches; lambda_k = 1 for the first two epochs
  (t = 0, 1) when no ratio exists yet. T = 2 in the paper.
* ``UncertaintyWeighting`` (Kendall et al. 2018, as the MTAN code applies it):
  total = sum_k exp(-s_k) / 2 * L_k + s_k / 2, where s_k = log sigma_k^2 is
  learnt with the network (initialised to -0.5 like the reference code).

``weights(epoch, loss_history)`` takes the epoch index (0-based) and the
history of epoch-averaged unweighted training losses, ``{task: [L(0), L(1),
...]}`` holding at least the epochs before ``epoch``; the history is owned by
the trainer (and saved in checkpoints) so that a resumed run weights exactly
as an uninterrupted one. ``combine(losses, weights)`` returns the total loss.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["WEIGHTINGS", "EqualWeighting", "DynamicWeightAverage", "UncertaintyWeighting", "build_weighting",
           "weighting_state", "load_weighting_state"]

WEIGHTINGS = ("equal", "dwa", "uncert")

LossHistory = Mapping[str, Sequence[float]]


def _weighted_sum(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    missing = set(losses) - set(weights)
    if missing:
        raise KeyError(f"no weight for tasks {sorted(missing)}")
    return sum(float(weights[task]) * loss for task, loss in losses.items())


class EqualWeighting:
    """Every task's loss with weight 1."""

    name = "equal"

    def __init__(self, tasks: Sequence[str]):
        self.tasks = tuple(tasks)

    def weights(self, epoch: int, loss_history: LossHistory | None = None) -> dict[str, float]:
        return dict.fromkeys(self.tasks, 1.0)

    def combine(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        return _weighted_sum(losses, weights if weights is not None else self.weights(0))

    def parameters(self):
        return iter(())


class DynamicWeightAverage(EqualWeighting):
    """DWA: weights from the rate at which each task's training loss fell (module docstring)."""

    name = "dwa"

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0):
        super().__init__(tasks)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"DWA temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def weights(self, epoch: int, loss_history: LossHistory | None = None) -> dict[str, float]:
        """lambda_k for ``epoch`` (0-based) from the losses of the two epochs before it."""
        if epoch < 2:
            return dict.fromkeys(self.tasks, 1.0)
        if loss_history is None:
            raise ValueError("DWA needs the loss history of the previous two epochs")
        ratios = []
        for task in self.tasks:
            history = loss_history.get(task, ())
            if len(history) < epoch:
                raise ValueError(f"DWA weights for epoch {epoch} need task {task!r}'s training loss of "
                                 f"epochs {epoch - 2} and {epoch - 1}; the history holds {len(history)} epochs")
            previous, before = float(history[epoch - 1]), float(history[epoch - 2])
            ratio = previous / before if before != 0 else math.inf
            if not math.isfinite(ratio):
                raise ValueError(f"DWA cannot weight epoch {epoch}: task {task!r} had training losses "
                                 f"{before!r} then {previous!r}; their ratio is not a finite number")
            ratios.append(ratio)
        scaled = torch.tensor(ratios, dtype=torch.float64) / self.temperature
        lambdas = len(self.tasks) * torch.softmax(scaled, dim=0)
        return {task: float(v) for task, v in zip(self.tasks, lambdas)}


class UncertaintyWeighting(nn.Module):
    """Homoscedastic-uncertainty weighting with learnt log-variances ``log_vars`` (one per task).

    Add ``parameters()`` to the optimiser; ``combine`` gives
    sum_k exp(-s_k) / 2 * L_k + s_k / 2, and ``weights`` reports the effective
    factors exp(-s_k) / 2 for logging.
    """

    name = "uncert"

    def __init__(self, tasks: Sequence[str], init: float = -0.5):
        super().__init__()
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init), dtype=torch.float32))

    def weights(self, epoch: int = 0, loss_history: LossHistory | None = None) -> dict[str, float]:
        factors = torch.exp(-self.log_vars.detach().double().cpu()) / 2
        return {task: float(f) for task, f in zip(self.tasks, factors)}

    def log_variances(self) -> dict[str, float]:
        return {task: float(s) for task, s in zip(self.tasks, self.log_vars.detach().cpu())}

    def combine(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        missing = set(losses) - set(self.tasks)
        if missing:
            raise KeyError(f"no log-variance for tasks {sorted(missing)}")
        total = 0
        for i, task in enumerate(self.tasks):
            if task in losses:
                s = self.log_vars[i].float()
                total = total + torch.exp(-s) / 2 * losses[task].float() + s / 2
        return total

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.combine(losses)


def weighting_state(weighting) -> dict:
    """Plain-data state for a checkpoint: method, tasks and learnt parameters (if any)."""
    state = {"name": weighting.name, "tasks": list(weighting.tasks)}
    if isinstance(weighting, nn.Module):
        state["params"] = {k: v.detach().cpu().clone() for k, v in weighting.state_dict().items()}
    return state


def load_weighting_state(weighting, state: Mapping) -> None:
    """Restore ``weighting_state`` output; refuses a state of another method or task list."""
    if state.get("name") != weighting.name or list(state.get("tasks", ())) != list(weighting.tasks):
        raise ValueError(f"the saved weighting is {state.get('name')!r} with tasks {list(state.get('tasks', ()))}, "
                         f"not {weighting.name!r} with tasks {list(weighting.tasks)}")
    if isinstance(weighting, nn.Module):
        weighting.load_state_dict(state["params"])


def build_weighting(name: str, tasks: Sequence[str], temperature: float = 2.0, uncert_init: float = -0.5):
    """The weighting called ``name`` (one of ``WEIGHTINGS``) for ``tasks``."""
    if name == "equal":
        return EqualWeighting(tasks)
    if name == "dwa":
        return DynamicWeightAverage(tasks, temperature)
    if name == "uncert":
        return UncertaintyWeighting(tasks, uncert_init)
    raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")
