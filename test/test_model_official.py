"""Loading the reference SegNet-MTAN's weights gives the reference's outputs.

The reference network (lorenmt/mtan, im2im_pred/model_segnet_mtan.py: tasks
semantic-13, depth, normal) is described here from scratch twice: its
state-dict layout (key names and shapes) and its forward pass written with
torch.nn.functional on that state dict. Our model, loaded from a random
state dict of that layout, must reproduce the functional forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtan_ros.model import SegNetMTAN, load_official_state_dict

CHANNELS = [64, 128, 256, 512, 512]
OUTPUTS = [13, 1, 3]  # task1 semantic, task2 depth, task3 normal
NYU_TASKS = {"semantic": 13, "depth": 1, "normal": 3}


# ---------------------------------------------------------------- layout

def _conv_bn(shapes: dict, prefix: str, cin: int, cout: int, k=3, conv="0", bn="1") -> None:
    shapes[f"{prefix}.{conv}.weight"] = (cout, cin, k, k)
    shapes[f"{prefix}.{conv}.bias"] = (cout,)
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{bn}.{leaf}"] = (cout,)
    shapes[f"{prefix}.{bn}.num_batches_tracked"] = ()


def _attention(shapes: dict, prefix: str, cin: int, cout: int) -> None:
    # Sequential: 0 conv1x1, 1 BN, 2 ReLU, 3 conv1x1, 4 BN, 5 sigmoid.
    _conv_bn(shapes, prefix, cin, cout, k=1, conv="0", bn="1")
    _conv_bn(shapes, prefix, cout, cout, k=1, conv="3", bn="4")


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference model's state dict."""
    c = CHANNELS
    s: dict[str, tuple[int, ...]] = {"logsigma": (3,)}
    for lvl in range(5):
        _conv_bn(s, f"encoder_block.{lvl}", 3 if lvl == 0 else c[lvl - 1], c[lvl])
        _conv_bn(s, f"decoder_block.{lvl}", c[lvl], c[max(lvl - 1, 0)])
        # Convs after the first one: one bare block at levels 0-1, two wrapped ones deeper.
        for name, width in (("conv_block_enc", c[lvl]), ("conv_block_dec", c[max(lvl - 1, 0)])):
            if lvl < 2:
                _conv_bn(s, f"{name}.{lvl}", width, width)
            else:
                for r in range(2):
                    _conv_bn(s, f"{name}.{lvl}.{r}", width, width)
        _conv_bn(s, f"encoder_block_att.{lvl}", c[lvl], c[min(lvl + 1, 4)])
        _conv_bn(s, f"decoder_block_att.{lvl}", c[lvl], c[lvl] if lvl == 4 else c[max(lvl - 1, 0)])
        for t in range(3):
            _attention(s, f"encoder_att.{t}.{lvl}", c[0] if lvl == 0 else 2 * c[lvl], c[lvl])
            below = c[max(lvl - 1, 0)]
            _attention(s, f"decoder_att.{t}.{lvl}", c[lvl] + below, below)
    for t, n_out in enumerate(OUTPUTS):
        s[f"pred_task{t + 1}.0.weight"] = (c[0], c[0], 3, 3)
        s[f"pred_task{t + 1}.0.bias"] = (c[0],)
        s[f"pred_task{t + 1}.1.weight"] = (n_out, c[0], 1, 1)
        s[f"pred_task{t + 1}.1.bias"] = (n_out,)
    return s


def random_reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a sensible scale; BN statistics random, variances positive."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in reference_shapes().items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) * 1.5 + 0.5
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif key.endswith(".weight") and "pred_task" not in key:  # BN scale
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # biases, BN shifts and means, logsigma
            sd[key] = 0.1 * torch.randn(shape, generator=g)
    return sd


# ------------------------------------------------- functional reference forward

