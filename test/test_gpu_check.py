"""The GPU check runs on a CPU-only machine: its table, CUDA rows skipped with their reason, its JSON."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from mtan_ros.benchmarks import gpu_check

pytestmark = pytest.mark.slow


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_quick_check_on_a_cpu_machine_skips_every_cuda_row(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| check | setting | status | result | note |" in printed
    report = json.loads(out.read_text())
    rows = report["rows"]
    checks = {row["check"] for row in rows}
    for expected in ("Predictor torch fp32", "Predictor torch fp16", "Predictor torch bf16",
                     "Predictor torch compiled fp16", "Predictor onnxruntime CUDA fp32",
                     "Predictor onnxruntime TensorRT fp16", "node end-to-end", "AMP training step", "NCCL DDP step",
                     "Predictor batched cameras"):
        assert expected in checks
    cuda_rows = [row for row in rows if row["needs_cuda"]]
    assert cuda_rows and all(row["status"] == "skipped" and "CUDA not available" in row["note"]
                             for row in cuda_rows)
    cpu_rows = [row for row in rows if not row["needs_cuda"]]
    assert cpu_rows and all(row["status"] == "ok" and row["values"]["ms_per_batch_p50"] > 0 for row in cpu_rows)
    assert "torch" in report["machine"] and "skipped" in printed


def test_training_steps_run_plain_and_under_ddp_on_the_cpu():
    """The AMP and DDP rows' code, on the CPU (bf16 autocast, gloo), since the suite has no GPU."""
    check = gpu_check.GpuCheck(argparse.Namespace(quick=True, budget_s=60.0, checkpoint=None))
    for distributed in (False, True):
        row = check.train_step((32, 64), distributed, torch.device("cpu"))
        assert row.status == "ok" and math.isfinite(row.values["loss"]) and row.values["ms_per_step"] > 0
    assert not torch.distributed.is_initialized()


def test_node_benchmark_json_becomes_rows():
    rows = gpu_check.node_rows_from_json([
        {"camera": "1024x2048", "output_resolution": "camera", "end_to_end_ms": 41.5, "frames": 15},
        {"camera": "1024x2048", "output_resolution": "model", "end_to_end_ms": 20.25, "frames": 15},
    ])
    assert [row.setting for row in rows] == ["1024x2048 output camera", "1024x2048 output model"]
    assert "end_to_end_ms 41.5" in rows[0].result and rows[1].status == "ok"
    assert len(gpu_check.node_rows_from_json({"rows": [{"camera": "1024x2048"}]})) == 1
    assert gpu_check.node_rows_from_json({"rows": []})[0].status == "failed"


def test_the_batched_row_compares_images_per_second_at_batch_1_and_n(monkeypatch):
    """The batched row's arithmetic, from two timed rows (the CPU stands in for CUDA here)."""
    check = gpu_check.GpuCheck(argparse.Namespace(quick=True, budget_s=60.0, checkpoint=None))
    timed = [gpu_check.Row("", "64x128 batch 1", values={"ms_per_batch_p50": 4.0, "images_per_s": 250.0},
                           note="ran as torch fp16"),
             gpu_check.Row("", "64x128 batch 2", values={"ms_per_batch_p50": 5.0, "images_per_s": 400.0})]
    monkeypatch.setattr(check, "_time_predictor", lambda size, batches, device, options: timed)
    row = check._batched((64, 128), 2)
    assert row.result == ("batch 2: 5.00 ms, 400 img/s; batch 1: 4.00 ms, 250 img/s; 1.60x the images per second")
    assert row.values["speedup"] == 1.6 and row.note == "ran as torch fp16"
