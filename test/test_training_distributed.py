"""The same mtan-train command under torchrun: 2 CPU processes (gloo) give single-process metrics."""
import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def torchrun() -> str | None:
    candidate = Path(sys.executable).with_name("torchrun")
    return str(candidate) if candidate.exists() else shutil.which("torchrun")


@pytest.mark.skipif(not torch.distributed.is_available() or torchrun() is None,
                    reason="torch.distributed / torchrun not available in this PyTorch")
def test_two_process_gloo_run_reduces_metrics_exactly(tmp_path):
    from mtan_ros.data import open_dataset, write_preprocessed_tree
    from mtan_ros.model.checkpoint import build_model_from_checkpoint, load_checkpoint
    from mtan_ros.training.evaluate import evaluate

    # Odd split sizes: the two processes get unequal validation shards.
    tree = write_preprocessed_tree(tmp_path / "syn", n_train=5, n_val=3, size=(64, 128), seed=3)
    out = tmp_path / "ddp"
    script = Path(sys.executable).with_name("mtan-train")
    command = [torchrun(), "--standalone", "--nproc_per_node=2", str(script) if script.exists() else "-m",
               *([] if script.exists() else ["mtan_ros.training.train_cli"]),
               "--data", str(tree), "--out", str(out), "--epochs", "2", "--batch-size", "2", "--width", "0.125",
               "--weighting", "uncert", "--lr", "1e-2", "--device", "cpu", "--workers", "0", "--no-progress",
               "--no-tensorboard", "--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Only rank 0 prints the epoch summaries.
    assert proc.stdout.count("epoch   2/2") == 1, proc.stdout

    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    last = rows[-1]
    assert float(last["logvar_semantic"]) != -0.5  # learnt, with gradients averaged over processes

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.training_state["world_size"] == 2
    model = build_model_from_checkpoint(ckpt)
    val = open_dataset(tree, split="val")
    single = evaluate(model, torch.utils.data.DataLoader(val, batch_size=2), dict(ckpt.meta.model.tasks),
                      torch.device("cpu"), depth_encoding=val.depth_encoding)
    assert single.images == 3
    for key in ("miou", "pixel_accuracy", "abs_err", "rel_err", "abs_err_m", "rel_err_m", "miou_per_image",
                "pixel_accuracy_per_image"):
        assert ckpt.meta.metrics[key] == pytest.approx(single.metrics[key], rel=1e-6), key
        assert float(last[f"val_{key}"]) == pytest.approx(single.metrics[key], rel=1e-6), key


_TEARDOWN_SCRIPT = """
import os, sys, torch
from mtan_ros.training.distributed import setup_distributed

def threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as handle:
            names.append(handle.read().strip())
    return names

ctx = setup_distributed("cpu")
net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
net(torch.rand(2, 4)).sum().backward()
ctx.all_reduce_sum(torch.ones(3))
before = sum("gloo" in name for name in threads())
del net
ctx.close()
print(f"rank {ctx.rank}: gloo threads {before} -> {sum('gloo' in name for name in threads())}", flush=True)
"""


@pytest.mark.skipif(not torch.distributed.is_available() or torchrun() is None,
                    reason="torch.distributed / torchrun not available in this PyTorch")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names are read from Linux's /proc")
def test_closing_the_context_joins_gloo_threads_before_interpreter_shutdown(tmp_path):
    """A gloo worker alive at shutdown can abort the process while it releases a finished collective."""
    script = tmp_path / "teardown.py"
    script.write_text(_TEARDOWN_SCRIPT)
    proc = subprocess.run([torchrun(), "--standalone", "--nproc_per_node=2", str(script)], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Both ranks write to one pipe: their lines can interleave ("rank 0: ... -> 0rank 1: ..."), so match, not split.
    found = sorted(re.findall(r"rank (\d+): gloo threads (\d+) -> (\d+)", proc.stdout))
    assert [rank for rank, _, _ in found] == ["0", "1"], proc.stdout
    for rank, before, after in found:
        assert int(before) >= 2 and int(after) == 0, (rank, before, after)  # transport loop and workers, all joined
