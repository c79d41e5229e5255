"""The benchmark runs end to end on a tiny model and says when its weights are random."""
from __future__ import annotations

import pytest

from mtan_ros.benchmarks import inference as benchmark

pytestmark = pytest.mark.slow


def test_benchmark_reports_every_configuration_and_the_prepost_table(capsys):
    code = benchmark.main(["--size", "64x128", "--width", "0.125", "--images", "2", "--iters", "2", "--warmup", "0",
                           "--camera", "128x256", "--backends", "torch", "--precisions", "fp32,bf16"])
    assert code == 0
    out = capsys.readouterr().out
    assert benchmark.RANDOM_WEIGHTS_NOTE in out
    assert "| torch fp32 | torch fp32 |" in out and "| torch bf16 | torch bf16 |" in out
    assert "| OpenCV/numpy (previous) |" in out and "| torch path |" in out


def test_unknown_backend_is_one_line_error(capsys):
    assert benchmark.main(["--backends", "tvm"]) == 2
    assert "--backends tvm" in capsys.readouterr().err
