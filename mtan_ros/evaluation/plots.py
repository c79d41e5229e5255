"""Pictures people would rather look at than numbers: training curves and prediction mosaics.

matplotlib (Agg, no display needed) is imported only when a curve is drawn;
mosaics use numpy and OpenCV only, so an evaluator can reuse them cheaply.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from mtan_ros.common.files import atomic_write, write_bytes

__all__ = ["plot_curves", "colorize_labels", "colorize_depth", "depth_range", "sample_mosaic", "depth_colorbar",
           "class_legend", "mosaic_footer", "mosaic_picture", "truth_depth_range", "write_png"]


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
        import matplotlib  # optional: pip install .[train]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional, as above
        from matplotlib.ticker import MaxNLocator  # optional, as above
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
    try:
        with atomic_write(path) as handle:
            fig.savefig(handle, format="png", dpi=90)
    finally:
        plt.close(fig)
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


def truth_depth_range(predicted: Sequence[Any], truth: Sequence[Any]) -> tuple[float, float]:
    """One colour range for several frames: the ground truth's robust range (`depth_range`), or the
    predictions' where no frame has ground truth."""
    with_values = [t for t in truth if np.isfinite(np.asarray(t, dtype=np.float64)).any()]
    return depth_range(*with_values) if with_values else depth_range(*predicted)


def colorize_depth(metres: Any, vmin: float, vmax: float) -> np.ndarray:
    """H×W metres -> H×W×3 uint8 RGB (near = bright, inverse-depth scaling); no value = black."""
    metres = np.asarray(metres, dtype=np.float64)
    valid = np.isfinite(metres) & (metres > 0)
    inv = np.where(valid, 1.0 / np.where(valid, metres, 1.0), 0.0)
    lo, hi = 1.0 / max(vmax, 1e-6), 1.0 / max(vmin, 1e-6)
    scaled = np.clip((inv - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    rgb = bgr[..., ::-1].copy()
    rgb[~valid] = 0
    return rgb


_FONT_SCALE = 0.42
_TITLE_HEIGHT = 18


def _put_text(canvas: np.ndarray, text: str, origin: tuple[int, int], color: Sequence[int] = (0, 0, 0)) -> None:
    """Draw one line of text (the one place text is drawn, so tests can see what is written)."""
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, tuple(int(c) for c in color), 1,
                cv2.LINE_AA)


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, 1)[0][0]


