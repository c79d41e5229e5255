"""The paper's results table for a run: mean of the last validated epochs, and the best epoch.

Liu et al. (CVPR 2019) report, for Cityscapes at 128×256 with 7 classes, mIoU
and pixel accuracy (%), and depth absolute and relative error, each averaged
over the last 10 epochs of training. ``build_report`` does the same from the
per-epoch history, and also gives the best epoch. Depth absolute error is
given in the dataset's own depth units (what the paper's 0.0144 is: inverse
depth on the preprocessed release) and in metres through the dataset's
DepthEncoding; relative error is a fraction in JSON and a percentage in the
printed table, as in the paper.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from mtan_ros.common.files import write_text

__all__ = ["METRICS", "PAPER_TABLE", "build_report", "format_table", "format_per_class", "write_json",
           "depth_units", "best_score"]

METRICS = ("miou", "pixel_accuracy", "abs_err", "rel_err", "abs_err_m", "rel_err_m", "miou_per_image",
           "pixel_accuracy_per_image")
HIGHER_IS_BETTER = {"miou": True, "pixel_accuracy": True, "abs_err": False, "rel_err": False, "loss": False}

# Liu et al. 2019, Table (Cityscapes, 7 classes, 128x256): mIoU %, pixel accuracy %, abs err
# (inverse depth of the preprocessed release), rel err %. mIoU/accuracy are per-image means.
PAPER_TABLE = {
    "paper one-task": (51.09, 90.69, 0.0158, 34.17),
    "paper MTAN equal": (53.04, 91.11, 0.0144, 33.63),
    "paper MTAN uncert": (53.86, 91.10, 0.0144, 35.72),
    "paper MTAN DWA": (53.29, 91.09, 0.0144, 34.14),
}


def depth_units(encoding: Any) -> str:
    """A readable statement of what one unit of stored depth means."""
    if encoding is None:
        return "dataset depth units"
    if encoding.kind == "inverse":
        return f"inverse depth (metres = {encoding.scale:.6g} / value)"
    if encoding.scale == 1.0:
        return "metres"
    return f"metric depth (metres = value * {encoding.scale:.6g})"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_score(row: dict[str, Any], metric: str) -> float | None:
    """The row's score for choosing the best epoch, larger = better (None when not validated)."""
    value = row.get(f"val_{metric}") if metric != "loss" else row.get("val_loss")
    if not _finite(value):
        return None
    return float(value) if HIGHER_IS_BETTER[metric] else -float(value)


def build_report(rows: Sequence[dict[str, Any]], *, best_metric: str, last_n: int = 10,
                 depth_encoding: Any = None, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary of a run from its per-epoch rows (keys ``epoch``, ``val_miou``, ``val_abs_err``, ...)."""
    validated = [r for r in rows if any(_finite(r.get(f"val_{m}")) for m in METRICS)]
    tail = validated[-last_n:]
    mean_last = {}
    for metric in METRICS:
        values = [float(r[f"val_{metric}"]) for r in tail if _finite(r.get(f"val_{metric}"))]
        if values:
            mean_last[metric] = sum(values) / len(values)
    best_row = None
    for row in validated:
        score = best_score(row, best_metric)
        if score is not None and (best_row is None or score > best_score(best_row, best_metric)):
            best_row = row
    best = None
    if best_row is not None:
        best = {"epoch": int(best_row["epoch"]), "chosen_by": best_metric,
                **{m: float(best_row[f"val_{m}"]) for m in METRICS if _finite(best_row.get(f"val_{m}"))}}
    throughput = [float(r["images_per_s"]) for r in rows if _finite(r.get("images_per_s"))]
    report = {
        **mean_last,
        "last_n": {"epochs": [int(r["epoch"]) for r in tail], **mean_last},
        "best": best,
        "epochs_completed": int(rows[-1]["epoch"]) if rows else 0,
        "train_images_per_s": sum(throughput) / len(throughput) if throughput else None,
        "train_time_s": sum(float(r.get("time_s", 0.0)) for r in rows),
        "units": {
            "miou": "fraction; whole-split confusion matrix (reference code), not the paper's per-image mean",
            "pixel_accuracy": "fraction of labelled pixels",
            "miou_per_image": "fraction; the paper's definition: mIoU per image over its classes, averaged",
            "pixel_accuracy_per_image": "fraction; pixel accuracy per image, averaged (paper's definition)",
            "abs_err": depth_units(depth_encoding),
            "rel_err": "fraction |p - g| / g in dataset depth units",
            "abs_err_m": "metres",
            "rel_err_m": "fraction |p - g| / g in metres",
        },
    }
    if info:
        report.update(info)
    return report


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return f"{value * scale:.{digits}f}" if _finite(value) else "-"


def format_table(rows: dict[str, dict[str, Any]], depth_units_text: str = "dataset units",
                 with_paper: bool = True) -> str:
    """The paper's table layout: one line per named result (values as fractions, printed in %)."""
    header = (f"{'':28s} {'mIoU %':>8s} {'PixAcc %':>9s} {'AbsErr':>9s} {'RelErr %':>9s} "
              f"{'AbsErr m':>9s} {'RelErr m %':>11s}")
    lines = [header, "-" * len(header)]
    for name, m in rows.items():
        if m is None:
            continue
        lines.append(f"{name:28s} {_fmt(m.get('miou'), 100):>8s} {_fmt(m.get('pixel_accuracy'), 100):>9s} "
                     f"{_fmt(m.get('abs_err'), 1, 4):>9s} {_fmt(m.get('rel_err'), 100):>9s} "
                     f"{_fmt(m.get('abs_err_m'), 1, 3):>9s} {_fmt(m.get('rel_err_m'), 100):>11s}")
    if with_paper:
        for name, (miou, acc, abs_err, rel_err) in PAPER_TABLE.items():
            lines.append(f"{name:28s} {miou:>8.2f} {acc:>9.2f} {abs_err:>9.4f} {rel_err:>9.2f} "
                         f"{'-':>9s} {'-':>11s}")
    for name, m in rows.items():
        if m is not None and _finite(m.get("miou_per_image")):
            lines.append(f"{name}: per-image mIoU {_fmt(m['miou_per_image'], 100)} %, pixel accuracy "
                         f"{_fmt(m.get('pixel_accuracy_per_image'), 100)} % (the paper's definition)")
    lines.append(f"AbsErr in {depth_units_text}; 'm' columns in metres. mIoU from one confusion matrix "
                 "over the whole split" + ("; paper rows: real Cityscapes, per-image mIoU, inverse depth."
                                           if with_paper else "."))
    return "\n".join(lines)


def format_per_class(names: Sequence[str], iou: Sequence[float]) -> str:
    """Per-class IoU, one line each (NaN = class absent from prediction and ground truth)."""
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':{width}s}  IoU %"]
    for name, value in zip(names, iou):
        lines.append(f"{name:{width}s}  {_fmt(float(value), 100):>6s}")
    return "\n".join(lines)


def write_json(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """JSON with NaN written as null, atomically."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return write_text(path, json.dumps(clean(data), indent=2) + "\n")
