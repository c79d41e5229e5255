"""Task weighting: how per-task losses become the gradients that are applied.

Every method is a `Weighting`. Its hook ``backward(losses, weights,
shared_parameters)`` turns the per-task losses into parameter gradients; the
default combines the losses into one total (``combine``) and calls backward
once, so loss-level methods only say how to weight. Gradient-level methods
override ``backward`` and act on each task's gradient of the shared parameters.

Loss-level (from the MTAN paper):

* ``EqualWeighting``: total = sum_k L_k.
* ``DynamicWeightAverage`` (DWA, Liu et al. 2019, eq. 7): per epoch t,
  lambda_k(t) = K exp(w_k(t-1) / T) / sum_i exp(w_i(t-1) / T) with
  w_k(t-1) = L_k(t-1) / L_k(t-2), where L_k is task k's *unweighted* training
  loss averaged over epoch t's batches; lambda_k = 1 for the first two epochs
  (t = 0, 1) when no ratio exists yet. T = 2 in the paper.
* ``UncertaintyWeighting`` (Kendall et al. 2018, as the MTAN code applies it):
  total = sum_k exp(-s_k) / 2 * L_k + s_k / 2, where s_k = log sigma_k^2 is
  learnt with the network (initialised to -0.5 like the reference code).

Gradient-level:

* ``PCGrad`` (Yu et al. 2020, "Gradient Surgery"): each task's gradient g_i of
  the shared parameters is projected onto the normal plane of every other task
  gradient g_j it conflicts with (g_i . g_j < 0), the others taken in random
  order: g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j; the projected gradients are
  summed. Task-specific parameters get their own task's gradient.

``weights(epoch, loss_history)`` takes the epoch index (0-based) and the
history of epoch-averaged unweighted training losses, ``{task: [L(0), L(1),
...]}`` holding at least the epochs before ``epoch``; the history is owned by
the trainer (and saved in checkpoints) so that a resumed run weights exactly
as an uninterrupted one. Whatever else a method needs to resume (learnt
parameters, random state) is in its ``state_dict()``.

Methods register themselves in ``WEIGHTINGS`` (name -> class), the one list the
command line's choices come from.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["WEIGHTINGS", "Weighting", "EqualWeighting", "DynamicWeightAverage", "UncertaintyWeighting", "PCGrad",
           "register", "build_weighting", "weighting_state", "load_weighting_state", "project_conflicting",
           "shared_parameters"]

LossHistory = Mapping[str, Sequence[float]]
Scale = Callable[[torch.Tensor], torch.Tensor]

WEIGHTINGS: dict[str, type["Weighting"]] = {}


def register(cls: type["Weighting"]) -> type["Weighting"]:
    """Class decorator: make a weighting selectable by its ``name``."""
    WEIGHTINGS[cls.name] = cls
    return cls


def _weighted_sum(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    missing = set(losses) - set(weights)
    if missing:
        raise KeyError(f"no weight for tasks {sorted(missing)}")
    return sum(float(weights[task]) * loss for task, loss in losses.items())


class Weighting:
    """Base of the task weightings: weight 1 per task, losses summed, one backward pass.

    Subclasses override `weights` / `combine` (loss level) or `backward` (gradient
    level), and `parameters` / `state_dict` / `load_state_dict` when they learn or
    draw something that a resumed run must continue from.
    """

    name: ClassVar[str] = ""
    supports_distributed: ClassVar[bool] = True  # False: needs one process (per-task gradients of the whole batch)

    def __init__(self, tasks: Sequence[str]):
        self.tasks = tuple(tasks)

    @classmethod
    def from_options(cls, tasks: Sequence[str], options: Mapping[str, Any]) -> "Weighting":
        """Build from the run's weighting options (temperature, uncert_init, seed), taking what applies."""
        return cls(tasks)

    def parameters(self) -> list[nn.Parameter]:
        """Learnt parameters, optimised together with the network's."""
        return []

    def to(self, device: torch.device) -> "Weighting":
        return self

    def weights(self, epoch: int, loss_history: LossHistory | None = None) -> dict[str, float]:
        """Each task's loss weight for ``epoch`` (0-based)."""
        return dict.fromkeys(self.tasks, 1.0)

    def combine(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """The total loss: the weighted sum of the task losses."""
        return _weighted_sum(losses, weights if weights is not None else self.weights(0))

    def backward(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None,
                 shared_parameters: Sequence[nn.Parameter], scale: Scale | None = None) -> torch.Tensor:
        """Accumulate the gradients of this batch into ``.grad``; returns the total loss (detached).

        ``scale`` (e.g. a GradScaler's) is applied to what is differentiated.
        """
        total = self.combine(losses, weights)
        (scale(total) if scale is not None else total).backward()
        return total.detach()

    def log_values(self) -> dict[str, float]:
        """Extra numbers for the epoch's row of metrics.csv (e.g. learnt log-variances)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain data a resumed run needs (loadable with weights_only=True)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


@register
class EqualWeighting(Weighting):
    """Every task's loss with weight 1."""

    name = "equal"


@register
class DynamicWeightAverage(Weighting):
    """DWA: weights from the rate at which each task's training loss fell (module docstring)."""

    name = "dwa"

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0):
        super().__init__(tasks)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"DWA temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    @classmethod
    def from_options(cls, tasks: Sequence[str], options: Mapping[str, Any]) -> "DynamicWeightAverage":
        return cls(tasks, options.get("temperature", 2.0))

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


