"""Per-epoch records on disk: metrics.csv and TensorBoard.

The epoch history lives in the checkpoint; metrics.csv is rewritten from it
after every epoch, so after a kill and ``--resume`` the file holds exactly the
epochs that the resumed run builds on, never duplicates.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from mtan_ros.common.files import atomic_write

__all__ = ["write_csv", "TensorBoardLog"]


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return value


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """All rows (one per epoch) as CSV; a column that an epoch lacks is left empty."""
    path = Path(path)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_columns(rows))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


class TensorBoardLog:
    """Scalars per epoch under ``folder``; a warning (once) and nothing else without TensorBoard."""

    def __init__(self, folder: str | os.PathLike, purge_step: int | None = None):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: pip install .[train] (tensorboard)
        except Exception as exc:  # tensorboard missing or broken: training must go on
            warnings.warn(f"TensorBoard logs are skipped ({type(exc).__name__}: {exc}); "
                          "install the 'tensorboard' package or pass --no-tensorboard", stacklevel=2)
            return
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            group = key.split("_", 1)[0] if key.startswith(("train_", "val_", "weight_", "logvar_")) else "run"
            self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
