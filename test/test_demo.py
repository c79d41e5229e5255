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

pytestmark = pytest.mark.slow


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
    assert report["finished_because"] == "all 3 frames evaluated"
    progress = json.loads((out / "progress.json").read_text())
    assert progress == {"evaluated": 3, "expected": 3, "finished": True}
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
    assert demo.main(["--out", str(tmp_path / "x"), "--size", "100", "100"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(np.zeros(10, np.uint8).tobytes())
    assert demo.main(["--out", str(tmp_path / "y"), "--checkpoint", str(tmp_path / "bad.pt"), *TINY]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_any_package_error_ends_the_demo_in_one_line(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from mtan_ros.errors import MakeBagError

    def broken_bag(*args, **kwargs):
        raise MakeBagError("cannot write the bag: disk full")

    monkeypatch.setattr(demo, "make_bag", broken_bag)
    assert demo.main(["--out", str(tmp_path / "z"), "--checkpoint", str(tiny_checkpoint), *TINY]) == 2
    err = capsys.readouterr().err
    assert "mtan-demo: error: cannot write the bag: disk full" in err and "Traceback" not in err


def test_terminating_the_demo_stops_every_node(tmp_path, tiny_checkpoint):
    """SIGTERM during the replay (a CI timeout, `kill`): the demo stops its three ROS nodes."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "demo"
    out.mkdir()
    checkpoint = shutil.copy(tiny_checkpoint, out / "given.pt")  # so every node's command line names `out`
    log = open(tmp_path / "demo.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mtan_ros.demo", "--out", str(out), "--checkpoint", checkpoint,
                             "--frames", "400", "--val-scenes", "2", "--train-scenes", "2", "--bag-size", "64", "128",
                             "--no-progress"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def node_pids():
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != proc.pid:
                try:
                    cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
                except OSError:
                    continue
                if str(out) in cmdline and "mtan_ros.ros." in cmdline:
                    pids.append(int(entry))
        return pids

    try:
        end = time.monotonic() + 120
        while len(node_pids()) < 3:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            assert time.monotonic() < end, "the replay did not start:\n" + (tmp_path / "demo.log").read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        assert "interrupted" in (tmp_path / "demo.log").read_text()
        assert node_pids() == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in node_pids():
            os.kill(pid, signal.SIGKILL)
        log.close()