def _panel_title(panel: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((_TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    _put_text(bar, text, (4, 13))
    return np.concatenate([bar, panel], axis=0)


def sample_mosaic(image: Any, pred_labels: Any, gt_labels: Any, pred_depth_m: Any, gt_depth_m: Any,
                  palette: Any, depth_range_m: tuple[float, float] | None = None) -> np.ndarray:
    """One row: input | predicted labels | true labels | predicted depth | true depth (RGB uint8).

    ``image`` is H×W×3 uint8 or float in [0, 1]; depths are metres (NaN = none),
    colour-mapped on one scale shared by prediction and ground truth: ``depth_range_m``
    (pass the same range to every row of a picture), or by default the ground
    truth's robust range (`depth_range`).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    vmin, vmax = depth_range_m if depth_range_m is not None else truth_depth_range([pred_depth_m], [gt_depth_m])
    panels = [
        (image, "input"),
        (colorize_labels(pred_labels, palette), "predicted labels"),
        (colorize_labels(gt_labels, palette), "true labels"),
        (colorize_depth(pred_depth_m, vmin, vmax), "predicted depth"),
        (colorize_depth(gt_depth_m, vmin, vmax), "true depth"),
    ]
    height = image.shape[0]
    sep = np.full((height + _TITLE_HEIGHT, 2, 3), 255, dtype=np.uint8)
    row = []
    for i, (panel, title) in enumerate(panels):
        if panel.shape[:2] != image.shape[:2]:
            raise ValueError(f"mosaic panel '{title}' is {panel.shape[:2]}, the input is {image.shape[:2]}")
        if i:
            row.append(sep)
        row.append(_panel_title(panel, title))
    return np.concatenate(row, axis=1)


def _depth_ticks(vmin: float, vmax: float) -> list[float]:
    """Round metre values (1, 2, 5, 10, 20, 50, ...) inside [vmin, vmax], plus both ends."""
    ticks = [vmin]
    decade = 10.0 ** math.floor(math.log10(max(vmin, 1e-6)))
    while decade <= vmax:
        ticks += [m * decade for m in (1, 2, 5) if vmin < m * decade < vmax]
        decade *= 10
    return ticks + [vmax]


def depth_colorbar(width: int, vmin: float, vmax: float) -> np.ndarray:
    """A strip with the depth colour scale of `colorize_depth` and its ticks in metres (RGB uint8).

    The bar runs from ``vmin`` (left, near) to ``vmax`` (right, far), evenly in
    inverse depth like the colours themselves.
    """
    margin, bar_height = 10, 14
    canvas = np.full((_TITLE_HEIGHT + bar_height + 20, width, 3), 255, dtype=np.uint8)
    _put_text(canvas, "depth in metres (predicted and true depth on this one scale; black: no value)", (margin, 13))
    length = max(width - 2 * margin, 2)
    inverse = np.linspace(1.0 / vmin, 1.0 / vmax, length)
    colours = colorize_depth((1.0 / inverse)[None, :], vmin, vmax)
    top = _TITLE_HEIGHT
    canvas[top:top + bar_height, margin:margin + length] = colours
    position = {value: margin + int(round((1.0 / vmin - 1.0 / value) / (1.0 / vmin - 1.0 / vmax) * (length - 1)))
                for value in _depth_ticks(vmin, vmax)}
    placed: list[tuple[float, int, int]] = []  # value, left, right of its label
    for value in sorted(position, key=lambda v: (v not in (vmin, vmax), v)):  # both ends first
        label = f"{value:.3g}"
        left = min(max(position[value] - _text_width(label) // 2, 0), width - _text_width(label))
        right = left + _text_width(label)
        if all(right + 6 < other_left or left > other_right + 6 for _, other_left, other_right in placed):
            placed.append((value, left, right))  # labels never overlap (the far end is compressed)
    for value, left, _ in placed:
        x = position[value]
        canvas[top + bar_height:top + bar_height + 4, x:x + 1] = 0
        _put_text(canvas, f"{value:.3g}", (left, top + bar_height + 16))
    return canvas


def class_legend(width: int, palette: Any, names: Sequence[str]) -> np.ndarray:
    """Colour swatches with class names, wrapped into lines of at most ``width`` pixels (RGB uint8)."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    margin, swatch, line = 10, 12, 18
    entries = list(zip(names, palette)) + [("void / none", np.zeros(3, dtype=np.uint8))]
    places, x, y = [], margin, 0
    for name, colour in entries:
        entry = swatch + 4 + _text_width(name) + 14
        if x + entry > width - margin and x > margin:
            x, y = margin, y + line
        places.append((x, y, name, colour))
        x += entry
    canvas = np.full((y + line + 4, width, 3), 255, dtype=np.uint8)
    for x, y, name, colour in places:
        canvas[y + 3:y + 3 + swatch, x:x + swatch] = colour
        canvas[y + 3:y + 3 + swatch, [x, x + swatch - 1]] = 128  # outline: a white or black class stays visible
        canvas[[y + 3, y + 2 + swatch], x:x + swatch] = 128
        _put_text(canvas, name, (x + swatch + 4, y + 13))
    return canvas


def mosaic_footer(width: int, depth_range_m: tuple[float, float], palette: Any, names: Sequence[str]) -> np.ndarray:
    """What a reader needs under a mosaic: the depth colour bar in metres and the class colours."""
    return np.concatenate([depth_colorbar(width, *depth_range_m), class_legend(width, palette, names)], axis=0)


def mosaic_picture(frames: Sequence[Sequence[Any]], palette: Any, names: Sequence[str]) -> np.ndarray:
    """`sample_mosaic` rows of ``frames`` (image, predicted labels, true labels, predicted depth m,
    true depth m), all depth panels on one scale (`truth_depth_range`), then `mosaic_footer`."""
    scale = truth_depth_range([f[3] for f in frames], [f[4] for f in frames])
    rows = [sample_mosaic(*frame, palette, depth_range_m=scale) for frame in frames]
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded + [mosaic_footer(width, scale, palette, names)], axis=0)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR), atomically (a full disk: StorageError)."""
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {rgb.shape} {rgb.dtype} image as PNG for '{path}'")
    return write_bytes(path, png.tobytes())
