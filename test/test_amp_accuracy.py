"""The --amp accuracy benchmark: its noise rule, and one real (tiny) run end to end."""
from __future__ import annotations

import json

import pytest

from mtan_ros.benchmarks import amp_accuracy


def _run(seed, amp, miou, abs_err):
    return {"seed": seed, "amp": amp, "seconds": 10.0 if amp else 20.0, "val_miou": miou,
            "val_pixel_accuracy": 0.8, "val_abs_err_m": abs_err, "val_rel_err_m": 0.3}


def test_a_gap_within_twice_the_seed_spread_is_noise_and_a_larger_one_is_not():
    runs = [_run(0, False, 0.50, 5.0), _run(1, False, 0.52, 5.2), _run(2, False, 0.54, 5.4),
            _run(0, True, 0.53, 9.0), _run(1, True, 0.55, 9.1), _run(2, True, 0.57, 9.2)]
    rows = {row["metric"]: row for row in amp_accuracy.summarise(runs)}
    miou = rows["mIoU"]
    assert miou["fp32_mean"] == pytest.approx(0.52) and miou["amp_mean"] == pytest.approx(0.55)
    assert miou["fp32_sd"] == pytest.approx(0.02) and miou["delta"] == pytest.approx(0.03)
    assert miou["within_noise"]  # 0.03 <= 2 x 0.02
    depth = rows["depth abs err m"]
    assert depth["delta"] == pytest.approx(3.9) and not depth["within_noise"]  # 3.9 > 2 x 0.2
    table = amp_accuracy.format_table(list(rows.values()), runs)
    assert "| mIoU | 0.5200 ± 0.0200 | 0.5500 ± 0.0200 | +0.0300 | yes |" in table
    assert "| NO |" in table and "fp32 20 s, --amp 10 s (2.00x)" in table


def test_one_seed_is_refused_because_it_measures_no_noise(capsys):
    assert amp_accuracy.main(["--seeds", "0"]) == 2
    assert "at least two seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_trains_both_ways_for_each_seed_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "amp.json"
    assert amp_accuracy.main(["--seeds", "0,1", "--epochs", "1", "--train-scenes", "8", "--val-scenes", "4",
                              "--size", "32x64", "--batch-size", "4", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| metric | fp32 mean ± sd | --amp mean ± sd |" in text
    document = json.loads(out.read_text())
    assert document["benchmark"] == "amp_accuracy"
    assert [(run["seed"], run["amp"]) for run in document["rows"]] == [(0, False), (0, True), (1, False), (1, True)]
    assert all(0.0 <= run["val_miou"] <= 1.0 and run["val_abs_err_m"] >= 0.0 for run in document["rows"])
    metrics = {row["metric"] for row in document["summary"]}
    assert metrics == {"mIoU", "pixel acc", "depth abs err m", "depth rel err"}
