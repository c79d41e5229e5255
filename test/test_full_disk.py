"""A full disk while writing: one line naming the file and the space left, the previous file intact.

Found as: `mtan-train` saving a checkpoint onto a full disk ended in a traceback whose last line was
"RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 340032 vs 339928"; nothing
said "no space left on device". The tests write onto a real, small tmpfs filled up to a few hundred KiB.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mtan_ros.common.files import format_bytes, free_bytes, write_text
from mtan_ros.errors import StorageError
from mtan_ros.model.checkpoint import load_checkpoint, save_checkpoint

LEFT_FREE = 256 * 1024  # what the filled disk still takes: less than any checkpoint


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at tmp_path/disk (root only; skipped where mounting is not permitted)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command to make a small file system")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder, leave=LEFT_FREE):
    """Take all but `leave` bytes of the file system holding `folder`."""
    with open(folder / "filler", "wb") as handle:
        handle.write(b"\0" * (free_bytes(folder) - leave))
        handle.flush()
        os.fsync(handle.fileno())
    assert free_bytes(folder) <= leave


def assert_full_disk_line(line, path, folder):
    assert "\n" not in line.strip()
    assert f"cannot write '{path}': no space left on device" in line, line
    assert f"{format_bytes(free_bytes(folder))} free on that file system" in line, line
    assert "free some space there or choose another folder" in line, line
    assert "Traceback" not in line and "inline_container" not in line


def temporaries(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_checkpoint_save_on_a_full_disk(small_disk, tiny_checkpoint):
    target = small_disk / "last.pt"
    shutil.copy(tiny_checkpoint, target)
    before = target.read_bytes()
    ckpt = load_checkpoint(target)
    fill(small_disk)
    with pytest.raises(StorageError) as info:
        save_checkpoint(target, ckpt.state_dict, ckpt.meta)
    assert isinstance(info.value, OSError)  # what callers caught before
    assert_full_disk_line(str(info.value), target, small_disk)
    assert "(the previous 'last.pt' is unchanged)" in str(info.value)
    assert target.read_bytes() == before
    assert load_checkpoint(target).meta == ckpt.meta
    assert temporaries(small_disk) == []
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "last.pt"]


def test_text_file_on_a_full_disk_keeps_the_previous_one(small_disk):
    target = small_disk / "report.json"
    write_text(target, "{}\n")
    fill(small_disk)
    with pytest.raises(StorageError) as info:
        write_text(target, "x" * (2 * LEFT_FREE))
    assert_full_disk_line(str(info.value), target, small_disk)
    assert target.read_text() == "{}\n" and temporaries(small_disk) == []


def _rows():
    return [{"epoch": e, "train_loss_semantic": 2.0 / e, "val_miou": 0.1 * e} for e in (1, 2)]


def _config():
    from mtan_ros.training.config import TrainConfig

    return TrainConfig(data="data", out="out")


WRITERS = {  # every file mtan-train, mtan-eval and the evaluator write whole: name -> (write small, write big)
    "report.json": ("mtan_ros.evaluation.report", lambda m, p, big: m.write_json({"x": "y" * big}, p)),
    "metrics.csv": ("mtan_ros.training.logs", lambda m, p, big: m.write_csv(_rows() * (1 + big // 40), p)),
    "config.yaml": ("mtan_ros.training.config",
                    lambda m, p, big: m.save_config(_config() if not big else
                                                    _config().__class__(data="d" * big, out="out"), p)),
    "curves.png": ("mtan_ros.evaluation.plots", lambda m, p, big: m.plot_curves(_rows(), p, title="t" * (big // 50))),
    "sample.png": ("mtan_ros.evaluation.plots", lambda m, p, big: m.write_png(p, _noise(64 + big // 100))),
}


def _noise(side):
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WRITERS))
def test_package_writers_on_a_full_disk(small_disk, name):
    """Each of the package's write-to-temp-then-rename files: one-line StorageError, old file kept, no temp."""
    import importlib

    module, write = WRITERS[name]
    module = importlib.import_module(module)
    target = small_disk / name
    write(module, target, 0)
    before = target.read_bytes()
    fill(small_disk, leave=16 * 1024)
    with pytest.raises(StorageError) as info:
        write(module, target, 4 * LEFT_FREE)
    assert_full_disk_line(str(info.value), target, small_disk)
    assert target.read_bytes() == before and temporaries(small_disk) == []


@pytest.mark.slow
def test_train_saving_onto_a_full_disk_ends_in_one_line(small_disk, tmp_path):
    """mtan-train --resume onto a disk filled after epoch 1: exit 2, one line, epoch 1's last.pt intact."""
    from mtan_ros.data import write_preprocessed_tree

    tree = write_preprocessed_tree(tmp_path / "syn", n_train=2, n_val=1, size=(32, 64), seed=0)
    out = small_disk / "run"
    common = ["--workers", "0", "--batch-size", "2", "--width", "0.125", "--no-progress", "--no-tensorboard",
              "--no-plots"]

    def train(*args):
        return subprocess.run([sys.executable, "-m", "mtan_ros.training.train_cli", *map(str, args), *common],
                              capture_output=True, text=True, timeout=600)

    first = train("--data", tree, "--out", out, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    before = (out / "last.pt").read_bytes()
    fill(small_disk)
    done = train("--out", out, "--resume", "--epochs", "2")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtan-train: error: "), done.stderr
    written = lines[0].split("'")[1]  # best.pt or last.pt, whichever epoch 2 wrote first
    assert written in (str(out / "best.pt"), str(out / "last.pt")), lines[0]
    assert_full_disk_line(lines[0], written, small_disk)
    assert (out / "last.pt").read_bytes() == before
    assert load_checkpoint(out / "last.pt").training_state["epoch"] == 1
    assert temporaries(small_disk) == []


def test_the_file_helpers_import_neither_torch_nor_ros():
    """mtan_ros.common is for every layer, the ROS node's light paths included."""
    code = "import sys, mtan_ros.common.files; print(sorted(m for m in ('torch', 'rclpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
