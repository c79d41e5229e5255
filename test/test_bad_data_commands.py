"""Bad training data read by DataLoader worker processes: the commands end as with --workers 0.

Found by running `mtan-train` with its default `--workers 2` on a copy with a NaN depth map, a
truncated .npy and a channels-first image: a RuntimeError traceback and exit 1, where `--workers 0`
printed one line and exited 2.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mtan_ros.data import DataError, open_dataset

pytestmark = pytest.mark.slow

SIZE = (32, 64)
BAD_INDEX = 2  # item 0 is read by the training process itself (open_data looks at it); 2 only by a worker


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from mtan_ros.data import write_preprocessed_tree

    return write_preprocessed_tree(tmp_path_factory.mktemp("data") / "syn", n_train=3, n_val=3, size=SIZE, seed=0)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "nan depth": ("depth", lambda p: np.save(p, np.full((*SIZE, 1), np.nan, np.float32)), "NaN"),
    "truncated npy": ("depth", _truncate, "cannot read depth .npy"),
    "channels-first image": ("image", lambda p: np.save(p, np.zeros((3, *SIZE), np.float32)), "image has shape"),
}


def broken_copy(source, folder, case, split):
    tree = shutil.copytree(source, folder / case.replace(" ", "_"))
    sub, spoil, words = BAD_FILES[case]
    path = tree / split / sub / f"{BAD_INDEX}.npy"
    spoil(path)
    with pytest.raises(DataError) as info:  # what the command prints without workers
        open_dataset(tree, split)[BAD_INDEX]
    assert str(path) in str(info.value) and words in str(info.value)
    return tree, path, str(info.value)


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_one_line(done, prog, message):
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"{prog}: error: {message}"], done.stderr


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_train_with_workers_reports_a_bad_file_in_one_line(source, tmp_path, case):
    tree, path, message = broken_copy(source, tmp_path, case, "train")
    done = run("mtan_ros.training.train_cli", "--data", tree, "--out", tmp_path / "run", "--workers", "2",
               "--epochs", "1", "--batch-size", "1", "--width", "0.125", "--no-progress", "--no-tensorboard",
               "--no-plots")
    assert_one_line(done, "mtan-train", message)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_eval_with_workers_reports_a_bad_file_in_one_line(source, tmp_path, tiny_checkpoint, case):
    tree, path, message = broken_copy(source, tmp_path, case, "val")
    done = run("mtan_ros.training.eval_cli", "--checkpoint", tiny_checkpoint, "--data", tree, "--workers", "2",
               "--batch-size", "1", "--samples", "0", "--no-progress")
    assert_one_line(done, "mtan-eval", message)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_make_bag_reports_a_bad_file_in_one_line(source, tmp_path, case):
    tree, path, message = broken_copy(source, tmp_path, case, "val")
    done = run("mtan_ros.bags.make_bag", "--data", tree, "--out", tmp_path / "bag", "--no-progress")
    assert_one_line(done, "mtan-make-bag", message)


def test_demo_reports_a_bad_training_file_in_one_line(source, tmp_path, tiny_checkpoint):
    """The demo trains with --data's train split and writes its val split as a bag."""
    tree, path, message = broken_copy(source, tmp_path, "truncated npy", "train")
    done = run("mtan_ros.demo", "--data", tree, "--out", tmp_path / "demo", "--epochs", "1", "--batch-size", "1",
               "--width", "0.125", "--no-progress")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"mtan-demo: error: {message}"], done.stderr
    tree, path, message = broken_copy(source, tmp_path / "v", "channels-first image", "val")
    done = run("mtan_ros.demo", "--data", tree, "--out", tmp_path / "demo2", "--checkpoint", tiny_checkpoint,
               "--no-progress")
    assert_one_line(done, "mtan-demo", message)
