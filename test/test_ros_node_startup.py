"""Start-up refusals of the perception node: a clear one-line error and a non-zero exit, no traceback."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from ros_helpers import NodeProcess, RosSession  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_node_startup") as session:
        yield session


def run_node(ros, *params: str) -> tuple[int, str]:
    args = ["--ros-args"]
    for param in params:
        args += ["-p", param]
    with NodeProcess(ros, args) as proc:
        code = proc.wait_exit(timeout=120)
        return code, proc.output()


def assert_refused(code: int, output: str, *words: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], output


def test_missing_checkpoint(ros, tmp_path):
    code, output = run_node(ros, f"model_path:={tmp_path / 'nowhere.pt'}")
    assert_refused(code, output, "nowhere.pt", "not found")


def test_invalid_checkpoint(ros, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint" * 100)
    code, output = run_node(ros, f"model_path:={bad}")
    assert_refused(code, output, "garbage.pt", "cannot load model_path")


def test_empty_model_path_says_how_to_set_it(ros):
    code, output = run_node(ros)
    assert_refused(code, output, "model_path is empty", "model_path:=")


def test_unknown_device(ros, tiny_checkpoint):
    code, output = run_node(ros, f"model_path:={tiny_checkpoint}", "device:=tpu")
    assert_refused(code, output, "device='tpu'")


@pytest.mark.parametrize("param,words", [("overlay_alpha:=2.0", "overlay_alpha is outside its range"),
                                         ("points_stride:=many", "points_stride must be an integer")])
def test_bad_parameter_values(ros, tiny_checkpoint, param, words):
    code, output = run_node(ros, f"model_path:={tiny_checkpoint}", param)
    assert_refused(code, output, words)
