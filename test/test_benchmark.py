"""The benchmark runs end to end on a tiny model and says when its weights are random."""
from __future__ import annotations

import pytest

from mtan_ros.benchmarks import inference as benchmark

pytestmark = pytest.mark.slow


def test_benchmark_reports_every_configuration_and_the_prepost_table(capsys):
    code = benchmark.main(["--size", "64x128", "--width", "0.125", "--images", "2", "--iters", "2", "--warmup", "0",
                           "--camera", "128x256", "--backends", "torch", "--precisions", "fp32,bf16,auto",
                           "--variants", "masks"])
    assert code == 0
    out = capsys.readouterr().out
    assert benchmark.RANDOM_WEIGHTS_NOTE in out
    assert "| torch fp32 | torch fp32 |" in out and "| torch bf16 | torch bf16 |" in out
    rows = {line.split(" | ")[0][2:]: line for line in out.splitlines() if line.startswith("| torch")}
    # fp32 eager against itself, and the mask form of pooling (bitwise equal outputs): every label equal, no depth
    # difference, within tolerance.
    for name in ("torch fp32", "torch fp32 masks"):
        assert "| 100.00% |" in rows[name] and rows[name].split(" | ")[-4:] == ["0%", "0", "0", "yes |"]
    assert "| 1.00x |" in rows["torch fp32"]
    assert rows["torch bf16"].endswith("| yes |") or "| NOT acceptable: " in rows["torch bf16"]
    assert "| acceptable |" in out and "| worst m, 20-100 m |" in out
    assert "torch auto: " in out  # what auto chose and why
    assert "| OpenCV/numpy (previous) |" in out and "| torch path |" in out


def test_unknown_backend_is_one_line_error(capsys):
    assert benchmark.main(["--backends", "tvm"]) == 2
    assert "--backends tvm" in capsys.readouterr().err
