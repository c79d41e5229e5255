"""ReplayEvaluator without ROS: its numbers are the training metric code's, on the frames it was given."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mtan_ros.evaluation.replay import REPORT_KEYS, ReplayEvaluator, format_report
from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors

C = 7
SHAPE = (16, 24)


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        gt_labels = rng.integers(0, C, SHAPE).astype(np.uint8)
        gt_labels[rng.random(SHAPE) < 0.1] = 255  # void
        pred_labels = np.where(rng.random(SHAPE) < 0.6, gt_labels % C, rng.integers(0, C, SHAPE)).astype(np.uint8)
        gt_depth = rng.uniform(2, 80, SHAPE).astype(np.float32)
        gt_depth[rng.random(SHAPE) < 0.2] = np.nan  # no ground truth
        pred_depth = (gt_depth * rng.uniform(0.7, 1.3, SHAPE)).astype(np.float32)
        pred_depth[rng.random(SHAPE) < 0.05] = np.nan  # no estimate (beyond max_depth)
        image = rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
        frames.append((image, gt_labels, gt_depth, pred_labels, pred_depth))
    return frames


def _footer_height(ev, width):
    from mtan_ros.evaluation.plots import mosaic_footer

    return mosaic_footer(width, (1.0, 100.0), ev.palette, ev.class_names).shape[0]


def test_metrics_equal_the_training_code_whatever_the_arrival_order():
    frames = _frames(5)
    ev = ReplayEvaluator(C, mosaic_frames=2, expected_frames=5)
    rng = np.random.default_rng(1)
    events = []
    for i, (image, gt_labels, gt_depth, pred_labels, pred_depth) in enumerate(frames):
        stamp = 1000 + i
        t0 = 10.0 + i
        events += [(t0, "in", stamp, image), (t0 + 0.001, "gt_s", stamp, gt_labels),
                   (t0 + 0.002, "gt_d", stamp, gt_depth), (t0 + 0.030 + 0.01 * i, "p_d", stamp, pred_depth),
                   (t0 + 0.040 + 0.01 * i, "p_s", stamp, pred_labels)]
    order = rng.permutation(len(events))  # callbacks of different topics come in any order
    for k in order:
        t, kind, stamp, array = events[k]
        if kind == "in":
            ev.on_input(stamp, t, lambda a=array: a)
        elif kind.startswith("gt"):
            ev.on_ground_truth(stamp, "semantic" if kind == "gt_s" else "depth", array, t)
        else:
            ev.on_prediction(stamp, "semantic" if kind == "p_s" else "depth", array, t)
    cm, de = ConfusionMatrix(C), DepthErrors()
    for _, gt_labels, gt_depth, pred_labels, pred_depth in frames:
        cm.update(pred_labels.astype(np.int64), gt_labels.astype(np.int64))
        de.update(pred_depth, gt_depth)
    report = ev.report()
    assert set(REPORT_KEYS) <= set(report)
    assert report["miou"] == pytest.approx(cm.miou(), abs=1e-12)
    assert report["pixel_accuracy"] == pytest.approx(cm.pixel_accuracy(), abs=1e-12)
    assert report["abs_err_m"] == pytest.approx(de.abs_err(), abs=1e-12)
    assert report["rel_err"] == pytest.approx(de.rel_err(), abs=1e-12)
    assert report["depth_missing_fraction"] == pytest.approx(
        de.missing / sum(int(np.isfinite(f[2]).sum()) for f in frames))
    assert (report["frames_in"], report["frames_out"], report["dropped"], report["frames_evaluated"]) == (5, 5, 0, 5)
    # latency: complete prediction (the later of depth and labels) minus input reception
    expected = [40.0 + 10.0 * i for i in range(5)]
    assert report["latency_ms_p50"] == pytest.approx(np.percentile(expected, 50))
    assert report["latency_ms_p95"] == pytest.approx(np.percentile(expected, 95))
    assert report["fps"] == pytest.approx(4 / (4 + 0.04), rel=1e-6)
    assert ev.complete()
    mosaic = ev.mosaic()
    assert mosaic is not None and mosaic.shape[0] == 2 * (SHAPE[0] + 18 + 4) + _footer_height(ev, mosaic.shape[1])


def test_drops_duplicates_and_missing_inputs():
    frames = _frames(4, seed=3)
    ev = ReplayEvaluator(C, mosaic_frames=0)
    for i, (image, gt_labels, gt_depth, pred_labels, pred_depth) in enumerate(frames):
        ev.on_input(i, float(i))
        ev.on_ground_truth(i, "semantic", gt_labels, float(i))
        ev.on_ground_truth(i, "depth", gt_depth, float(i))
        if i % 2 == 0:  # frames 1 and 3 were dropped by the node
            ev.on_prediction(i, "depth", pred_depth, i + 0.5)
            ev.on_prediction(i, "semantic", pred_labels, i + 0.5)
            ev.on_prediction(i, "semantic", pred_labels, i + 0.7)  # a re-sent frame counts once
    report = ev.report()
    assert (report["frames_in"], report["frames_out"], report["dropped"], report["frames_evaluated"]) == (4, 2, 2, 2)
    assert report["latency_ms_p50"] == pytest.approx(500.0)
    # A missed (best-effort) image: the frame starts with its ground truth, sent together with it.
    image, gt_labels, gt_depth, pred_labels, pred_depth = frames[0]
    missed = ReplayEvaluator(C)
    missed.on_ground_truth(5, "depth", gt_depth, 3.0)
    missed.on_ground_truth(5, "semantic", gt_labels, 3.001)
    missed.on_prediction(5, "depth", pred_depth, 3.02)
    missed.on_prediction(5, "semantic", pred_labels, 3.03)
    report = missed.report()
    assert report["latency_ms_p50"] == pytest.approx(30.0)


def test_bad_predictions_are_reported_clearly():
    ev = ReplayEvaluator(C)
    labels = np.zeros(SHAPE, np.uint8)
    ev.on_ground_truth(1, "semantic", labels, 0.0)
    ev.on_ground_truth(1, "depth", np.ones(SHAPE, np.float32), 0.0)
    ev.on_prediction(1, "depth", np.ones((8, 8), np.float32), 0.1)
    with pytest.raises(ValueError, match="input size"):
        ev.on_prediction(1, "semantic", np.zeros((8, 8), np.uint8), 0.1)
    with pytest.raises(ValueError, match="kind"):
        ev.on_prediction(2, "normal", labels, 0.1)


def test_empty_run_writes_a_report_of_nothing(tmp_path):
    ev = ReplayEvaluator(C)
    paths = ev.write(tmp_path)
    report = json.loads(paths["report"].read_text())
    assert report["frames_in"] == 0 and report["miou"] is None and report["latency_ms_p50"] is None
    assert "mosaic" not in paths
    assert "frames in / out / dropped" in format_report(ev.report())
    assert math.isnan(ev.report()["fps"])


def test_write_report_and_mosaic(tmp_path):
    import cv2

    frames = _frames(3, seed=4)
    ev = ReplayEvaluator(C, mosaic_frames=4)
    for i, (image, gt_labels, gt_depth, pred_labels, pred_depth) in enumerate(frames):
        ev.on_input(i, i * 0.1, image)
        ev.on_ground_truth(i, "semantic", gt_labels, i * 0.1)
        ev.on_ground_truth(i, "depth", gt_depth, i * 0.1)
        ev.on_prediction(i, "semantic", pred_labels, i * 0.1 + 0.02)
        ev.on_prediction(i, "depth", pred_depth, i * 0.1 + 0.02)
    paths = ev.write(tmp_path, info={"bag": "x"})
    report = json.loads(paths["report"].read_text())
    assert report["bag"] == "x" and report["frames_evaluated"] == 3
    assert set(report["iou_per_class"]) == {f"class_{i}" for i in range(C)} or len(report["iou_per_class"]) == C
    mosaic = cv2.imread(str(paths["mosaic"]))
    assert mosaic.shape[0] == 3 * (SHAPE[0] + 18 + 4) + _footer_height(ev, mosaic.shape[1])
    assert mosaic.shape[1] >= 5 * SHAPE[1]
    # the first panel of the first row is the input image
    np.testing.assert_array_equal(mosaic[18:18 + SHAPE[0], :SHAPE[1], ::-1], frames[0][0])


def _feed(ev, frames):
    for i, (image, gt_labels, gt_depth, pred_labels, pred_depth) in enumerate(frames):
        ev.on_input(i, i * 0.1, image)
        ev.on_ground_truth(i, "semantic", gt_labels, i * 0.1)
        ev.on_ground_truth(i, "depth", gt_depth, i * 0.1)
        ev.on_prediction(i, "semantic", pred_labels, i * 0.1 + 0.02)
        ev.on_prediction(i, "depth", pred_depth, i * 0.1 + 0.02)


def test_mosaic_draws_every_depth_panel_on_one_scale():
    """A metre value has one colour in predicted and true depth, in every row, whatever each frame's range."""
    frames = _frames(2, seed=5)
    for k, (_, _, gt_depth, _, pred_depth) in enumerate(frames):
        gt_depth[:] = np.linspace(3 + 20 * k, 40 + 40 * k, gt_depth.size).reshape(SHAPE)  # other ranges per frame
        pred_depth[:] = gt_depth * 1.5
        for depth in (gt_depth, pred_depth):
            depth[:4, :4] = 7.5
            depth[4:8, :4] = 30.0
    ev = ReplayEvaluator(C, mosaic_frames=2)
    _feed(ev, frames)
    mosaic = ev.mosaic()
    row_height, panel_width = SHAPE[0] + 18 + 4, SHAPE[1] + 2

    def block(row, panel, rows):
        top, left = row * row_height + 18, panel * panel_width
        return mosaic[top + rows.start:top + rows.stop, left:left + 4].reshape(-1, 3)

    near = [block(row, panel, range(0, 4)) for row in (0, 1) for panel in (3, 4)]  # predicted, true depth
    far = [block(row, panel, range(4, 8)) for row in (0, 1) for panel in (3, 4)]
    for blocks in (near, far):
        assert all((b == blocks[0][0]).all() for b in blocks)
    assert not np.array_equal(near[0][0], far[0][0])


def test_mosaic_has_a_metre_colour_bar_and_a_class_legend(monkeypatch):
    from mtan_ros.evaluation import plots

    written = []
    real_put_text = plots._put_text
    monkeypatch.setattr(plots, "_put_text", lambda canvas, text, *a, **k: (written.append(text),
                                                                           real_put_text(canvas, text, *a, **k)))
    names = ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]
    ev = ReplayEvaluator(C, class_names=names, mosaic_frames=1)
    frames = _frames(1, seed=6)
    frames[0][2][:] = np.linspace(2.0, 60.0, frames[0][2].size).reshape(SHAPE)  # true depth from 2 to 60 m
    _feed(ev, frames)
    mosaic = ev.mosaic()
    assert all(name in written for name in names) and "void / none" in written
    assert any(text.startswith("depth in metres") for text in written)
    ticks = [float(text) for text in written if text.replace(".", "").isdigit()]
    assert len(ticks) >= 3 and min(ticks) < 5 and max(ticks) > 50  # the robust 2nd-98th percentile range
    legend = mosaic[SHAPE[0] + 18 + 4:]  # below the one row: colour bar and legend
    for colour in ev.palette:  # every class's colour is shown as a swatch
        assert (legend == colour).all(axis=-1).sum() >= 50
