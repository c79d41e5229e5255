"""mtan-train and mtan-eval end to end on tiny synthetic trees (CPU, width 0.125, 64x128)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from mtan_ros.common import cpu
from mtan_ros.training import eval_cli, train_cli

FAST = ["--width", "0.125", "--workers", "0", "--no-progress", "--no-tensorboard", "--no-plots"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from mtan_ros.data import write_preprocessed_tree

    return write_preprocessed_tree(tmp_path_factory.mktemp("data") / "syn", n_train=8, n_val=4, size=(64, 128),
                                   seed=0)


def read_rows(path):
    with open(path, newline="") as handle:
        return [{k: (float(v) if v not in ("",) and k != "partial" else v) for k, v in row.items()}
                for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    """Four short epochs (16 steps); settings partly from YAML, partly overridden on the command line.

    lr 1e-2 instead of the paper's 1e-4: a width-0.125 network moves its logits too
    slowly at 1e-4 to learn anything in 16 steps.
    """
    out = tmp_path_factory.mktemp("runs") / "equal"
    yaml_file = out.parent / "train.yaml"
    yaml_file.write_text(f"data: {tree}\nepochs: 2\nbatch-size: 2\nlr: 1e-2\nplots: true\ntensorboard: true\n"
                         "weighting: dwa\n")
    rc = train_cli.main(["--config", str(yaml_file), "--out", str(out), "--epochs", "4", "--weighting", "equal",
                         "--width", "0.125", "--workers", "0", "--no-progress"])
    assert rc == 0
    return out


def untrained_val_miou(tree):
    from mtan_ros.data import open_dataset
    from mtan_ros.model import build_model
    from mtan_ros.training.evaluate import evaluate

    val = open_dataset(tree, split="val")
    torch.manual_seed(0)
    model = build_model("mtan", {"semantic": 7, "depth": 1}, 0.125)
    loader = torch.utils.data.DataLoader(val, batch_size=4)
    return evaluate(model, loader, {"semantic": 7, "depth": 1}, torch.device("cpu")).metrics["miou"]


def test_short_training_learns_and_writes_everything(trained, tree):
    from mtan_ros.model.checkpoint import load_checkpoint

    rows = read_rows(trained / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    for task in ("semantic", "depth"):
        assert rows[-1][f"train_loss_{task}"] < rows[0][f"train_loss_{task}"]
    assert rows[-1]["val_miou"] > untrained_val_miou(tree) + 0.02
    # lr halved once, at the midpoint of the 4 epochs
    assert [r["lr"] for r in rows] == pytest.approx([1e-2] * 2 + [5e-3] * 2)

    config = (trained / "config.yaml").read_text()
    assert "epochs: 4" in config and "weighting: equal" in config  # command line > YAML
    assert "lr: 0.01" in config and "batch_size: 2" in config  # YAML > defaults
    assert (trained / "curves.png").stat().st_size > 0
    assert any((trained / "tensorboard").iterdir())

    report = json.loads((trained / "report.json").read_text())
    assert report["last_n"]["epochs"] == [1, 2, 3, 4]
    assert report["miou"] == pytest.approx(np.mean([r["val_miou"] for r in rows]), rel=1e-5)
    best_epoch = max(rows, key=lambda r: r["val_miou"])["epoch"]
    assert report["best"]["epoch"] == best_epoch
    assert report["units"]["abs_err"].startswith("inverse depth") and report["units"]["abs_err_m"] == "metres"

    last = load_checkpoint(trained / "last.pt")
    meta = last.meta
    assert (meta.model.arch, meta.model.tasks, meta.model.width) == ("mtan", {"semantic": 7, "depth": 1}, 0.125)
    assert tuple(meta.input_size) == (64, 128) and meta.depth.kind == "inverse" and len(meta.class_names) == 7
    assert meta.metrics["miou"] == pytest.approx(rows[-1]["val_miou"], rel=1e-5)
    state = last.training_state
    assert state["epoch"] == 4 and len(state["loss_history"]["semantic"]) == 4
    assert {"optimizer", "scheduler", "rng", "weighting", "history", "best"} <= set(state)
    best = load_checkpoint(trained / "best.pt")
    assert best.training_state is None and best.meta.info["epoch"] == best_epoch


@pytest.mark.parametrize("weighting, schedule", [("dwa", "step"), ("pcgrad", "cosine")])
def test_interrupted_and_resumed_run_equals_uninterrupted(tree, tmp_path, weighting, schedule):
    """Killed after epoch 2 of 3, then resumed: the same run as an uninterrupted one. DWA needs the
    restored loss history; PCGrad (gradient level) its random order's state; the cosine schedule
    changes the rate every batch."""
    from mtan_ros.training.config import parse_train_args
    from mtan_ros.training.trainer import train

    common = ["--data", str(tree), "--batch-size", "2", "--limit-train", "4", "--limit-val", "1", "--epochs", "3",
              "--weighting", weighting, "--schedule", schedule, "--augment", "--lr", "1e-2", "--lr-step", "2", *FAST]
    assert train_cli.main([*common, "--out", str(tmp_path / "a")]) == 0

    def kill_after_epoch_2(line):
        if line.startswith("epoch   2/3"):  # printed after last.pt was written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(parse_train_args([*common, "--out", str(tmp_path / "b")]), log=kill_after_epoch_2)
    assert train_cli.main(["--out", str(tmp_path / "b"), "--resume"]) == 0  # settings from b's config.yaml
    a, b = read_rows(tmp_path / "a" / "metrics.csv"), read_rows(tmp_path / "b" / "metrics.csv")
    assert len(a) == len(b) == 3
    if weighting == "dwa":
        assert a[2]["weight_semantic"] != 1.0  # DWA active in epoch 3, from the restored loss history
    if schedule == "cosine":  # 3 epochs of 2 batches, 5 % warm-up = no batch: the rate of batch 0 of epoch e
        assert [r["lr"] for r in a] == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * 2 * e / 6))
                                                     for e in range(3)])
    for row_a, row_b in zip(a, b):
        for key in ("train_loss_semantic", "train_loss_depth", "weight_semantic", "weight_depth", "lr",
                    "val_miou", "val_abs_err"):
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-4, abs=1e-7), key
    from mtan_ros.model.checkpoint import load_checkpoint

    last_a, last_b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert last_b.training_state["weighting"]["name"] == weighting
    if weighting == "pcgrad":
        assert torch.equal(last_a.training_state["weighting"]["params"]["generator"],
                           last_b.training_state["weighting"]["params"]["generator"])
    wa, wb = last_a.state_dict, last_b.state_dict
    for name in wa:
        assert torch.allclose(wa[name].float(), wb[name].float(), rtol=1e-3, atol=1e-5), name


def test_user_errors_are_clear(tree, trained, tmp_path, capsys):
    assert train_cli.main(["--data", str(tree), "--out", str(tmp_path / "new"), "--resume", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--resume: there is no" in err and "run without --resume" in err
    assert train_cli.main(["--data", str(tree), "--out", str(trained), *FAST]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert train_cli.main(["--data", str(tree), "--out", str(trained), "--resume", "--arch", "split",
                           *FAST]) == 2
    err = capsys.readouterr().err
    assert "was trained as arch=mtan" in err and "arch=split" in err
    assert train_cli.main(["--data", str(tree), "--out", str(trained), "--resume", "--weighting", "uncert",
                           *FAST]) == 2
    assert "saved weighting is 'equal'" in capsys.readouterr().err
    assert train_cli.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert train_cli.main(["--out", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err


def test_time_budget_stops_after_validating_and_saving(tree, tmp_path):
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.trainer import train

    cfg = TrainConfig(data=str(tree), out=str(tmp_path / "budget"), epochs=50, batch_size=2, width=0.125,
                      workers=0, progress=False, tensorboard=False, plots=False, max_minutes=1e-4, limit_val=2)
    result = train(cfg)
    assert result.stopped_early and "time budget" in result.stopped_early
    assert len(result.history) == 1 and result.history[0]["partial"] is True
    assert math.isfinite(result.history[0]["val_miou"]) and result.last.is_file() and result.best.is_file()
    assert result.report["stopped_early"] == result.stopped_early


def test_eval_cli_writes_json_and_samples_matching_training_metrics(trained, tree, tmp_path):
    out_json = tmp_path / "eval.json"
    rc = eval_cli.main(["--checkpoint", str(trained / "last.pt"), "--data", str(tree), "--json", str(out_json),
                        "--samples", "2", "--samples-dir", str(tmp_path / "samples"), "--workers", "0",
                        "--no-progress"])
    assert rc == 0
    result = json.loads(out_json.read_text())
    rows = read_rows(trained / "metrics.csv")
    for key in ("miou", "pixel_accuracy", "abs_err", "rel_err", "abs_err_m", "miou_per_image"):
        assert result[key] == pytest.approx(rows[-1][f"val_{key}"], rel=1e-5), key
    assert result["images"] == 4 and len(result["per_class_iou"]) == 7
    assert set(result["per_class_iou"]) == {"flat", "construction", "object", "nature", "sky", "human", "vehicle"}
    import cv2

    pngs = sorted((tmp_path / "samples").glob("*.png"))
    assert len(pngs) == 2 and [str(p) for p in pngs] == result["samples"]
    picture = cv2.imread(str(pngs[0]))
    from mtan_ros.model.checkpoint import load_checkpoint
    from mtan_ros.evaluation.plots import mosaic_footer

    names = load_checkpoint(trained / "last.pt").meta.class_names
    footer = mosaic_footer(5 * 128 + 4 * 2, (1.0, 50.0), np.zeros((7, 3)), names).shape[0]
    assert picture.shape == (64 + 18 + 4 + footer, 5 * 128 + 4 * 2, 3)


def test_eval_cli_refuses_data_with_other_classes(trained, tmp_path, capsys):
    from mtan_ros.data import write_preprocessed_tree

    tree19 = write_preprocessed_tree(tmp_path / "syn19", n_train=1, n_val=1, size=(64, 128), num_classes=19)
    rc = eval_cli.main(["--checkpoint", str(trained / "best.pt"), "--data", str(tree19), "--samples", "0",
                        "--workers", "0", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "7 classes" in err and "19-class" in err


@pytest.mark.parametrize("flags, dtype", [("fpu avx512f avx512_bf16", torch.bfloat16), ("fpu avx2", torch.float32)])
def test_amp_on_cpu_trains_in_bf16_where_the_cpu_has_bf16_instructions(tree, tmp_path, monkeypatch, flags, dtype):
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.trainer import train

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(cpu, "CPUINFO", str(cpuinfo))
    convolutions = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: convolutions.add(output.dtype) if isinstance(module, torch.nn.Conv2d) else None)
    messages = []
    cfg = TrainConfig(data=str(tree), out=str(tmp_path / "amp"), epochs=1, batch_size=2, width=0.125, workers=0,
                      amp=True, device="cpu", limit_train=2, limit_val=1, progress=False, tensorboard=False,
                      plots=False)
    try:
        row = train(cfg, log=messages.append).history[0]
    finally:
        hook.remove()
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_miou"])
    assert convolutions == {dtype}
    assert any("--amp: this CPU reports neither" in m for m in messages) == (dtype == torch.float32)


def test_pcgrad_run_learns_and_logs_its_weighting(tree, tmp_path):
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.trainer import train

    cfg = TrainConfig(data=str(tree), out=str(tmp_path / "pcgrad"), epochs=3, batch_size=2, lr=1e-2, width=0.125,
                      weighting="pcgrad", workers=0, limit_val=2, progress=False, tensorboard=False, plots=False)
    rows = train(cfg).history
    assert len(rows) == 3
    for task in ("semantic", "depth"):
        assert rows[-1][f"train_loss_{task}"] < rows[0][f"train_loss_{task}"]
    assert rows[-1]["train_loss"] == pytest.approx(rows[-1]["train_loss_semantic"] + rows[-1]["train_loss_depth"])
    assert math.isfinite(rows[-1]["val_miou"])


def test_commands_report_errors_in_one_line(tree, trained, tmp_path, capsys):
    import shutil

    from mtan_ros.training import compare

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "last.pt").write_bytes(b"not a checkpoint")
    assert train_cli.main(["--out", str(broken), "--resume", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtan-train: error: ") and "last.pt" in err and "\n" not in err
    assert eval_cli.main(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(tree), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtan-eval: error: ") and "none.pt" in err and "\n" not in err
    assert eval_cli.main(["--checkpoint", "x", "--data", "y", "--samples", "-1"]) == 2
    assert "--samples" in capsys.readouterr().err
    assert compare.main(["--runs", "mtan gradnorm", "--data", str(tree)]) == 2
    assert "unknown runs ['mtan gradnorm']" in capsys.readouterr().err


def test_compare_trains_the_chosen_runs_into_one_table(tree, tmp_path, capsys):
    from mtan_ros.training import compare

    out = tmp_path / "cmp"
    assert compare.main(["--runs", "mtan pcgrad", "--data", str(tree), "--out", str(out), "--epochs", "1",
                         "--batch-size", "4", "--limit-train", "4", "--limit-val", "2", *FAST]) == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert list(summary["runs"]) == ["mtan pcgrad"] and (out / "mtan_pcgrad" / "last.pt").is_file()
    assert "mtan pcgrad" in capsys.readouterr().out


def test_median_frequency_class_weights_are_counted_logged_and_recorded(tree, tmp_path):
    from mtan_ros.data import open_dataset
    from mtan_ros.training.class_balance import class_frequencies, median_frequency_weights
    from mtan_ros.training.config import TrainConfig, load_yaml
    from mtan_ros.training.trainer import train

    messages = []
    cfg = TrainConfig(data=str(tree), out=str(tmp_path / "balanced"), epochs=1, batch_size=2, width=0.125, workers=0,
                      class_weights="median_frequency", limit_train=4, limit_val=1, progress=False,
                      tensorboard=False, plots=False)
    row = train(cfg, log=messages.append).history[0]
    assert math.isfinite(row["train_loss_semantic"])
    line = next(m for m in messages if m.startswith("semantic class weights (median frequency): "))
    logged = {name: float(w) for name, w in (part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", "))}
    first_four = torch.utils.data.Subset(open_dataset(tree, split="train"), range(4))  # what limit_train trains on
    expected = median_frequency_weights(class_frequencies(first_four, 7))
    assert list(logged.values()) == pytest.approx(expected.tolist(), abs=0.006)
    assert max(logged.values()) > 1.5 and min(logged.values()) < 1.0  # the synthetic classes are unbalanced
    assert load_yaml(tmp_path / "balanced" / "config.yaml")["class_weights"] == "median_frequency"


def test_step_benchmark_times_the_trainers_step_against_a_plain_loop(capsys):
    from mtan_ros.benchmarks import training_step as step_benchmark

    assert step_benchmark.main(["--width", "0.125", "--size", "64x128", "--steps", "1", "--warmup", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "x |" in line]
    names = ["plain loop fp32", "mtan-train step fp32", "plain loop bf16 autocast", "mtan-train step --amp"]
    assert [row.split(" | ")[0][2:] for row in rows] == names
    assert rows[0].endswith("| 1.00x |")
