"""Task losses: ignore index, zero-depth pixels, normals, and the task dispatch."""
import math

import pytest
import torch
import torch.nn.functional as F

from mtan_ros.training.losses import depth_loss, normal_loss, semantic_loss, task_losses


def test_semantic_loss_ignores_void_pixels():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 4, (2, 3, 5), generator=torch.Generator().manual_seed(1))
    target[0, 0, :] = -1
    target[1, 2, 1] = 255  # outside [0, C): void as well
    keep = (target >= 0) & (target < 4)
    log_probs = F.log_softmax(logits, 1).permute(0, 2, 3, 1)[keep]
    expected = -log_probs.gather(1, target[keep][:, None]).mean()
    assert float(semantic_loss(logits, target)) == pytest.approx(float(expected), rel=1e-6)
    # Changing logits at void pixels changes nothing.
    logits2 = logits.clone()
    logits2[0, :, 0, :] += 100
    assert float(semantic_loss(logits2, target)) == pytest.approx(float(expected), rel=1e-6)


def test_semantic_loss_all_void_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = semantic_loss(logits, torch.full((1, 2, 2), -1))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_depth_loss_uses_only_nonzero_targets():
    pred = torch.tensor([[[[1.0, 5.0], [2.0, 7.0]]]], requires_grad=True)
    target = torch.tensor([[[[2.0, 0.0], [2.5, 0.0]]]])
    loss = depth_loss(pred, target)
    assert float(loss.detach()) == pytest.approx((1.0 + 0.5) / 2)
    loss.backward()
    assert pred.grad[0, 0].tolist() == [[-0.5, 0.0], [-0.5, 0.0]]
    assert float(depth_loss(pred, target[:, 0]).detach()) == pytest.approx(0.75)  # N×H×W target
    assert float(depth_loss(pred, torch.zeros_like(target)).detach()) == 0.0
    nan_target = target.clone()
    nan_target[0, 0, 0, 1] = math.nan  # a NaN would poison the loss; it is treated as invalid
    assert float(depth_loss(pred, nan_target).detach()) == pytest.approx(0.75)


def test_normal_loss_is_one_minus_mean_cosine_over_valid_pixels():
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, 2] = 1.0
    target = torch.zeros(1, 3, 1, 3)
    target[0, 2, 0, 0] = 1.0   # cos 1
    target[0, 0, 0, 1] = 1.0   # cos 0
    # third pixel invalid
    assert float(normal_loss(pred, target)) == pytest.approx(1 - 0.5)


def test_task_losses_dispatch_by_task_name():
    outputs = {"semantic": torch.zeros(1, 2, 2, 2), "depth": torch.ones(1, 1, 2, 2)}
    batch = {"semantic": torch.zeros(1, 2, 2, dtype=torch.long), "depth": torch.full((1, 1, 2, 2), 3.0),
             "image": torch.zeros(1, 3, 2, 2)}
    losses = task_losses(outputs, batch)
    assert set(losses) == {"semantic", "depth"}
    assert float(losses["semantic"]) == pytest.approx(math.log(2))
    assert float(losses["depth"]) == pytest.approx(2.0)
    with pytest.raises(KeyError, match="no ground truth for task 'depth'"):
        task_losses(outputs, {"semantic": batch["semantic"]})
    with pytest.raises(KeyError, match="no loss for task"):
        task_losses({"edges": torch.zeros(1)}, batch)


def test_losses_are_float32_under_bf16_outputs():
    logits = torch.randn(1, 3, 4, 4).bfloat16()
    assert semantic_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long)).dtype == torch.float32
    assert depth_loss(torch.ones(1, 1, 4, 4).bfloat16(), torch.ones(1, 1, 4, 4)).dtype == torch.float32
