"""Pictures people would rather look at than numbers: training curves and prediction mosaics.

matplotlib (Agg, no display needed) is imported only when a curve is drawn;
mosaics use numpy and OpenCV only, so an evaluator can reuse them cheaply.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_curves", "colorize_labels", "colorize_depth", "depth_range", "sample_mosaic", "write_png"]


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(int(row["epoch"]))
            ys.append(float(value))
    return xs, ys


def plot_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path | None:
    """Loss, segmentation, depth and task-weight curves per epoch as one PNG (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except Exception:  # plotting is a convenience; never stop training for it
        return None
    keys = sorted({k for row in rows for k in row})
    panels = [
        ("losses (unweighted)", [k for k in keys if k.startswith(("train_loss_", "val_loss_"))], True),
        ("segmentation", [k for k in ("train_miou", "val_miou", "train_pixel_accuracy", "val_pixel_accuracy")
                          if k in keys], False),
        ("depth error (dataset units)", [k for k in ("train_abs_err", "val_abs_err") if k in keys], True),
        ("depth relative error", [k for k in ("train_rel_err", "val_rel_err") if k in keys], False),
        ("task weights", [k for k in keys if k.startswith("weight_")], False),
        ("learning rate", ["lr"] if "lr" in keys else [], True),
    ]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    cols = 3 if len(panels) > 4 else 2
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
    for ax, (name, series, log_scale) in zip(axes.flat, panels):
        for key in series:
            xs, ys = _series(rows, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3,
                        linestyle="--" if key.startswith("val_") else "-", label=key)
        if log_scale and any(v > 0 for key in series for v in _series(rows, key)[1]):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def colorize_labels(labels: Any, palette: Any, void_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """H×W class ids -> H×W×3 uint8 RGB; ids outside the palette (void) get ``void_color``."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    labels = np.asarray(labels).astype(np.int64)
    table = np.concatenate([palette, np.asarray([void_color], dtype=np.uint8)])
    return table[np.where((labels >= 0) & (labels < len(palette)), labels, len(palette))]


def depth_range(*metres: Any) -> tuple[float, float]:
    """A colour range shared by several depth maps: 2nd-98th percentile of their valid values."""
    values = [np.asarray(m, dtype=np.float64) for m in metres]
    values = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values]) if values else np.empty(0)
    if values.size == 0:
        return 1.0, 100.0
    lo, hi = np.percentile(values, [2, 98])
    return float(lo), float(max(hi, lo * 1.01 + 1e-6))


def colorize_depth(metres: Any, vmin: float, vmax: float) -> np.ndarray:
    """H×W metres -> H×W×3 uint8 RGB (near = bright, inverse-depth scaling); no value = black."""
    import cv2

    metres = np.asarray(metres, dtype=np.float64)
    valid = np.isfinite(metres) & (metres > 0)
    inv = np.where(valid, 1.0 / np.where(valid, metres, 1.0), 0.0)
    lo, hi = 1.0 / max(vmax, 1e-6), 1.0 / max(vmin, 1e-6)
    scaled = np.clip((inv - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    rgb = bgr[..., ::-1].copy()
    rgb[~valid] = 0
    return rgb


def _panel_title(panel: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.full((18, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def sample_mosaic(image: Any, pred_labels: Any, gt_labels: Any, pred_depth_m: Any, gt_depth_m: Any,
                  palette: Any) -> np.ndarray:
    """One row: input | predicted labels | ground truth | predicted depth | ground-truth depth (RGB uint8).

    ``image`` is H×W×3 uint8 or float in [0, 1]; depths are metres (NaN = none),
    colour-mapped with one range shared by prediction and ground truth.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    vmin, vmax = depth_range(gt_depth_m) if np.isfinite(np.asarray(gt_depth_m, dtype=np.float64)).any() \
        else depth_range(pred_depth_m)
    panels = [
        (image, "input"),
        (colorize_labels(pred_labels, palette), "predicted"),
        (colorize_labels(gt_labels, palette), "ground truth"),
        (colorize_depth(pred_depth_m, vmin, vmax), f"depth {vmin:.3g}-{vmax:.3g} m"),
        (colorize_depth(gt_depth_m, vmin, vmax), "true depth"),
    ]
    height = image.shape[0]
    sep = np.full((height + 18, 2, 3), 255, dtype=np.uint8)
    row = []
    for i, (panel, title) in enumerate(panels):
        if panel.shape[:2] != image.shape[:2]:
            raise ValueError(f"mosaic panel '{title}' is {panel.shape[:2]}, the input is {image.shape[:2]}")
        if i:
            row.append(sep)
        row.append(_panel_title(panel, title))
    return np.concatenate(row, axis=1)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write '{path}'")
    return path
