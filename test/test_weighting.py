"""Task weighting against the paper's formulas on a hand-made loss history."""
import math

import pytest
import torch

from mtan_ros.training.weighting import (DynamicWeightAverage, EqualWeighting, UncertaintyWeighting,
                                         build_weighting, load_weighting_state, weighting_state)

HISTORY = {"semantic": [2.0, 1.0, 0.9, 0.3], "depth": [0.5, 0.4, 0.4, 0.2]}


def test_equal_weighting():
    w = EqualWeighting(["semantic", "depth"])
    assert w.weights(5, HISTORY) == {"semantic": 1.0, "depth": 1.0}
    total = w.combine({"semantic": torch.tensor(2.0), "depth": torch.tensor(0.5)}, w.weights(0))
    assert float(total) == pytest.approx(2.5)


def test_dwa_is_one_for_the_first_two_epochs():
    w = DynamicWeightAverage(["semantic", "depth"], temperature=2.0)
    assert w.weights(0, {}) == {"semantic": 1.0, "depth": 1.0}
    assert w.weights(1, {"semantic": [2.0], "depth": [0.5]}) == {"semantic": 1.0, "depth": 1.0}


@pytest.mark.parametrize("epoch", [2, 3, 4])
@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_dwa_matches_formula(epoch, temperature):
    # lambda_k = K exp(w_k / T) / sum_i exp(w_i / T), w_k = L_k(t-1) / L_k(t-2)
    w = DynamicWeightAverage(["semantic", "depth"], temperature=temperature)
    r_sem = HISTORY["semantic"][epoch - 1] / HISTORY["semantic"][epoch - 2]
    r_dep = HISTORY["depth"][epoch - 1] / HISTORY["depth"][epoch - 2]
    denom = math.exp(r_sem / temperature) + math.exp(r_dep / temperature)
    expected = {"semantic": 2 * math.exp(r_sem / temperature) / denom,
                "depth": 2 * math.exp(r_dep / temperature) / denom}
    got = w.weights(epoch, HISTORY)
    assert got == pytest.approx(expected, rel=1e-12)
    assert sum(got.values()) == pytest.approx(2.0)


def test_dwa_hand_numbers_and_direction():
    # Epoch 2: semantic ratio 1.0/2.0 = 0.5 (falling fast), depth 0.4/0.5 = 0.8 -> depth gets more weight.
    got = DynamicWeightAverage(["semantic", "depth"]).weights(2, HISTORY)
    assert got["semantic"] == pytest.approx(2 / (1 + math.exp(0.15)))
    assert got["depth"] == pytest.approx(2 * math.exp(0.15) / (1 + math.exp(0.15)))
    assert got["depth"] > 1 > got["semantic"]
    three = DynamicWeightAverage(["a", "b", "c"]).weights(2, {"a": [1, 1], "b": [1, 1], "c": [1, 1]})
    assert three == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})


def test_dwa_errors_are_clear():
    w = DynamicWeightAverage(["semantic", "depth"])
    with pytest.raises(ValueError, match="history holds 1 epochs"):
        w.weights(2, {"semantic": [1.0], "depth": [1.0]})
    with pytest.raises(ValueError, match="positive"):
        DynamicWeightAverage(["a"], temperature=0)
    with pytest.raises(ValueError, match="not a finite"):
        w.weights(2, {"semantic": [0.0, 1.0], "depth": [1.0, 1.0]})


def test_uncertainty_weighting_formula_and_gradient():
    w = UncertaintyWeighting(["semantic", "depth"])
    assert w.log_vars.tolist() == [-0.5, -0.5]  # reference initialisation
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.3, -1.2]))
    losses = {"semantic": torch.tensor(2.0), "depth": torch.tensor(0.25)}
    total = w.combine(losses)
    expected = (math.exp(-0.3) / 2 * 2.0 + 0.3 / 2) + (math.exp(1.2) / 2 * 0.25 - 1.2 / 2)
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    # d/ds [exp(-s)/2 L + s/2] = -exp(-s)/2 L + 1/2
    assert w.log_vars.grad.tolist() == pytest.approx([-math.exp(-0.3) + 0.5, -math.exp(1.2) / 8 + 0.5], rel=1e-6)
    assert w.weights() == pytest.approx({"semantic": math.exp(-0.3) / 2, "depth": math.exp(1.2) / 2}, rel=1e-6)


def test_weighting_state_round_trip_and_mismatch():
    w = build_weighting("uncert", ["semantic", "depth"])
    with torch.no_grad():
        w.log_vars.add_(0.7)
    state = weighting_state(w)
    fresh = build_weighting("uncert", ["semantic", "depth"])
    load_weighting_state(fresh, state)
    assert torch.equal(fresh.log_vars, w.log_vars)
    with pytest.raises(ValueError, match="saved weighting is 'uncert'"):
        load_weighting_state(build_weighting("dwa", ["semantic", "depth"]), state)
    load_weighting_state(build_weighting("dwa", ["a"]), weighting_state(build_weighting("dwa", ["a"])))
    with pytest.raises(ValueError, match="choose one of"):
        build_weighting("gradnorm", ["a"])
