"""Self-describing checkpoints that load without unpickling arbitrary objects.

A checkpoint is one file written by `torch.save` holding only tensors and plain
containers: the weights, a `CheckpointMeta` (architecture and its arguments,
classes and colours, input size, normalisation, depth encoding, metrics) and,
for training runs, the optimiser/scheduler/weighting/RNG state needed to
resume. It is read with `torch.load(weights_only=True)`, so a file crafted to
run code on load is refused instead of executed.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtan_ros.errors import CheckpointError  # noqa: F401 (re-exported)
from mtan_ros.depth_encoding import DepthEncoding

FORMAT = "mtan_ros.checkpoint"
VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build: `mtan_ros.model.build_model(arch, tasks, width)`."""

    arch: str = "mtan"
    tasks: dict[str, int] = field(default_factory=lambda: {"semantic": 7, "depth": 1})
    width: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "tasks": dict(self.tasks), "width": float(self.width)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        return cls(arch=str(data["arch"]), tasks={str(k): int(v) for k, v in data["tasks"].items()},
                   width=float(data["width"]))


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything needed to use the weights without guessing.

    `input_size` is (height, width) of the images the model was trained on;
    `mean`/`std` normalise RGB scaled to [0, 1]; `depth` says how the depth
    output relates to metres.
    """

    model: ModelSpec
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    depth: DepthEncoding = field(default_factory=DepthEncoding)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        num_classes = self.model.tasks.get("semantic")
        if num_classes is not None and len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a {num_classes}-class model")
        if len(self.class_colors) != len(self.class_names):
            raise ValueError(f"{len(self.class_colors)} class colours for {len(self.class_names)} classes")
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise ValueError(f"input_size must be (height, width), got {self.input_size!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "class_names": list(self.class_names),
            "class_colors": [list(map(int, c)) for c in self.class_colors],
            "input_size": [int(v) for v in self.input_size],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "depth": self.depth.to_dict(),
            "metrics": {str(k): float(v) for k, v in self.metrics.items()},
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointMeta":
        return cls(
            model=ModelSpec.from_dict(data["model"]),
            class_names=[str(n) for n in data["class_names"]],
            class_colors=[tuple(int(v) for v in c) for c in data["class_colors"]],
            input_size=tuple(int(v) for v in data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            depth=DepthEncoding.from_dict(data["depth"]),
            metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
            info=dict(data.get("info", {})),
        )


@dataclass
class Checkpoint:
    meta: CheckpointMeta
    state_dict: dict[str, Any]
    training_state: dict[str, Any] | None = None


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, Any], meta: CheckpointMeta,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, fsynced, then renamed.

    A process killed at any moment leaves either the previous file or the new
    one, never a half-written checkpoint under the final name.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "training_state": training_state,
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint, refusing anything that is not a plain mtan_ros checkpoint."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' not found; train one with `mtan-train --data DIR --out DIR` "
            "(or run `make demo`) and pass its best.pt")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint '{path}' holds objects that are not plain tensors or containers and was "
            f"refused for safety ({first[:160]})") from None
    except Exception as exc:  # torch raises many types for damaged files; all mean the same here
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else 'no detail'}); "
            "re-copy it or use the other of last.pt/best.pt") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not an mtan_ros checkpoint (no '{FORMAT}' marker); a reference-code "
            "state dict can be converted with mtan_ros.model.load_official_state_dict")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint '{path}' has format version {payload.get('version')!r}; "
                              f"this mtan_ros reads version {VERSION}")
    try:
        meta = CheckpointMeta.from_dict(payload["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint '{path}' has invalid metadata: {exc}") from None
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"checkpoint '{path}' has no weights")
    return Checkpoint(meta=meta, state_dict=state_dict, training_state=payload.get("training_state"))


def build_model_from_checkpoint(checkpoint: Checkpoint, source: str = "checkpoint"):
    """The checkpoint's architecture with its weights loaded, in eval mode."""
    from mtan_ros.model import build_model

    spec = checkpoint.meta.model
    try:
        model = build_model(spec.arch, dict(spec.tasks), spec.width)
    except ValueError as exc:
        raise CheckpointError(f"{source}: cannot build its model: {exc}") from None
    try:
        result = model.load_state_dict(checkpoint.state_dict, strict=False)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{source}: weights do not fit a {spec.arch} model with tasks "
                              f"{dict(spec.tasks)} and width {spec.width}: {detail}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} weights (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected weights (e.g. {result.unexpected_keys[0]})")
    if problems:
        raise CheckpointError(f"{source}: weights do not match a {spec.arch} model with tasks "
                              f"{dict(spec.tasks)} and width {spec.width}: " + "; ".join(problems))
    return model.eval()
