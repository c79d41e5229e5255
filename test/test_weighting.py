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


def test_registry_lists_each_method_once():
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.weighting import WEIGHTINGS, PCGrad, Weighting

    assert list(WEIGHTINGS) == ["equal", "dwa", "uncert", "pcgrad"]
    assert WEIGHTINGS["pcgrad"] is PCGrad and all(issubclass(cls, Weighting) for cls in WEIGHTINGS.values())
    choices = {f.name: f.metadata["choices"] for f in TrainConfig.__dataclass_fields__.values()}
    assert tuple(choices["weighting"]) == tuple(WEIGHTINGS)
    for name in WEIGHTINGS:
        assert build_weighting(name, ["semantic", "depth"]).name == name


def test_pcgrad_projection_matches_the_formula_by_hand():
    from mtan_ros.training.weighting import project_conflicting

    # g1 . g2 = -1 < 0: g1 - (g1.g2)/|g2|^2 g2 = (1, 0) + 1/2 (-1, 1) = (0.5, 0.5);
    #                   g2 - (g2.g1)/|g1|^2 g1 = (-1, 1) + 1 (1, 0) = (0, 1).
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    projected = project_conflicting(grads, torch.Generator().manual_seed(3))
    assert torch.allclose(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.dot(projected[0], grads[1]) == pytest.approx(0.0)  # on the normal plane of the other
    assert torch.dot(projected[1], grads[0]) == pytest.approx(0.0)
    agreeing = torch.tensor([[1.0, 2.0], [3.0, 0.5]])  # no conflict: unchanged
    assert torch.equal(project_conflicting(agreeing), agreeing)


def test_pcgrad_backward_sets_projected_shared_and_own_task_gradients():
    from mtan_ros.training.weighting import PCGrad

    shared = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    head_a, head_b = torch.nn.Parameter(torch.tensor(2.0)), torch.nn.Parameter(torch.tensor(-1.0))
    # Linear losses: d L_a / d shared = (1, 0), d L_b / d shared = (-1, 1) -> conflicting.
    losses = {"a": shared @ torch.tensor([1.0, 0.0]) + 3 * head_a,
              "b": shared @ torch.tensor([-1.0, 1.0]) + 5 * head_b}
    total = PCGrad(["a", "b"]).backward(losses, {"a": 1.0, "b": 1.0}, [shared])
    assert shared.grad.tolist() == pytest.approx([0.5, 1.5])  # (0.5, 0.5) + (0, 1)
    assert (float(head_a.grad), float(head_b.grad)) == (3.0, 5.0)  # task-specific: untouched
    assert float(total) == pytest.approx(float((losses["a"] + losses["b"]).detach()))
    # Without conflict PCGrad is the plain sum, like the default backward.
    shared.grad = None
    losses = {"a": shared @ torch.tensor([1.0, 0.0]), "b": shared @ torch.tensor([1.0, 1.0])}
    PCGrad(["a", "b"]).backward(losses, None, [shared], scale=lambda t: 2 * t)
    assert shared.grad.tolist() == pytest.approx([4.0, 2.0])


def test_default_backward_is_one_pass_over_the_weighted_sum():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    losses = {"semantic": (p ** 2).sum(), "depth": p.sum()}
    total = DynamicWeightAverage(["semantic", "depth"]).backward(losses, {"semantic": 0.5, "depth": 2.0}, [p])
    assert float(total) == pytest.approx(0.5 * 5 + 2 * 3)
    assert p.grad.tolist() == pytest.approx([0.5 * 2 + 2, 0.5 * 4 + 2])


def test_pcgrad_random_order_resumes_from_its_state():
    from mtan_ros.training.weighting import PCGrad

    a = PCGrad(["x", "y", "z"], seed=5)
    torch.randperm(3, generator=a.generator)
    state = weighting_state(a)
    b = build_weighting("pcgrad", ["x", "y", "z"], seed=99)
    load_weighting_state(b, state)
    assert torch.equal(torch.randperm(10, generator=a.generator), torch.randperm(10, generator=b.generator))


def test_shared_parameters_are_those_no_task_owns():
    from mtan_ros.model import build_model
    from mtan_ros.training.weighting import shared_parameters

    tasks = {"semantic": 7, "depth": 1}
    mtan = build_model("mtan", tasks, 0.125)
    shared = {id(p) for p in shared_parameters(mtan, tasks)}
    names = {name for name, p in mtan.named_parameters() if id(p) in shared}
    assert names and all(name.startswith(("backbone.", "encoder_shared.", "decoder_shared.")) for name in names)
    assert not any("heads" in name or "attention" in name for name in names)
    assert shared_parameters(build_model("single", tasks, 0.125), tasks) == []
