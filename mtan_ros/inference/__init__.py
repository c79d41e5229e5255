"""Checkpoint loading and the ROS-free Predictor."""
from mtan_ros.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointMeta,
    ModelSpec,
    build_model_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from mtan_ros.inference.predictor import (
    BACKENDS,
    PRECISIONS,
    Prediction,
    Predictor,
    cpu_has_amx_bf16,
    resolve_device,
    resolve_precision,
)

__all__ = [
    "BACKENDS", "PRECISIONS", "cpu_has_amx_bf16",
    "Checkpoint", "CheckpointError", "CheckpointMeta", "ModelSpec", "Prediction", "Predictor",
    "build_model_from_checkpoint", "load_checkpoint", "resolve_device", "resolve_precision", "save_checkpoint",
]
