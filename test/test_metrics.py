"""Metrics against hand-computed cases (reference definitions, see mtan_ros.evaluation.metrics)."""
import math

import numpy as np
import pytest
import torch

from mtan_ros.evaluation.metrics import ConfusionMatrix, DepthErrors, depth_errors, normal_errors


def test_confusion_matrix_hand_case_with_void_and_out_of_range_targets():
    # 3 classes; targets -1 and 255 are void and must not count.
    target = torch.tensor([[0, 0, 1, 1], [2, 2, -1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    expected = torch.tensor([[1, 1, 0],   # gt 0: one right, one as 1
                             [0, 2, 0],   # gt 1: both right
                             [1, 0, 1]])  # gt 2: one right, one as 0
    assert torch.equal(cm.mat, expected)
    assert cm.total == 6
    # IoU: c0 = 1 / (2 + 2 - 1) = 1/3; c1 = 2 / (2 + 3 - 2) = 2/3; c2 = 1 / (2 + 1 - 1) = 1/2
    assert torch.allclose(cm.iou_per_class(), torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    # 4 classes, class 3 in neither prediction nor target: IoU NaN, mIoU over the other three.
    target = np.array([0, 1, 2, 2])
    pred = np.array([0, 1, 2, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)  # numpy arrays are accepted as well
    iou = cm.iou_per_class()
    assert math.isnan(float(iou[3]))
    assert iou[:3].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert cm.miou() == pytest.approx(2 / 3)
    # A class only predicted (never in the target) counts, with IoU 0.
    cm2 = ConfusionMatrix(4)
    cm2.update(torch.tensor([3, 0]), torch.tensor([0, 0]))
    assert cm2.iou_per_class().tolist()[:1] == [0.5] and cm2.iou_per_class()[3] == 0
    assert cm2.miou() == pytest.approx(0.25)


def test_whole_split_accumulation_and_merge_equal_one_big_update():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 5, (6, 8, 10), generator=gen)
    pred = torch.randint(0, 5, (6, 8, 10), generator=gen)
    whole = ConfusionMatrix(5)
    whole.update(pred, target)
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    for i in range(3):
        a.update(pred[i], target[i])
    for i in range(3, 6):
        b.update(pred[i], target[i])
    assert torch.equal(a.merge(b).mat, whole.mat)
    assert a.miou() == whole.miou()
    a.reset()
    assert a.total == 0 and math.isnan(a.miou()) and math.isnan(a.pixel_accuracy())


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="argmax"):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cm.update(torch.tensor([5]), torch.tensor([1]))
    cm.update(torch.tensor([5]), torch.tensor([-1]))  # a void pixel's prediction does not matter


def test_depth_errors_hand_case_ignores_zero_targets():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 9.0]]]])
    target = torch.tensor([[[[2.0, 2.0], [1.0, 0.0]]]])  # last pixel has no ground truth
    abs_err, rel_err = depth_errors(pred, target)
    assert abs_err == pytest.approx((1 + 0 + 2) / 3)
    assert rel_err == pytest.approx((0.5 + 0 + 2.0) / 3)
    # N×H×W targets against N×1×H×W predictions also work.
    assert depth_errors(pred, target[:, 0]) == pytest.approx((abs_err, rel_err))
    assert all(math.isnan(v) for v in depth_errors(pred, torch.zeros_like(pred)))


def test_depth_accumulator_is_pixel_weighted_over_the_split():
    acc = DepthErrors()
    acc.update(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([2.0, 2.0, 2.0]))  # 3 pixels, |err| 1
    acc.update(torch.tensor([4.0, 0.0]), torch.tensor([1.0, 0.0]))            # 1 valid pixel, |err| 3
    assert acc.count == 3 + 1
    assert acc.abs_err() == pytest.approx((3 * 1 + 3) / 4)   # not the batch mean (1 + 3) / 2
    assert acc.rel_err() == pytest.approx((3 * 0.5 + 3.0) / 4)
    other = DepthErrors()
    other.update(torch.tensor([2.0]), torch.tensor([1.0]))
    acc.merge(other)
    assert acc.count == 5 and acc.abs_err() == pytest.approx((3 + 3 + 1) / 5)


def test_depth_accumulator_counts_missing_predictions_separately():
    acc = DepthErrors()
    # Metres: NaN ground truth = none; NaN prediction = no estimate (left out, counted as missing).
    acc.update(np.array([1.0, np.nan, 5.0, 3.0]), np.array([2.0, 4.0, np.nan, 3.0]))
    assert acc.count == 2 and acc.missing == 1
    assert acc.abs_err() == pytest.approx(0.5)


def test_normal_errors_hand_case():
    pred = torch.zeros(1, 3, 1, 3)
    target = torch.zeros(1, 3, 1, 3)
    pred[0, 2] = 1.0                    # all predictions point along z
    target[0, 2, 0, 0] = 1.0            # 0 degrees
    target[0, 0, 0, 1] = 1.0            # 90 degrees
    # third pixel has a zero normal: ignored
    errors = normal_errors(pred, target)
    assert errors["mean"] == pytest.approx(45.0)
    assert errors["median"] == pytest.approx(45.0)
    assert errors["within_11.25"] == pytest.approx(0.5)


def test_per_image_definition_hand_case_and_difference_from_whole_split():
    from mtan_ros.evaluation.metrics import PerImageSegmentation

    # Image 1: classes 0 and 1, all right -> mIoU 1, acc 1.
    # Image 2: gt all 0; prediction half 0, half 2 -> IoU(0) = 2/4, IoU(2) = 0/2, mIoU 0.25, acc 0.5;
    # a void pixel predicted as 1 does not create a union for class 1.
    target = torch.tensor([[[0, 0, 1, 1, -1]], [[0, 0, 0, 0, -1]]])
    pred = torch.tensor([[[0, 0, 1, 1, 2]], [[0, 0, 2, 2, 1]]])
    per_image = PerImageSegmentation(3)
    per_image.update(pred, target)
    assert per_image.images == 2
    assert per_image.miou() == pytest.approx((1.0 + 0.25) / 2)
    assert per_image.pixel_accuracy() == pytest.approx((1.0 + 0.5) / 2)
    whole = ConfusionMatrix(3)
    whole.update(pred, target)
    # whole split: IoU(0) = 4/6, IoU(1) = 2/2, IoU(2) = 0/2 -> 5/9; accuracy 6/8
    assert whole.miou() == pytest.approx((4 / 6 + 1 + 0) / 3)
    assert whole.pixel_accuracy() == pytest.approx(6 / 8)
    # an image with no labelled pixel is skipped
    per_image.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), -1))
    assert per_image.images == 2
