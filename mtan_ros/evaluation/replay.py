"""Accuracy and latency of a replay, without ROS: the logic behind the `evaluator` node.

The node only converts messages to arrays and hands them here with the time it
received them; everything else (pairing by stamp, metrics, latency, drops,
report.json, mosaic.png, the printed table) is plain Python so that it can be
unit-tested without rclpy and reused offline.

Metrics are the training code's own (`mtan_ros.evaluation.metrics`): one
confusion matrix over every labelled pixel of the run (mIoU, pixel accuracy)
and depth absolute / relative error summed over every pixel with ground
truth. Depth is compared in metres (what the node publishes); pixels with
ground truth but no predicted depth (NaN, e.g. beyond the node's max_depth)
are left out of the errors and counted in `depth_missing_fraction`.

Latency is measured on one clock, the evaluator's: the time the prediction was
complete (depth and labels received) minus the time the frame's first message
reached the evaluator (the input image or its ground truth, which a player
sends together with the image; ground truth is sent reliably, so every frame
has a start even if a best-effort image is missed). This is right with
simulated time (/clock) and with bags whose stamps lie in the past, where "now
minus header stamp" is meaningless; it leaves out only the ~1 ms a message
takes to reach the evaluator.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mtan_ros.data.classes import class_set
from mtan_ros.evaluation.plots import mosaic_picture, write_png
from mtan_ros.evaluation.report import write_json

REPORT_KEYS = ("miou", "pixel_accuracy", "abs_err_m", "rel_err", "latency_ms_p50", "latency_ms_p95", "fps",
               "frames_in", "frames_out", "dropped")
_TASKS = ("depth", "semantic")


@dataclass
class _Frame:
    order: int
    input_time: Optional[float] = None
    image: Optional[np.ndarray] = None
    gt: dict[str, np.ndarray] = field(default_factory=dict)
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    pred_time: dict[str, float] = field(default_factory=dict)
    done: bool = False


class ReplayEvaluator:
    """Pairs predictions with ground truth by stamp and accumulates the run's numbers.

    Feed it with `on_input`, `on_ground_truth` and `on_prediction` in any order;
    times are seconds on one steady clock (time.monotonic()). `expected_frames`
    (0 = unknown) spreads the mosaic rows over the run and lets `complete` say
    when every frame is in.
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None,
                 palette: Optional[Any] = None, mosaic_frames: int = 4, expected_frames: int = 0,
                 max_pending: int = 300):
        # torch, with the metrics: +2.2 s (-X importtime). The evaluator node imports this module at start-up,
        # before it checks its parameters, and mtan-demo uses only format_report: neither should wait for it.
        from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors

        self.num_classes = int(num_classes)
        if class_names is None:
            class_names = [f"class_{i}" for i in range(self.num_classes)]
        self.class_names = list(class_names)
        if palette is None:
            palette = class_set(self.num_classes).palette()
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        self.confusion = ConfusionMatrix(self.num_classes)
        self.depth = DepthErrors()
        self.mosaic_frames = max(0, int(mosaic_frames))
        self.expected_frames = max(0, int(expected_frames))
        self.max_pending = int(max_pending)
        self.frames: dict[int, _Frame] = {}
        self.seen_in: set[int] = set()
        self.seen_out: set[int] = set()
        self.evaluated = 0
        self.timings: dict[int, list] = {}  # stamp -> [first input-side reception, prediction complete]
        self.out_times: list[float] = []
        self.first_time: Optional[float] = None
        self.last_time: Optional[float] = None
        self.mosaic_rows: list[tuple[int, tuple[np.ndarray, ...]]] = []  # stamp, arrays to draw
        self.depth_pixels_with_gt = 0
        self._next_order = 0
        self.rejected = 0

    # ------------------------------------------------------------------ input side
    def _frame(self, stamp: int, now: float) -> _Frame:
        frame = self.frames.get(stamp)
        if frame is None:
            frame = self.frames[stamp] = _Frame(order=self._next_order)
            self._next_order += 1
            self._prune()
        if self.first_time is None:
            self.first_time = now
        self.last_time = now
        return frame

    def wants_image(self, stamp: int) -> bool:
        """Whether the input image of this stamp will be drawn in the mosaic (decode it only then)."""
        if self.mosaic_frames == 0 or len(self.mosaic_rows) >= self.mosaic_frames:
            return False
        frame = self.frames.get(stamp)
        order = frame.order if frame is not None else self._next_order
        if self.expected_frames > self.mosaic_frames:
            picks = np.linspace(0, self.expected_frames - 1, self.mosaic_frames).round().astype(int)
            return int(order) in set(picks.tolist())
        return True

    def _sent(self, stamp: int, frame: _Frame, now: float) -> None:
        """The frame's first message (image or ground truth: a player sends them together) is its start."""
        if frame.input_time is None or now < frame.input_time:
            frame.input_time = now
            timing = self.timings.get(stamp)
            if timing is not None:  # the prediction's callback ran before this one
                timing[0] = now

    def on_input(self, stamp: int, now: float, image: Optional[Callable[[], np.ndarray] | np.ndarray] = None) -> None:
        """The input image of `stamp` was received at `now`; `image` (array or callable) for the mosaic."""
        frame = self._frame(stamp, now)
        self.seen_in.add(stamp)
        self._sent(stamp, frame, now)
        if image is not None and frame.image is None and self.wants_image(stamp):
            frame.image = np.asarray(image() if callable(image) else image)
            if frame.done and frame.pred:  # kept for this picture: draw it now
                self._add_mosaic_row(stamp, frame)
                frame.image, frame.gt, frame.pred = None, {}, {}
        self._maybe_evaluate(stamp, frame)

    def on_ground_truth(self, stamp: int, kind: str, array: np.ndarray, now: float) -> None:
        """Ground truth of `stamp`: kind "depth" (metres, NaN = none) or "semantic" (ids, >= C = void)."""
        if kind not in _TASKS:
            raise ValueError(f"ground truth kind must be one of {_TASKS}, got {kind!r}")
        frame = self._frame(stamp, now)
        self.seen_in.add(stamp)
        self._sent(stamp, frame, now)
        frame.gt[kind] = np.asarray(array)
        self._maybe_evaluate(stamp, frame)

    def on_prediction(self, stamp: int, kind: str, array: np.ndarray, now: float) -> None:
        """A prediction of `stamp`: "depth" (metres, NaN = no estimate) or "semantic" (class ids)."""
        if kind not in _TASKS:
            raise ValueError(f"prediction kind must be one of {_TASKS}, got {kind!r}")
        frame = self._frame(stamp, now)
        self.seen_out.add(stamp)
        if frame.done:
            return  # a repeated frame (e.g. re-sent by a lockstep player) counts once
        frame.pred[kind] = np.asarray(array)
        frame.pred_time.setdefault(kind, now)
        self._maybe_evaluate(stamp, frame)

    # ------------------------------------------------------------------ evaluation
    def _maybe_evaluate(self, stamp: int, frame: _Frame) -> None:
        if frame.done or len(frame.pred) < len(_TASKS) or len(frame.gt) < len(_TASKS):
            return
        pred_labels, gt_labels = frame.pred["semantic"], frame.gt["semantic"]
        pred_depth, gt_depth = frame.pred["depth"], frame.gt["depth"]
        pred_ids = pred_labels.astype(np.int64)
        problem = None
        for name, pred, gt in (("labels", pred_labels, gt_labels), ("depth", pred_depth, gt_depth)):
            if pred.shape != gt.shape:
                problem = (f"frame {stamp}: predicted {name} are {pred.shape}, ground truth {gt.shape}; "
                           "the node must publish at the input size")
        # Ids the model cannot produce would break the confusion matrix; they only come from a
        # checkpoint with more classes than the ground truth.
        if problem is None and pred_ids.size and (pred_ids.min() < 0 or pred_ids.max() >= self.num_classes):
            problem = (f"frame {stamp}: predicted class ids reach {int(pred_ids.max())} but the ground truth has "
                       f"{self.num_classes} classes; evaluate with the checkpoint's class count")
        if problem is not None:
            # Left out of the metrics (and counted) instead of raising again on every later message.
            frame.done = True
            frame.image, frame.gt, frame.pred = None, {}, {}
            self.rejected += 1
            raise ValueError(problem)
        self.confusion.update(pred_ids, gt_labels.astype(np.int64))
        gt_m = np.asarray(gt_depth, np.float32)
        self.depth.update(np.asarray(pred_depth, np.float32), gt_m)
        self.depth_pixels_with_gt += int((np.isfinite(gt_m) & (gt_m > 0)).sum())
        complete_at = max(frame.pred_time.values())
        self.out_times.append(complete_at)
        # Latency is settled in report(): the input's callback may still come after this one.
        self.timings[stamp] = [frame.input_time, complete_at]
        self.evaluated += 1
        frame.done = True
        if frame.image is not None and len(self.mosaic_rows) < self.mosaic_frames:
            self._add_mosaic_row(stamp, frame)
        elif self.wants_image(stamp):
            return  # keep the arrays until the input image arrives to draw this frame
        frame.image, frame.gt, frame.pred = None, {}, {}

    def latencies(self) -> list[float]:
        """Latency (ms) of every evaluated frame: prediction complete minus first input-side reception."""
        return [(done - start) * 1e3 for start, done in self.timings.values() if start is not None]

    def _add_mosaic_row(self, stamp: int, frame: _Frame) -> None:
        """Keep the frame's arrays for the picture; rows are drawn at the end, on one depth scale."""
        image = frame.image
        if image.shape[:2] != frame.gt["semantic"].shape:
            return
        gt_labels = frame.gt["semantic"].astype(np.int64)
        gt_labels[gt_labels >= self.num_classes] = -1
        self.mosaic_rows.append((stamp, (image, frame.pred["semantic"], gt_labels, frame.pred["depth"],
                                         frame.gt["depth"])))

    def _prune(self) -> None:
        """Forget the oldest frames beyond max_pending (never completed: they count as dropped)."""
        if len(self.frames) <= self.max_pending:
            return
        done = [s for s, f in self.frames.items() if f.done]
        for stamp in done:
            del self.frames[stamp]
        excess = len(self.frames) - self.max_pending
        if excess > 0:
            for stamp in sorted(self.frames, key=lambda s: self.frames[s].order)[:excess]:
                del self.frames[stamp]

    # ------------------------------------------------------------------ results
    @property
    def frames_in(self) -> int:
        return len(self.seen_in)

    @property
    def frames_out(self) -> int:
        return len(self.seen_out)

    def complete(self) -> bool:
        """True once `expected_frames` frames have been evaluated."""
        return self.expected_frames > 0 and self.evaluated >= self.expected_frames

    def report(self, info: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The numbers of the run so far (fractions, metres, milliseconds; NaN when unknown)."""
        lat = np.asarray(self.latencies(), dtype=np.float64)
        times = sorted(self.out_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else math.nan
        missing = self.depth.missing
        total_gt = self.depth_pixels_with_gt
        iou = self.confusion.iou_per_class().tolist()
        report: dict[str, Any] = {
            "miou": self.confusion.miou(),
            "pixel_accuracy": self.confusion.pixel_accuracy(),
            "abs_err_m": self.depth.abs_err(),
            "rel_err": self.depth.rel_err(),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else math.nan,
            "latency_ms_mean": float(lat.mean()) if lat.size else math.nan,
            "latency_ms_max": float(lat.max()) if lat.size else math.nan,
            "fps": fps,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": max(0, len(self.seen_in - self.seen_out)),
            "frames_evaluated": self.evaluated,
            "frames_rejected": self.rejected,
            "depth_missing_fraction": missing / total_gt if total_gt else math.nan,
            "iou_per_class": dict(zip(self.class_names, iou)),
            "wall_time_s": (self.last_time - self.first_time) if self.first_time is not None else 0.0,
            "units": {"abs_err_m": "metres", "rel_err": "fraction |p-g|/g over pixels with ground truth",
                      "miou": "fraction, one confusion matrix over the whole run",
                      "latency": "ms from the frame's first input message (image or ground truth) reaching the "
                                 "evaluator to its prediction (depth and labels) being complete"},
        }
        if info:
            report.update(info)
        return report

    def mosaic(self) -> Optional[np.ndarray]:
        """Rows of input | labels | true labels | depth | true depth in frame order, then a depth colour
        bar in metres and the class legend. Every depth panel uses one colour scale: the robust range
        (2nd-98th percentile) of the drawn frames' ground truth."""
        if not self.mosaic_rows:
            return None
        frames = [arrays for _, arrays in sorted(self.mosaic_rows, key=lambda r: r[0])]
        return mosaic_picture(frames, self.palette, self.class_names)

    def write(self, out_dir: "str | os.PathLike[str]", info: Optional[dict[str, Any]] = None) -> dict[str, Path]:
        """Write report.json (and mosaic.png when there are frames to draw); returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = self.report(info)
        paths = {"report": write_json(report, out / "report.json")}
        mosaic = self.mosaic()
        if mosaic is not None:
            paths["mosaic"] = write_png(out / "mosaic.png", mosaic)
        return paths


def _fmt(value: Any, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value * scale:.{digits}f}{unit}"
    return "-"


def format_report(report: dict[str, Any]) -> str:
    """The run's numbers as a small table for the terminal."""
    rows = [
        ("mIoU", _fmt(report.get("miou"), 100, 2, " %")),
        ("pixel accuracy", _fmt(report.get("pixel_accuracy"), 100, 2, " %")),
        ("depth abs error", _fmt(report.get("abs_err_m"), 1, 3, " m")),
        ("depth rel error", _fmt(report.get("rel_err"), 100, 2, " %")),
        ("depth without estimate", _fmt(report.get("depth_missing_fraction"), 100, 2, " %")),
        ("latency p50 / p95", f"{_fmt(report.get('latency_ms_p50'), 1, 1)} / {_fmt(report.get('latency_ms_p95'), 1, 1)}"
                              " ms"),
        ("output rate", _fmt(report.get("fps"), 1, 2, " fps")),
        ("frames in / out / dropped", f"{report.get('frames_in', 0)} / {report.get('frames_out', 0)} / "
                                      f"{report.get('dropped', 0)}"),
        ("frames evaluated", str(report.get("frames_evaluated", 0))),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["replay evaluation", "-" * (width + 16)]
    lines += [f"{name:<{width}}  {value:>12s}" for name, value in rows]
    return "\n".join(lines)