def _cbr(sd, p, x, pad=1, conv="0", bn="1", act=F.relu):
    x = F.conv2d(x, sd[f"{p}.{conv}.weight"], sd[f"{p}.{conv}.bias"], padding=pad)
    x = F.batch_norm(
        x, sd[f"{p}.{bn}.running_mean"], sd[f"{p}.{bn}.running_var"],
        sd[f"{p}.{bn}.weight"], sd[f"{p}.{bn}.bias"], training=False, eps=1e-5,
    )
    return act(x)


def _extra_convs(sd, p, x):
    if f"{p}.0.weight" in sd:  # one bare conv block
        return _cbr(sd, p, x)
    return _cbr(sd, f"{p}.1", _cbr(sd, f"{p}.0", x))


def _mask(sd, p, x):
    return _cbr(sd, p, _cbr(sd, p, x, pad=0), pad=0, conv="3", bn="4", act=torch.sigmoid)


def _head(sd, p, x):
    x = F.conv2d(x, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"], padding=1)
    return F.conv2d(x, sd[f"{p}.1.weight"], sd[f"{p}.1.bias"])


def functional_reference(sd, x):
    """The reference forward in eval mode: (log-probabilities, depth, unit normals)."""
    enc_first, enc_out, indices = [], [], []
    h = x
    for lvl in range(5):
        first = _cbr(sd, f"encoder_block.{lvl}", h)
        out = _extra_convs(sd, f"conv_block_enc.{lvl}", first)
        enc_first.append(first)
        enc_out.append(out)
        h, idx = F.max_pool2d(out, kernel_size=2, stride=2, return_indices=True)
        indices.append(idx)
    dec_up, dec_out = {}, {}
    for lvl in reversed(range(5)):
        dec_up[lvl] = F.max_unpool2d(h, indices[lvl], kernel_size=2, stride=2)
        h = _cbr(sd, f"decoder_block.{lvl}", dec_up[lvl])
        h = _extra_convs(sd, f"conv_block_dec.{lvl}", h)
        dec_out[lvl] = h
    preds = []
    for t in range(3):
        a = None
        for lvl in range(5):
            inp = enc_first[lvl] if lvl == 0 else torch.cat((enc_first[lvl], a), dim=1)
            gated = _mask(sd, f"encoder_att.{t}.{lvl}", inp) * enc_out[lvl]
            a = F.max_pool2d(_cbr(sd, f"encoder_block_att.{lvl}", gated), kernel_size=2, stride=2)
        for lvl in reversed(range(5)):
            a = F.interpolate(a, scale_factor=2, mode="bilinear", align_corners=True)
            a = _cbr(sd, f"decoder_block_att.{lvl}", a)
            mask = _mask(sd, f"decoder_att.{t}.{lvl}", torch.cat((dec_up[lvl], a), dim=1))
            a = mask * dec_out[lvl]
        preds.append(_head(sd, f"pred_task{t + 1}", a))
    normal = preds[2] / torch.norm(preds[2], p=2, dim=1, keepdim=True)
    return F.log_softmax(preds[0], dim=1), preds[1], normal


# ---------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def reference_sd():
    return random_reference_state_dict()


@pytest.fixture(scope="module")
def loaded(reference_sd):
    return load_official_state_dict(SegNetMTAN(NYU_TASKS).eval(), reference_sd)


def test_reference_layout_has_the_published_parameter_count():
    # The reference prints count_parameters (every trainable tensor, logsigma included).
    shapes = reference_shapes()
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    trainable = {k: v for k, v in shapes.items() if not k.endswith(buffers)}
    total = sum(torch.Size(v).numel() for v in trainable.values())
    assert total == 44_229_076
    ours = sum(p.numel() for p in SegNetMTAN(NYU_TASKS).parameters())
    assert ours == total - shapes["logsigma"][0]


@pytest.mark.slow
def test_loaded_model_reproduces_reference_forward(loaded, reference_sd):
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = loaded(x)
        log_probs, depth, normal = functional_reference(reference_sd, x)
    assert depth.std() > 1e-2  # a meaningful comparison, not of near-zero maps
    assert torch.allclose(F.log_softmax(ours["semantic"], dim=1), log_probs, rtol=0, atol=1e-4)
    assert torch.allclose(ours["depth"], depth, rtol=0, atol=1e-4)
    assert torch.allclose(ours["normal"], normal, rtol=0, atol=1e-4)


def test_loading_copies_every_value(loaded, reference_sd):
    ours = loaded.state_dict()
    assert torch.equal(ours["heads.semantic.output.weight"], reference_sd["pred_task1.1.weight"])
    pairs = {
        "backbone.decoder.0.first.bn.running_var": "decoder_block.4.1.running_var",
        "backbone.encoder.3.rest.1.conv.weight": "conv_block_enc.3.1.0.weight",
        "decoder_shared.0.conv.bias": "decoder_block_att.4.0.bias",
        "decoder_attention.normal.4.conv2.weight": "decoder_att.2.0.3.weight",
    }
    for our_key, ref_key in pairs.items():
        assert torch.equal(ours[our_key], reference_sd[ref_key]), our_key
    assert ours["backbone.encoder.0.first.bn.num_batches_tracked"].item() == 7
    n_tensors = sum(1 for k in reference_sd if k != "logsigma")
    assert len(ours) == n_tensors


@pytest.mark.slow
def test_data_parallel_prefix_and_task_order_are_handled(loaded, reference_sd):
    wrapped = {f"module.{k}": v for k, v in reference_sd.items()}
    reordered = SegNetMTAN({"normal": 3, "depth": 1, "semantic": 13})
    model = load_official_state_dict(reordered, wrapped)
    for key, value in loaded.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def _load_error(sd, tasks=NYU_TASKS, width=1.0) -> str:
    with pytest.raises(ValueError) as info:
        load_official_state_dict(SegNetMTAN(tasks, width), sd)
    return str(info.value)


def test_missing_key_is_reported(reference_sd):
    sd = dict(reference_sd)
    del sd["encoder_att.1.3.0.weight"]
    msg = _load_error(sd)
    assert "missing keys (1): encoder_att.1.3.0.weight" in msg
    assert "unexpected" not in msg and "wrong shapes" not in msg


def test_unexpected_key_is_reported(reference_sd):
    sd = dict(reference_sd, **{"encoder_att.3.0.0.weight": torch.zeros(64, 64, 1, 1)})
    msg = _load_error(sd)
    assert "unexpected keys (1): encoder_att.3.0.0.weight" in msg
    assert "missing" not in msg


def test_wrong_shape_is_reported(reference_sd):
    sd = dict(reference_sd, **{"pred_task2.1.weight": torch.zeros(2, 64, 1, 1)})
    msg = _load_error(sd)
    assert "wrong shapes (1): pred_task2.1.weight (2, 64, 1, 1) != expected (1, 64, 1, 1)" in msg


def test_every_problem_is_listed_at_once(reference_sd):
    sd = dict(reference_sd, extra=torch.zeros(1))
    del sd["pred_task3.0.bias"]
    sd["decoder_block_att.2.0.weight"] = torch.zeros(3)
    msg = _load_error(sd)
    assert "missing keys (1)" in msg and "unexpected keys (1)" in msg and "wrong shapes (1)" in msg


def test_wrong_width_or_tasks_is_refused(reference_sd):
    assert "wrong shapes" in _load_error(reference_sd, width=0.5)
    assert "exactly those tasks" in _load_error(reference_sd, tasks={"semantic": 13, "depth": 1})


def test_nothing_is_loaded_when_refused(reference_sd):
    model = SegNetMTAN(NYU_TASKS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = dict(reference_sd)
    del sd["pred_task1.0.weight"]
    with pytest.raises(ValueError):
        load_official_state_dict(model, sd)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bn_counters_may_be_absent(reference_sd):
    sd = {k: v for k, v in reference_sd.items() if not k.endswith("num_batches_tracked")}
    model = load_official_state_dict(SegNetMTAN(NYU_TASKS), sd)
    bias = model.state_dict()["heads.depth.output.bias"]
    assert torch.equal(bias, reference_sd["pred_task2.1.bias"])
