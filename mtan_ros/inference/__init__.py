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
from mtan_ros.inference.batching import BATCH_MODES, BatchPlan
from mtan_ros.inference.precision import PRECISIONS, PrecisionChoice, cpu_bf16_flags
from mtan_ros.inference.predictor import BACKENDS, Prediction, Predictor, resolve_device

__all__ = [
    "BACKENDS", "BATCH_MODES", "PRECISIONS", "BatchPlan", "cpu_bf16_flags",
    "Checkpoint", "CheckpointError", "CheckpointMeta", "ModelSpec", "Prediction", "PrecisionChoice", "Predictor",
    "build_model_from_checkpoint", "load_checkpoint", "resolve_device", "save_checkpoint",
]