@register
class UncertaintyWeighting(Weighting):
    """Homoscedastic-uncertainty weighting with learnt log-variances ``log_vars`` (one per task).

    ``combine`` gives sum_k exp(-s_k) / 2 * L_k + s_k / 2 (the ``weights`` passed
    in are ignored), and ``weights`` reports the effective factors exp(-s_k) / 2.
    """

    name = "uncert"

    def __init__(self, tasks: Sequence[str], init: float = -0.5):
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init), dtype=torch.float32))

    @classmethod
    def from_options(cls, tasks: Sequence[str], options: Mapping[str, Any]) -> "UncertaintyWeighting":
        return cls(tasks, options.get("uncert_init", -0.5))

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def to(self, device: torch.device) -> "UncertaintyWeighting":
        self.log_vars = nn.Parameter(self.log_vars.detach().to(device))
        return self

    def weights(self, epoch: int = 0, loss_history: LossHistory | None = None) -> dict[str, float]:
        factors = torch.exp(-self.log_vars.detach().double().cpu()) / 2
        return {task: float(f) for task, f in zip(self.tasks, factors)}

    def log_variances(self) -> dict[str, float]:
        return {task: float(s) for task, s in zip(self.tasks, self.log_vars.detach().cpu())}

    def log_values(self) -> dict[str, float]:
        return {f"logvar_{task}": v for task, v in self.log_variances().items()}

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

    def state_dict(self) -> dict[str, Any]:
        return {"log_vars": self.log_vars.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            self.log_vars.copy_(state["log_vars"].to(self.log_vars.device))


def project_conflicting(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad's projection of K task gradients (K x P): row i loses its component along every
    original gradient j it conflicts with, the js in a random order drawn per task."""
    projected = grads.clone()
    count = grads.shape[0]
    squared = (grads * grads).sum(dim=1)
    for i in range(count):
        for j in torch.randperm(count, generator=generator).tolist():
            if j == i or squared[j] == 0:
                continue
            dot = torch.dot(projected[i], grads[j])
            if dot < 0:
                projected[i] -= dot / squared[j] * grads[j]
    return projected


@register
class PCGrad(Weighting):
    """Projecting conflicting gradients (module docstring); the random order follows its own generator."""

    name = "pcgrad"
    supports_distributed = False

    def __init__(self, tasks: Sequence[str], seed: int = 0):
        super().__init__(tasks)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    @classmethod
    def from_options(cls, tasks: Sequence[str], options: Mapping[str, Any]) -> "PCGrad":
        return cls(tasks, options.get("seed", 0))

    def backward(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None,
                 shared_parameters: Sequence[nn.Parameter], scale: Scale | None = None) -> torch.Tensor:
        weights = weights if weights is not None else self.weights(0)
        total = _weighted_sum(losses, weights)
        shared = [p for p in shared_parameters if p.requires_grad]
        if len(losses) < 2 or not shared:
            (scale(total) if scale is not None else total).backward()
            return total.detach()
        before = [p.grad for p in shared]
        task_grads = []
        names = list(losses)
        for k, task in enumerate(names):
            for p in shared:
                p.grad = None
            loss = float(weights[task]) * losses[task]
            # One pass per task: task-specific parameters accumulate their own task's gradient as usual.
            (scale(loss) if scale is not None else loss).backward(retain_graph=k + 1 < len(names))
            task_grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                         for p in shared]))
        summed = project_conflicting(torch.stack(task_grads), self.generator).sum(dim=0)
        offset = 0
        for p, old in zip(shared, before):
            piece = summed[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            p.grad = piece.clone() if old is None else old + piece
        return total.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def shared_parameters(model: nn.Module, tasks: Iterable[str]) -> list[nn.Parameter]:
    """Parameters used by every task: those whose module path names no task (heads, attention
    branches and single-task networks sit under a module named after their task)."""
    names = set(tasks)
    return [p for path, p in model.named_parameters() if p.requires_grad and not names & set(path.split("."))]


def weighting_state(weighting: Weighting) -> dict:
    """Plain-data state for a checkpoint: method, tasks and what the method needs to resume."""
    state: dict[str, Any] = {"name": weighting.name, "tasks": list(weighting.tasks)}
    params = weighting.state_dict()
    if params:
        state["params"] = params
    return state


def load_weighting_state(weighting: Weighting, state: Mapping) -> None:
    """Restore ``weighting_state`` output; refuses a state of another method or task list."""
    if state.get("name") != weighting.name or list(state.get("tasks", ())) != list(weighting.tasks):
        raise ValueError(f"the saved weighting is {state.get('name')!r} with tasks {list(state.get('tasks', ()))}, "
                         f"not {weighting.name!r} with tasks {list(weighting.tasks)}")
    if state.get("params"):
        weighting.load_state_dict(state["params"])


def build_weighting(name: str, tasks: Sequence[str], temperature: float = 2.0, uncert_init: float = -0.5,
                    seed: int = 0) -> Weighting:
    """The weighting called ``name`` (a key of ``WEIGHTINGS``) for ``tasks``."""
    cls = WEIGHTINGS.get(name)
    if cls is None:
        raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")
    return cls.from_options(tasks, {"temperature": temperature, "uncert_init": uncert_init, "seed": seed})
