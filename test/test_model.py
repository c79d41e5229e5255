"""Model architectures: sizes against the reference, output conventions, input checks."""

from __future__ import annotations

import pytest
import torch

from mtan_ros.model import ARCHITECTURES, SegNetMTAN, SegNetSingle, SegNetSplit, build_model

NYU_TASKS = {"semantic": 13, "depth": 1, "normal": 3}
TASK_SETS = [
    {"semantic": 7},
    {"semantic": 7, "depth": 1},
    {"semantic": 5, "depth": 1, "normal": 3},
    {"depth": 1, "edges": 2},
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def calibrate_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Set BN statistics from one batch, then switch to eval.

    With the initial statistics (mean 0, variance 1) a random network's
    outputs shrink to ~1e-6, which makes precision comparisons meaningless.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    model.eval()


# Parameter counts printed by the reference code (count_parameters: all trainable
# parameters). Its MTAN figure includes `logsigma`, one uncertainty-weighting
# scalar per task; our models leave those to training, hence the "+ 3".
REFERENCE_MTAN_PARAMS = 44_229_076
REFERENCE_SINGLE_SEMANTIC_PARAMS = 24_981_069


def test_mtan_parameter_count_matches_reference():
    model = SegNetMTAN(NYU_TASKS)
    assert n_params(model) == 44_229_073
    assert n_params(model) + len(NYU_TASKS) == REFERENCE_MTAN_PARAMS


def test_single_task_segnet_parameter_count_matches_reference():
    assert n_params(SegNetSingle({"semantic": 13})) == REFERENCE_SINGLE_SEMANTIC_PARAMS


@pytest.mark.slow
def test_baseline_parameter_counts():
    # Split: one shared SegNet + three heads (the reference's 25,055,188 less its 3 logsigma).
    assert n_params(SegNetSplit(NYU_TASKS)) == 25_055_185
    # Single: three independent networks, one per task.
    singles = sum(n_params(SegNetSingle({k: v})) for k, v in NYU_TASKS.items())
    assert n_params(SegNetSingle(NYU_TASKS)) == singles == 24_981_069 + 24_980_289 + 24_980_419


def test_width_scales_channels():
    model = SegNetMTAN({"semantic": 7, "depth": 1}, width=0.25)
    assert model.backbone.channels == (16, 32, 64, 128, 128)
    assert SegNetMTAN({"depth": 1}, width=0.001).backbone.channels == (1, 1, 1, 1, 1)
    assert n_params(SegNetMTAN(NYU_TASKS, width=0.5)) < n_params(SegNetMTAN(NYU_TASKS)) / 3


def test_init_follows_reference():
    model = SegNetMTAN({"semantic": 3, "depth": 1}, width=0.125)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert convs and bns
    assert all(torch.all(c.bias == 0) for c in convs)
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    # Xavier normal: std = sqrt(2 / (fan_in + fan_out)); check on the largest conv.
    big = max(convs, key=lambda c: c.weight.numel())
    fan_in = big.weight[0].numel()
    fan_out = big.weight.shape[0] * big.weight[0, 0].numel()
    expected = (2.0 / (fan_in + fan_out)) ** 0.5
    assert big.weight.std().item() == pytest.approx(expected, rel=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("tasks", TASK_SETS, ids=lambda t: "-".join(t))
def test_outputs_keys_shapes_dtypes(arch, tasks):
    torch.manual_seed(0)
    model = build_model(arch, tasks, width=0.125).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    assert list(out) == list(tasks)
    for name, channels in tasks.items():
        assert out[name].shape == (2, channels, 64, 96)
        assert out[name].dtype == torch.float32
        assert torch.isfinite(out[name]).all()
    if "normal" in out:
        norms = out["normal"].norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    if "semantic" in out:
        # Raw logits, not log-probabilities: exp does not sum to one.
        prob_sums = out["semantic"].exp().sum(dim=1)
        assert not torch.allclose(prob_sums, torch.ones(2, 64, 96), atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_mode_backward_reaches_every_parameter(arch):
    model = build_model(arch, {"semantic": 4, "depth": 1, "normal": 3}, width=0.125).train()
    out = model(torch.rand(2, 3, 32, 64))
    sum(v.square().mean() for v in out.values()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)
    ]
    assert missing == []


@pytest.mark.slow
def test_tasks_are_independent_heads():
    torch.manual_seed(0)
    model = SegNetMTAN({"semantic": 4, "depth": 1}, width=0.125).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for p in model.decoder_attention["depth"].parameters():
            p.add_(0.5)
        after = model(x)
    assert torch.equal(before["semantic"], after["semantic"])
    assert not torch.allclose(before["depth"], after["depth"])


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 3, 64, 100), (1, 3, 31, 32)])
def test_input_not_multiple_of_32_is_rejected(arch, shape):
    model = build_model(arch, {"semantic": 3}, width=0.125)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(*shape))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 32, 32), (1, 4, 32, 32)])
def test_input_not_rgb_batch_is_rejected(shape):
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        SegNetMTAN({"depth": 1}, width=0.125)(torch.rand(*shape))


@pytest.mark.parametrize(
    "tasks",
    [
        {}, {"semantic": 0}, {"semantic": 2.0}, {"semantic": True},
        {"a.b": 2}, {"": 1}, {"depth": 2}, {"normal": 1},
    ],
    ids=repr,
)
def test_bad_tasks_are_rejected(tasks):
    with pytest.raises(ValueError):
        SegNetMTAN(tasks, width=0.125)


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf")])
def test_bad_width_is_rejected(width):
    with pytest.raises(ValueError, match="width"):
        SegNetMTAN({"depth": 1}, width=width)


def test_build_model_by_name():
    assert ARCHITECTURES == ("mtan", "split", "single")
    for arch, cls in zip(ARCHITECTURES, (SegNetMTAN, SegNetSplit, SegNetSingle)):
        model = build_model(arch, {"semantic": 7, "depth": 1}, 0.125)
        assert type(model) is cls
        assert model.tasks == {"semantic": 7, "depth": 1} and model.width == 0.125
    with pytest.raises(ValueError, match="mtan, split, single"):
        build_model("segformer", {"semantic": 7})


@pytest.mark.slow
def test_channels_last_matches_and_bf16_autocast_runs():
    torch.manual_seed(0)
    model = SegNetMTAN({"semantic": 4, "depth": 1, "normal": 3}, width=0.125)
    calibrate_batch_norm(model, torch.rand(4, 3, 64, 64))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x.to(memory_format=torch.channels_last))
    for name in ref:
        assert torch.allclose(cl[name], ref[name], atol=1e-3), name  # float rounding only
        assert half[name].shape == ref[name].shape
        assert half[name].dtype == torch.bfloat16
        assert torch.isfinite(half[name]).all()
    # Values are not compared: a random network amplifies bf16 rounding (and
    # the max-pooling ties it flips) far more than a trained one does.
    norms = half["normal"].float().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-2)
