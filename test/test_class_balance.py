"""Median frequency class weights and the weighted semantic loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtan_ros.training.class_balance import class_frequencies, median_frequency_weights
from mtan_ros.training.losses import semantic_loss, task_losses


def labels(*rows):
    return {"semantic": torch.tensor(rows, dtype=torch.int64)}


def test_frequencies_count_labelled_pixels_only():
    dataset = [labels([0, 0, 1, -1]), labels([2, 0, 255, 1])]  # -1 and 255 are void for 3 classes
    freq = class_frequencies(dataset, 3)
    np.testing.assert_allclose(freq, [3 / 6, 2 / 6, 1 / 6])


def test_frequencies_sample_images_evenly_when_capped():
    dataset = [labels([i % 3]) for i in range(9)]  # classes 0,1,2,0,1,2,...
    freq = class_frequencies(dataset, 3, max_images=3)  # images 0, 4, 8 -> classes 0, 1, 2
    np.testing.assert_allclose(freq, [1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_frequencies([labels([-1, -1])], 3)


def test_median_frequency_weights():
    weights = median_frequency_weights([0.5, 0.3, 0.2, 0.0])
    np.testing.assert_allclose(weights, [0.6, 1.0, 1.5, 1.0])  # median of present = 0.3; absent class: 1


def test_weighted_semantic_loss_is_the_weighted_mean_over_labelled_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=gen)
    target = torch.randint(0, 3, (2, 4, 5), generator=gen)
    target[0, 0, :] = -1
    weights = torch.tensor([0.5, 2.0, 4.0])
    keep = target >= 0
    nll = -F.log_softmax(logits, 1).permute(0, 2, 3, 1)[keep].gather(1, target[keep][:, None]).squeeze(1)
    w = weights[target[keep]]
    expected = (w * nll).sum() / w.sum()
    assert float(semantic_loss(logits, target, weights)) == pytest.approx(float(expected), rel=1e-6)
    unweighted = float(semantic_loss(logits, target))
    assert float(semantic_loss(logits, target, torch.ones(3))) == pytest.approx(unweighted, rel=1e-6)
    only_class_0 = torch.tensor([1.0, 0.0, 0.0])
    mask = target == 0
    nll0 = -F.log_softmax(logits, 1).permute(0, 2, 3, 1)[mask][:, 0].mean()
    assert float(semantic_loss(logits, target, only_class_0)) == pytest.approx(float(nll0), rel=1e-6)
    losses = task_losses({"semantic": logits}, {"semantic": target}, weights)
    assert float(losses["semantic"]) == pytest.approx(float(expected), rel=1e-6)


def test_weighted_loss_of_an_all_void_batch_is_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = semantic_loss(logits, torch.full((1, 2, 2), -1), torch.tensor([1.0, 5.0, 9.0]))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)
