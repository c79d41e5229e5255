"""mtan-demo end to end at a tiny size: data, a few seconds of training, a bag, the ROS replay."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("rclpy")

from mtan_ros import demo  # noqa: E402
from mtan_ros.bags.reader import read_all  # noqa: E402

TINY = ["--train-minutes", "0.05", "--epochs", "1", "--frames", "3", "--train-scenes", "4", "--val-scenes", "3",
        "--size", "64", "128", "--bag-size", "64", "128", "--batch-size", "4", "--no-progress",
        "--replay-timeout", "180"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("demo") / "demo"
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = demo.main(["--out", str(out), *TINY])
    return out, code, buffer.getvalue()


def test_demo_writes_everything_and_a_sane_report(demo_run):
    import cv2

    out, code, printed = demo_run
    assert code == 0, printed
    for path in ("checkpoint/best.pt", "checkpoint/last.pt", "val_bag/metadata.yaml", "report.json", "mosaic.png",
                 "logs/perception node.log", "logs/evaluator.log", "logs/bag player.log"):
        assert (out / path).exists(), path
    report = json.loads((out / "report.json").read_text())
    for key in ("miou", "pixel_accuracy", "abs_err_m", "rel_err", "latency_ms_p50", "latency_ms_p95", "fps",
                "frames_in", "frames_out", "dropped"):
        assert key in report, key
    assert (report["frames_in"], report["frames_out"], report["dropped"], report["frames_evaluated"]) == (3, 3, 0, 3)
    assert 0.0 <= report["miou"] <= 1.0 and 0.0 <= report["pixel_accuracy"] <= 1.0
    assert 0.0 < report["latency_ms_p50"] <= report["latency_ms_p95"] < 60_000
    assert report["fps"] > 0 and 0.0 <= report["depth_missing_fraction"] <= 1.0
    assert report["abs_err_m"] is None or report["abs_err_m"] >= 0  # None: every estimate beyond max_depth
    assert len(read_all(out / "val_bag")) == 12
    mosaic = cv2.imread(str(out / "mosaic.png"))
    assert mosaic is not None and mosaic.shape[1] >= 5 * 128 and mosaic.shape[0] >= 3 * 64
    assert "replay evaluation" in printed
    assert printed.rstrip().splitlines()[-1].strip().startswith("ros2 launch mtan_ros replay.launch.py bag:=")
    assert "rviz:=true" in printed


def test_a_second_run_reuses_the_checkpoint(demo_run):
    out, code, _ = demo_run
    assert code == 0
    args = demo.build_parser().parse_args(["--out", str(out), *TINY])
    state = json.loads((out / "demo.json").read_text())
    data = out / "data"
    checkpoint, how = demo.prepare_checkpoint(out, args, data, "npy")
    assert (checkpoint, how) == (out / "checkpoint" / "best.pt", "reused")
    assert state["last_run"]["frames"] == 3
    other = argparse.Namespace(**{**vars(args), "width": 0.125})  # other settings: the old model does not fit
    assert demo._fingerprint(other, data, "npy") != state["training"]


def test_given_checkpoint_and_bad_options(tmp_path, tiny_checkpoint, capsys):
    args = demo.build_parser().parse_args(["--out", str(tmp_path), "--checkpoint", str(tiny_checkpoint)])
    assert demo.prepare_checkpoint(tmp_path, args, tmp_path, "npy") == (tiny_checkpoint, "given")
    assert demo.main(["--out", str(tmp_path / "x"), "--size", "100", "100"]) == 1
    assert "multiples of 32" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(np.zeros(10, np.uint8).tobytes())
    assert demo.main(["--out", str(tmp_path / "y"), "--checkpoint", str(tmp_path / "bad.pt"), *TINY]) == 1
    assert "--checkpoint" in capsys.readouterr().err
